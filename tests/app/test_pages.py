"""Every page through the router (AppTest on app/main.py), against a real registry in a fresh GROVE_HOME with runs
submitted through engine.runs.submit. Assertions are about what a user sees. Every AppTest is made with
default_timeout=UI_TIMEOUT (tests/app/conftest.py), a limit that holds on a busy machine; that no page imports Olive,
torch or transformers is checked directly (test_pages_never_import_olive_torch_or_transformers)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from engine.runs.registry import Registry

from .conftest import LAB_SAMPLE, MAIN, REPO, UI_TIMEOUT, add_run

PAGES = {
    "home": "../pages/home.py",
    "model_data": "../pages/model_data.py",
    "workflow": "../pages/workflow.py",
    "runs": "../pages/runs.py",
}


def open_page(name: str, at: AppTest | None = None, **query: str) -> AppTest:
    """Run the router (once, for a new AppTest), then switch to the page."""
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT) if at is None else at
    for k, v in query.items():
        at.query_params[k] = v
    fresh = not getattr(at, "_router_ran", False)
    if fresh:
        at.run()
        at._router_ran = True
    if not fresh or name != "home":
        at.switch_page(PAGES[name]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def by_label(widgets, prefix: str):
    for w in widgets:
        if w.label.startswith(prefix):
            return w
    raise AssertionError(f"no widget labelled {prefix!r}: {[w.label for w in widgets]}")


def shown(markdown: str) -> str:
    """What a reader sees of a Markdown source: backslash escapes (user and model text is shown literally through
    engine.chat.text.markdown_literal) render as the characters they escape."""
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'^])", r"\1", markdown)


def text(at: AppTest) -> str:
    """Everything written on the page as a reader sees it (markdown, captions, alerts, code, metrics)."""
    parts = []
    for kind in ("title", "subheader", "markdown", "caption", "error", "warning", "info", "success", "code"):
        parts += [shown(str(e.value)) for e in getattr(at, kind)]
    parts += [f"{m.label}: {m.value}" for m in at.metric]
    return "\n".join(parts)


def frames(at: AppTest) -> str:
    return "\n".join(df.value.to_csv() for df in at.dataframe)


# -- Home -------------------------------------------------------------------------------------------------------
def test_home_without_runs_or_worker(ui_home):
    at = open_page("home")
    t = text(at)
    assert "Grove" in at.title[0].value
    assert "No worker is running" in t
    assert "No runs here yet." in t
    assert "Nothing is running." in t
    assert any(b.label == "Launch the demo workflow" for b in at.button)


def test_home_shows_running_queued_slots_and_recent_runs(ui_home):
    add_run(ui_home, "travel finetune A", "running")
    add_run(ui_home, "travel finetune B", "queued")
    add_run(ui_home, "old run C", "succeeded")
    Registry().worker_beat("w-test", {"cpu": 2, "cpu_used": 1, "per_gpu": 1, "gpus": [], "gpu_used": {}})
    at = open_page("home")
    t = text(at)
    assert "Running: 1" in t and "Queued: 1" in t and "Succeeded: 1" in t
    assert "CPU slots in use: 1 / 2" in t
    assert "No worker is running" not in t
    f = frames(at)
    assert "travel finetune A" in f and "travel finetune B" in f and "old run C" in f


def test_home_demo_button_queues_the_demo_run_and_opens_it(ui_home):
    at = open_page("home")
    by_label(at.button, "Launch the demo workflow").click().run()
    assert not at.exception
    runs = Registry().list_runs()
    assert [r["name"] for r in runs] == ["demo: travel LoRA -> int4 ONNX"]
    assert "Queued the demo run" in text(at)  # now on Runs, with the run open
    assert "demo: travel LoRA -> int4 ONNX" in [s.value for s in at.subheader]


# -- Model & data ----------------------------------------------------------------------------------------------
def test_model_card_and_trust_remote_code_warning(ui_home):
    at = open_page("model_data")
    t = text(at)
    assert "Architecture: Phi3ForCausalLM" in t
    assert "Parameters: 4.1 M" in t  # estimated from config.json: 4,065,536
    assert "dtype: float32" in t
    by_label(at.checkbox, "Trust remote code").check().run()
    assert any("trust_remote_code runs Python code" in shown(w.value) for w in at.warning)
    assert at.session_state["draft"]["model"]["trust_remote_code"] is True


def test_model_folder_outside_allowed_roots_is_refused(ui_home):
    at = open_page("model_data")
    by_label(at.selectbox, "Model folder").set_value("Other folder…").run()
    by_label(at.text_input, "Folder path").input("/etc").run()
    assert any("outside the allowed roots" in shown(e.value) for e in at.error)
    assert at.session_state["draft"]["model"]["name"] == str(ui_home / "demo" / "model")


def test_dataset_preview_template_presets_tokens_and_split(ui_home):
    if not LAB_SAMPLE.is_file():
        pytest.skip("../shared/data/travel_qa.jsonl is not here")
    at = open_page("model_data")
    by_label(at.selectbox, "Dataset file").set_value(str(LAB_SAMPLE)).run()
    assert not at.exception
    t = text(at)
    n = sum(1 for ln in LAB_SAMPLE.read_text().splitlines() if ln.strip())
    assert f"{n} rows · columns: prompt, response" in t
    assert "What's a must-see in Paris?" in frames(at)  # paged preview, page 1
    code = at.code[0].value
    assert code.startswith("<|user|>\nWhat's a must-see in Paris?<|end|>\n<|assistant|>\n")
    n_eval = round(n * 0.1)
    assert f"Train rows: {n - n_eval}" in t and f"Eval rows: {n_eval}" in t
    assert "Duplicates train↔eval: 11" in t  # the lab sample repeats some prompts
    assert any("also appear in train" in shown(w.value) for w in at.warning)
    assert at.get("plotly_chart"), "tokens-per-example histogram"
    # another preset, then max_seq_len low enough to cut rows
    by_label(at.selectbox, "Template preset").set_value("ChatML").run()
    assert at.code[0].value.startswith("<|im_start|>user\nWhat's a must-see in Paris?<|im_end|>")
    by_label(at.number_input, "max_seq_len").set_value(16).run()
    cut = next(m for m in at.metric if m.label == "Cut at 16")
    assert int(cut.value) > 200
    # the tokenizer's own chat template (Phi-3 style, from chat_template.jinja)
    by_label(at.selectbox, "Template preset").set_value("Tokenizer's chat template").run()
    # the chat template trains on the assistant turn alone: the preview marks it, the question is context only
    marked = next(m.value for m in at.markdown if m.value.startswith("<pre"))
    assert marked.startswith('<pre style="white-space:pre-wrap"><span style="color:#888">&lt;|user|&gt;\nWhat&#x27;s '
                             "a must-see in Paris?&lt;|end|&gt;")
    assert '<mark style="background:#c8f7c5">' in marked
    assert at.session_state["draft"]["dataset"]["chat_template"] is True
    # page 2 of the preview
    by_label(at.number_input, "Page").set_value(2).run()
    rows = [json.loads(ln) for ln in LAB_SAMPLE.read_text().splitlines() if ln.strip()]
    page2 = at.dataframe[0].value
    assert list(page2["prompt"]) == [r["prompt"] for r in rows[20:40]]


def test_free_template_and_column_mapping(ui_home, tmp_path):
    data = ui_home / "datasets" / "qa.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) for i in range(30)))
    at = open_page("model_data")
    by_label(at.selectbox, "Dataset file").set_value(str(data)).run()
    assert by_label(at.selectbox, "Column for {prompt}").value == "question"  # guessed
    assert at.code[0].value == "<|user|>\nq0?<|end|>\n<|assistant|>\na0.<|end|>"
    by_label(at.selectbox, "Template preset").set_value("Free text template").run()
    by_label(at.text_area, "Template").input("Q: {question}\nA: {answer}").run()
    assert at.code[0].value == "Q: q0?\nA: a0."
    by_label(at.text_area, "Template").input("Q: {question} {missing}").run()
    assert any("missing" in shown(e.value) for e in at.error)


def test_a_conversation_dataset_is_offered_its_format_and_shows_the_trained_turns(ui_home):
    import html
    import shutil

    data = ui_home / "chat" / "messages.jsonl"
    data.parent.mkdir()
    shutil.copyfile(REPO / "tests" / "inputs" / "datasets" / "messages.jsonl", data)
    conv = json.loads(data.read_text().splitlines()[0])["messages"]
    at = open_page("model_data")
    assert "A relative path typed here is read from" in text(at)
    by_label(at.selectbox, "Dataset file").set_value(str(data)).run(timeout=120)
    assert any("OpenAI/TRL 'messages' format" in shown(i.value) for i in at.info)
    by_label(at.button, "Use format: messages").click().run(timeout=120)
    assert not at.exception
    ds = at.session_state["draft"]["dataset"]
    assert ds["format"] == "messages" and ds["chat_template"] is True and not ds.get("text_template")
    assert "Only the assistant turns are trained" in text(at)
    marked = next(m.value for m in at.markdown if "<mark" in m.value)
    trained = "".join(re.findall(r"<mark[^>]*>(.*?)</mark>", marked, re.S))
    assert html.escape(conv[2]["content"]) in trained and html.escape(conv[4]["content"]) in trained
    assert html.escape(conv[1]["content"]) not in trained and html.escape(conv[1]["content"]) in marked
    assert "Value error" not in text(at)


def test_dataset_upload_is_saved_under_grove_home(ui_home):
    at = open_page("model_data")
    at.radio[1].set_value("Upload a file").run()
    rows = "\n".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}"}) for i in range(20))
    uploader = at.get("file_uploader")[0]
    assert "200 MB" in uploader.label
    uploader.upload("my data.jsonl", rows.encode(), "application/json").run()
    assert not at.exception
    path = at.session_state["draft"]["dataset"]["path"]
    assert path.startswith(str(ui_home / "uploads")) and path.endswith("my_data.jsonl")
    assert at.code[0].value == "<|user|>\np0<|end|>\n<|assistant|>\nr0<|end|>"


def test_memory_estimate_per_planned_pass(ui_home):
    at = open_page("workflow")
    by_label(at.button, "Apply recipe").click().run()
    open_page("model_data", at)
    t = text(at)
    assert "Memory estimate per planned pass" in t
    f = frames(at)
    assert "lora" in f and "modelbuilder" in f and "CPU slot (RAM)" in f


# -- Workflow --------------------------------------------------------------------------------------------------
def _with_dataset(at: AppTest, home) -> AppTest:
    open_page("model_data", at)
    by_label(at.selectbox, "Dataset file").set_value(str(home / "demo" / "travel_sample.jsonl")).run()
    return open_page("workflow", at)


def test_workflow_recipe_preflight_and_launch(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    md = "\n".join(m.value for m in at.markdown)
    assert "**1. LoRA**" in md and "**2. ModelBuilder**" in md and "**3. ExtractAdapters**" in md
    assert ":green-badge[cpu ✓]" in md
    t = text(at)
    assert "Ready to launch" in t or "ready to launch" in t
    assert "no worker is running" in t  # a warning, not a blocker
    launch = by_label(at.button, "Launch")
    assert not launch.disabled
    launch.click().run()
    assert not at.exception
    runs = Registry().list_runs()
    assert len(runs) == 1 and runs[0]["status"] == "queued" and runs[0]["name"] == "lab: LoRA -> ONNX int4 + adapter"
    assert f"Queued {runs[0]['id']}" in text(at)  # the Runs page, with the new run open
    assert runs[0]["name"] in [s.value for s in at.subheader]


def test_workflow_spec_error_names_the_field(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    at.session_state["draft"]["dataset"]["eval_split"] = 0.95
    at.run()
    t = text(at)
    assert "problem(s) to fix before launch" in t
    assert "`dataset.eval_split`" in t and "less than 0.9" in t
    assert by_label(at.button, "Launch").disabled


def test_workflow_gpu_only_pass_and_wrong_order_are_explained(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    by_label(at.checkbox, "Only passes that fit the target").uncheck().run()
    by_label(at.selectbox, "Add a pass from Olive's catalog").set_value("AutoAWQQuantizer").run()
    by_label(at.button, "Add").click().run()
    assert [p["type"] for p in at.session_state["draft"]["passes"]] == [
        "LoRA",
        "ModelBuilder",
        "ExtractAdapters",
        "AutoAWQQuantizer",
    ]
    t = text(at)
    assert "AutoAWQQuantizer cannot run on a CPU target" in t and "set the target device to GPU" in t
    # move LoRA below ModelBuilder: the check says what to change
    down = [b for b in at.button if b.key and b.key.endswith("-down")]
    down[0].click().run()
    assert [p["type"] for p in at.session_state["draft"]["passes"]][:2] == ["ModelBuilder", "LoRA"]
    assert "move LoRA above ModelBuilder" in text(at)
    remove = [b for b in at.button if b.key and b.key.endswith("-rm")]
    remove[-1].click().run()
    assert "AutoAWQQuantizer" not in [p["type"] for p in at.session_state["draft"]["passes"]]


def test_workflow_parameter_form_and_searchable_values(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    mb = at.session_state["draft"]["passes"][1]
    by_label([t for t in at.toggle if t.key.startswith(f"pass-{mb['uid']}")], "Edit").set_value(True).run()
    # showing the form changes nothing: an option Olive leaves unset stays unset (Grove's CUDA graphs and AWQ-grid
    # defaults apply only to options the user did not set), and it can be set either way
    untouched = {"enable_cuda_graph", "int4_is_symmetric", "exclude_lm_head", "exclude_embeds", "use_qdq"}
    assert not untouched & set(at.session_state["draft"]["passes"][1]["params"])
    sym = by_label(at.selectbox, "int4_is_symmetric")
    assert sym.value is None and set(sym.options) >= {"True", "False"}
    sym.set_value(True).run()
    assert at.session_state["draft"]["passes"][1]["params"]["int4_is_symmetric"] is True
    # generated from Olive's metadata: an enum as a select box with its choices, folded extras
    blk = by_label(at.selectbox, "int4_block_size")
    assert 128 in blk.options or "128" in [str(o) for o in blk.options]
    assert any(e.label.startswith("More parameters") for e in at.expander)
    by_label(at.multiselect, "Searchable parameters").set_value(["int4_block_size"]).run()
    vals = by_label(at.text_input, "Values for int4_block_size")
    assert json.loads(vals.value) == [32, 64, 128]  # Olive's own search values
    vals.input("[32, 128]").run()
    spec = json.loads(at.code[-1].value)
    assert spec["passes"][1]["search"] == {"int4_block_size": [32, 128]}
    assert spec["search"]["sampler"] == "sequential"
    assert not any("`passes" in shown(e.value) for e in at.error)


def test_workflow_builds_the_olive_config_for_download(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    by_label(at.button, "Build the Olive config").click().run()
    assert not at.exception
    dl = at.get("download_button")
    assert any(d.label == "Download olive_config.json" for d in dl)
    cfg = json.loads(at.session_state["olive_config_text"][1])
    assert list(cfg["passes"]) == ["lora", "modelbuilder", "extractadapters"]
    assert cfg["data_configs"][0]["pre_process_data_config"]["max_seq_len"] == 128


def test_workflow_imports_an_olive_config_naming_unknown_passes(ui_home):
    cfg = {
        "input_model": {"type": "HfModel", "model_path": str(ui_home / "demo" / "model")},
        "systems": {
            "local": {
                "type": "LocalSystem",
                "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
            }
        },
        "data_configs": [
            {
                "name": "train",
                "type": "HuggingfaceContainer",
                "load_dataset_config": {
                    "data_name": "json",
                    "data_files": str(ui_home / "demo" / "travel_sample.jsonl"),
                },
                "pre_process_data_config": {"text_template": "### {prompt}\n{response}", "max_seq_len": 64},
            }
        ],
        "passes": {
            "lora": {"type": "LoRA", "r": 8, "train_data_config": "train"},
            "mb": {
                "type": "ModelBuilder",
                "precision": "int4",
                "int4_block_size": {
                    "olive_parameter_type": "SearchParameter",
                    "type": "Categorical",
                    "support": [16, 32],
                },
            },
            "custom": {"type": "MyCompanyPass", "level": 3},
        },
        "search_strategy": {"execution_order": "joint", "sampler": "random", "sampler_config": {"max_samples": 2}},
    }
    at = open_page("workflow")
    at.get("file_uploader")[0].upload("wf.json", json.dumps(cfg).encode(), "application/json").run()
    by_label(at.button, "Import into the form").click().run()
    assert not at.exception
    d = at.session_state["draft"]
    assert [p["type"] for p in d["passes"]] == ["LoRA", "ModelBuilder", "MyCompanyPass"]
    assert d["passes"][1]["search"] == {"int4_block_size": [16, 32]} and d["passes"][1]["name"] == "mb"
    # a pass this Olive does not have is kept for the user to see, never as raw JSON that would reach Olive verbatim
    assert not d["passes"][2]["raw"] and d["passes"][2]["params"] == {"level": 3}
    assert d["dataset"]["text_template"] == "### {prompt}\n{response}" and d["dataset"]["max_seq_len"] == 64
    assert d["search"]["sampler"] == "random" and d["search"]["max_samples"] == 2
    assert "MyCompanyPass is not a pass of this Olive version" in text(at)


# -- Runs ------------------------------------------------------------------------------------------------------
LORA_EVENTS = [
    (0, "pass_started", {"name": "lora", "type": "LoRA"}),
    (1, "train_started", {"max_steps": 20}),
    *[
        (1 + i, "train_step", {"step": 5 * i, "max_steps": 20, "loss": 5.0 - i * 0.5, "learning_rate": 0.002})
        for i in range(1, 5)
    ],
    (30, "pass_finished", {"name": "lora", "type": "LoRA", "seconds": 29.0}),
    (31, "pass_started", {"name": "modelbuilder", "type": "ModelBuilder"}),
    (43, "pass_finished", {"name": "modelbuilder", "type": "ModelBuilder", "seconds": 12.0}),
]
CANDIDATES = [
    {
        "model_id": "aaa111",
        "pass_chain": ["lora"],
        "pass_params": {"r": 16},
        "path": "/x/lora",
        "size_bytes": 16_000_000,
        "metrics": {},
        "is_output": 0,
    },
    {
        "model_id": "bbb222",
        "pass_chain": ["lora", "modelbuilder"],
        "pass_params": {"precision": "int4"},
        "path": "/x/out",
        "size_bytes": 4_900_000,
        "metrics": {"perplexity": 31.5},
        "is_output": 1,
    },
]


def test_runs_table_and_a_finished_run_in_detail(ui_home):
    done = add_run(ui_home, "travel lab run", "succeeded", events=LORA_EVENTS, candidates=CANDIDATES)
    add_run(ui_home, "queued one", "queued")
    at = open_page("runs", run=done["id"])
    f = frames(at)
    assert "travel lab run" in f and "queued one" in f and "succeeded" in f
    assert "travel lab run" in [s.value for s in at.subheader]
    assert "29s" in f and "12s" in f and "✓ ran" in f  # stage timeline
    assert at.get("plotly_chart"), "loss curve"
    assert "aaa111" in f and "bbb222" in f and "lora → modelbuilder" in f and "31.5" in f  # candidates
    labels = [b.label for b in at.get("download_button")]
    assert "Olive config" in labels and "Artifacts (.zip)" in labels
    assert by_label(at.button, "Cancel").disabled and not by_label(at.button, "Retry").disabled


def test_markdown_in_run_errors_is_shown_as_text(ui_home):
    """A failed run whose error holds Markdown (bold, a link, HTML, a Streamlit colour directive) shows it literally."""
    nasty = "**boom** [click](http://example.invalid) <b>x</b> :red[alarm] $x^2$"
    bad = add_run(ui_home, "nasty", "failed", error=("ValueError", f"ValueError: {nasty}"))
    at = open_page("runs", run=bad["id"])
    errors = [e.value for e in at.error if "Run failed" in e.value]
    assert errors and nasty in shown(errors[0])  # the reader sees the characters...
    assert "**boom**" not in errors[0] and "](http" not in errors[0] and ":red[" not in errors[0]  # ...not markup


def test_runs_failed_run_says_what_to_do(ui_home):
    bad = add_run(
        ui_home,
        "too big",
        "failed",
        error=("out_of_memory", "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    )
    at = open_page("runs", run=bad["id"])
    assert any("Run failed: out_of_memory" in shown(e.value) and "Tried to allocate" in shown(e.value) for e in at.error)
    assert any("ran out of memory" in i.value and "batch" in i.value for i in at.info)
    assert any("Traceback" in c.value for c in at.code)


def test_runs_cancel_a_queued_run(ui_home):
    q = add_run(ui_home, "waiting", "queued")
    at = open_page("runs", run=q["id"])
    by_label(at.button, "Cancel").click().run()
    assert not at.exception
    assert Registry().get_run(q["id"])["status"] == "cancelled"
    assert "Cancel requested" in text(at)


def test_runs_retry_and_clone_into_workflow(ui_home):
    done = add_run(ui_home, "first try", "failed")
    at = open_page("runs", run=done["id"])
    by_label(at.button, "Retry").click().run()
    runs = Registry().list_runs()
    assert len(runs) == 2 and runs[0]["status"] == "queued"
    assert Registry().get_run(runs[0]["id"])["parent_run"] == done["id"]
    assert f"Queued {runs[0]['id']} as a retry of {done['id']}" in text(at)
    at.query_params["run"] = done["id"]
    at.run()
    by_label(at.button, "Clone into Workflow").click().run()
    assert not at.exception
    assert at.title[0].value == "Workflow"
    assert by_label(at.text_input, "Run name").value == "first try (clone)"
    assert [p["type"] for p in at.session_state["draft"]["passes"]] == ["LoRA", "ModelBuilder", "ExtractAdapters"]


def test_runs_unknown_run_id_is_a_message_not_a_crash(ui_home):
    at = open_page("runs", run="r-nope")
    assert any("no run 'r-nope'" in shown(w.value) for w in at.warning)


# -- the live fragment's render function (timed reruns are not simulated by AppTest) ---------------------------
def _live_script(run_id: str) -> None:
    from app.components import live

    live.run_view(run_id)


def test_live_view_of_a_running_run_with_a_cache_hit(ui_home):
    add_run(ui_home, "earlier", "succeeded", events=LORA_EVENTS)
    cached = [
        (0, "pass_started", {"name": "lora", "type": "LoRA"}),
        (2, "train_step", {"step": 5, "max_steps": 20, "loss": 4.2}),
        (20, "pass_finished", {"name": "lora", "type": "LoRA", "seconds": 19.0}),
        (21, "pass_started", {"name": "modelbuilder", "type": "ModelBuilder"}),
        (21.5, "pass_cached", {"name": "modelbuilder", "model_id": "bbb222"}),
    ]
    r = add_run(ui_home, "now", "running", events=cached)
    at = AppTest.from_function(_live_script, args=(r["id"],), default_timeout=UI_TIMEOUT)
    at.run()
    assert not at.exception
    f = frames(at)
    assert "♻ cache hit" in f and "12s" in f  # the time the earlier real run took
    assert "… planned" in f and "extractadapters" in f
    assert any("Reuse saved about 12s" in shown(c.value) for c in at.caption)
    assert at.get("progress") and "running: pass lora" in at.get("progress")[0].proto.text


def test_live_view_names_the_measuring_stage_and_keeps_a_resumed_curve(ui_home):
    """Issue 20: the evaluations after the workflow are stages of their own (with answers counted), and a training
    resumed from its step-4 checkpoint keeps the points before the crash and reports a true mean."""
    events = [
        (0, "pass_started", {"name": "lora", "type": "LoRA"}),
        *[(1 + s, "train_step", {"step": s, "max_steps": 8, "loss": 3.0}) for s in range(1, 7)],  # killed at 6
        (10, "resumed", {"step": 4, "checkpoint": "checkpoint-4"}),
        *[(10 + s, "train_step", {"step": s, "max_steps": 8, "loss": 2.0}) for s in range(5, 9)],
        (19, "pass_finished", {"name": "lora", "type": "LoRA", "seconds": 19.0}),
        (30, "measure_started", {"candidates": 3}),
        (31, "eval_started", {"model": "/c/lora/models", "label": "lora"}),
        (40, "eval_finished", {"model": "/c/lora/models", "seconds": 9.0}),
        (41, "eval_started", {"model": "/c/int4/models", "label": "lora > modelbuilder"}),
        (42, "eval_progress", {"model": "/c/int4/models", "phase": "answers", "done": 2, "total": 40}),
    ]
    r = add_run(ui_home, "now", "running", events=events)
    Registry().update_run(r["id"], stage="measuring 3 candidates (2 of 3): 2 of 40 answers", progress=0.7)
    at = AppTest.from_function(_live_script, args=(r["id"],), default_timeout=UI_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "measuring 3 candidates (2 of 3): 2 of 40 answers" in at.get("progress")[0].proto.text
    f = frames(at)
    assert "✓ measured" in f and "lora > modelbuilder: 2 of 40 answers" in f and "about 1 more candidate(s)" in f
    captions = [shown(c.value) for c in at.caption]
    assert any("Training resumed from step 4" in c for c in captions)
    assert any("8 log points" in c and "mean 2.500 over steps 1-8; resumed from step 4" in c for c in captions), captions
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["data"][0]["x"] == list(range(1, 9))  # one point per step: the curve before the crash stays


# -- no heavy imports in the UI process ------------------------------------------------------------------------
def test_pages_never_import_olive_torch_or_transformers(ui_home):
    script = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({MAIN!r}, default_timeout={UI_TIMEOUT})
at.run()
for p in {list(PAGES.values())!r}:
    at.switch_page(p).run()
    assert not at.exception, [e.value for e in at.exception]
print(sorted(m for m in ("olive", "torch", "transformers", "datasets", "peft", "onnxruntime") if m in sys.modules))
"""
    # five script runs of up to UI_TIMEOUT each, plus the interpreter's start; how fast the pages are is not timed here
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=6 * UI_TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_workflow_evaluation_metrics_and_target(ui_home):
    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    by_label(at.toggle, "Evaluate candidates").set_value(True).run()
    assert not at.exception
    assert at.get("arrow_data_editor") or at.data_editor, "metrics table"
    by_label(at.number_input, "Eval samples").set_value(20).run()
    spec = json.loads(at.code[-1].value)
    assert spec["evaluation"]["enabled"] is True and spec["evaluation"]["max_eval_samples"] == 20
    assert spec["evaluation"]["metrics"] == [{"name": "perplexity", "priority": 1}]
    # a GPU target on a machine without one: the check says so before anything is queued
    by_label(at.radio, "Device").set_value("gpu").run()
    assert by_label(at.selectbox, "Execution provider").value == "CUDAExecutionProvider"
    t = text(at)
    assert "the run asks for 1 GPU(s); this machine has 0" in t and "set the target device to CPU" in t
    assert by_label(at.button, "Launch").disabled


def test_home_shows_the_ray_cluster_nodes_when_runs_go_to_ray(ui_home):
    """On the Ray executor, Home's run slots are the cluster's nodes (from the Ray worker's heartbeat)."""
    reg = Registry()
    reg.worker_started("w-ray")
    nodes = [
        {"node_id": "n1", "address": "127.0.0.1", "host": "h", "head": True, "cpus": 2, "cpus_used": 1, "gpus": 0,
         "gpus_used": 0, "resources": {"head": 1}},
        {"node_id": "n2", "address": "127.0.0.2", "host": "h2", "head": False, "cpus": 4, "cpus_used": 0, "gpus": 2,
         "gpus_used": 1, "resources": {"node2": 1}},
    ]
    runs = [{"run_id": "r-placed", "node_id": "n2"}, {"run_id": "r-waiting", "waiting": True}]
    reg.worker_beat("w-ray", {"executor": "ray", "address": "127.0.0.1:6380", "nodes": nodes, "runs": runs})
    try:
        at = open_page("home")
        frames = [f.value for f in at.dataframe]
        table = next(f for f in frames if "node" in f.columns)
        assert list(table["node"]) == ["127.0.0.1 (head)", "127.0.0.2"]
        assert list(table["GPUs"]) == ["none", "1 / 2"] and list(table["runs"]) == ["", "r-placed"]
        assert "Ray cluster at 127.0.0.1:6380" in text(at) and "r-waiting" in text(at)
    finally:
        reg.worker_stopped("w-ray")


def test_preflight_shows_the_chat_template_round_trip_and_refuses_a_mismatch(ui_home):
    """Issue 11: the first example rendered three ways; a text template in another model's turn markers (ChatML
    tags on this Phi-3-template model) is an error that names the field and blocks the launch."""
    from engine.views import preflight

    at = _with_dataset(AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT), ui_home)
    by_label(at.button, "Apply recipe").click().run()
    r0 = preflight.round_trip(at.session_state["draft"], wait=True)  # the child process, done before the page looks
    assert r0 and r0["ok"], (r0, at.session_state["draft"]["dataset"], at.session_state["draft"]["model"])
    at.run()
    labels = [e.label for e in at.expander]
    assert "Chat-template round trip (first example)" in labels, labels
    codes = [c.value for c in at.code]
    assert any(c.startswith("<|user|>\n") and "<|assistant|>\n" in c for c in codes), codes  # training text
    assert any(c.rstrip().endswith("<|assistant|>") and "Louvre" not in c for c in codes), codes  # the chat prompt
    assert not by_label(at.button, "Launch").disabled

    draft = at.session_state["draft"]
    draft["dataset"]["text_template"] = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>"
    preflight.round_trip(draft, wait=True)
    at.run()
    t = text(at)
    assert "`dataset.text_template`" in t and "problem(s) to fix before launch" in t, t[-2000:]
    assert re.search(r"they differ at character \d+", t)  # the round trip's own finding, shown above its three renderings
    assert any("mismatch" in e.label for e in at.expander)
    assert by_label(at.button, "Launch").disabled


def test_workflow_launches_a_baseline_run_and_imports_another_targets_config_as_a_cpu_version(ui_home):
    """The Baseline recipe: no passes, evaluation on, launched as any run; an Olive config for QNN imports for the QNN
    target (known, not runnable here: the note says so), then as a CPU version with its QNN-only passes named as
    dropped."""
    at = AppTest.from_file(MAIN, default_timeout=UI_TIMEOUT)
    at.run(timeout=120)
    at.switch_page(PAGES["model_data"]).run(timeout=120)
    by_label(at.selectbox, "Dataset file").set_value(str(ui_home / "demo" / "travel_sample.jsonl")).run(timeout=120)
    at.switch_page(PAGES["workflow"]).run(timeout=120)
    by_label(at.selectbox, "Recipe").set_value("baseline").run(timeout=120)
    by_label(at.button, "Apply recipe").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    d = at.session_state["draft"]
    assert d["passes"] == [] and d["evaluation"]["enabled"] and d["evaluation"]["metrics"]
    t = text(at)
    assert "No passes: a baseline run that measures the model as it is" in t and "has no passes" not in t
    launch = by_label(at.button, "Launch")
    assert not launch.disabled, t
    launch.click().run(timeout=120)
    runs = Registry().list_runs()
    assert len(runs) == 1 and runs[0]["status"] == "queued"
    assert json.loads(Registry().get_run(runs[0]["id"])["spec"])["passes"] == []

    qnn = (REPO / "tests" / "inputs" / "olive" / "qnn_npu.json").read_bytes()
    at.switch_page(PAGES["workflow"]).run(timeout=120)
    at.get("file_uploader")[0].upload("qnn.json", qnn, "application/json").run(timeout=120)
    by_label(at.button, "Import into the form").click().run(timeout=120)
    assert "this machine cannot run it" in text(at)
    assert at.session_state["draft"]["target"]["execution_provider"] == "QNNExecutionProvider"
    by_label(at.radio, "Target").set_value("cpu").run(timeout=120)
    by_label(at.button, "Import into the form").click().run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    d = at.session_state["draft"]
    assert [p["type"] for p in d["passes"]] == ["QuaRot", "GptqModel", "ModelBuilder"]
    assert d["target"]["execution_provider"] == "CPUExecutionProvider"
    assert "(StaticLLM) dropped: it exists for another target" in text(at)

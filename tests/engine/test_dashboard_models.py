"""The dashboard's read-models (engine/views, estimate, dataview, drafts, olive_import, preflight): pure Python
over real files and a real registry; none of them may import Streamlit."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import paths
from engine.data import inspect as dataview
from engine.errors import ResourceError, SpecError
from engine.evaluate.compare import pareto
from engine.models.tiny import GEOMETRY
from engine.olive import importer as olive_import
from engine.olive import validate
from engine.runs import demo, submit
from engine.runs.registry import Registry
from engine.spec import drafts, recipes
from engine.spec.schema import DatasetSpec, parse_spec
from engine.views import candidates as cand_views
from engine.views import estimate, preflight
from engine.views import format as fmt
from engine.views import runs as views

PHI3_MINI = {
    "architectures": ["Phi3ForCausalLM"],
    "model_type": "phi3",
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 131072,
}


def _model(tmp_path: Path, cfg: dict, tensors: dict | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    if tensors is not None:
        header = json.dumps(tensors).encode()
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return d


def test_no_streamlit_in_engine_read_models():
    code = (
        "import sys, engine.views.runs, engine.views.estimate, engine.data.inspect, engine.spec.drafts, engine.olive.importer, "
        "engine.views.preflight, engine.views.candidates, engine.views.format, engine.views.dataset, engine.runs.demo, "
        "engine.evaluate.compare; print(sorted(m for m in ('streamlit', 'torch', 'olive', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_parameters_estimated_from_config_match_known_models(tmp_path):
    assert (
        estimate.estimate_params({"model_type": "phi3", "vocab_size": 2048, "tie_word_embeddings": False, **GEOMETRY})
        == 4_065_536
    )
    assert abs(estimate.estimate_params(PHI3_MINI) / 3.821e9 - 1) < 0.01  # Phi-3-mini: 3.82 B
    card = estimate.model_card(
        _model(
            tmp_path,
            PHI3_MINI,
            {"a": {"dtype": "BF16", "shape": [10, 20], "data_offsets": [0, 400]}, "__metadata__": {"format": "pt"}},
        )
    )
    assert card["architecture"] == "Phi3ForCausalLM" and card["dtype"] == "bfloat16"
    assert card["params_exact"] == 200 and card["dtype_weights"] == "BF16"
    assert card["size_on_disk"] > 0 and card["layers"] == 32


def test_memory_estimate_grows_with_sequence_and_quantized_base_is_smaller(tmp_path):
    card = estimate.model_card(_model(tmp_path, PHI3_MINI))
    lora = {
        "type": "LoRA",
        "params": {
            "r": 16,
            "torch_dtype": "bfloat16",
            "training_args": {"per_device_train_batch_size": 4, "gradient_checkpointing": False},
        },
    }
    short = estimate.pass_memory(card, lora, seq_len=256)["bytes"]
    long = estimate.pass_memory(card, lora, seq_len=2048)["bytes"]
    assert long > 2 * short
    assert 7e9 < short < 30e9  # bf16 weights alone are 7.6 GB
    qlora = estimate.pass_memory(card, {**lora, "type": "QLoRA"}, seq_len=256)["bytes"]
    assert qlora < short
    plan = estimate.plan_memory(
        card,
        [
            {"type": "AutoAWQQuantizer", "params": {"bits": 4}},
            {"type": "ModelBuilder", "params": {"precision": "int4"}},
        ],
    )
    assert plan[1]["parts"]["source weights"] < plan[0]["parts"]["weights (16-bit)"]


def test_dataview_render_tokens_and_split(tmp_path):
    rows = [{"q": f"question {i}?", "a": f"answer {i}."} for i in range(40)] + [{"q": "question 1?", "a": "again"}]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    ds = DatasetSpec(path=str(f), text_template=dataview.PRESETS["ChatML"], columns={"q": "prompt", "a": "response"})
    assert (
        dataview.render(rows[0], ds)
        == "<|im_start|>user\nquestion 0?<|im_end|>\n<|im_start|>assistant\nanswer 0.<|im_end|>"
    )
    stats = dataview.split_stats(ds)
    assert stats["rows"] == 41 and stats["eval_rows"] == 4 and stats["train_rows"] == 37
    lens, exact = dataview.token_lengths(["abcd" * 10], None)
    assert lens == [10] and not exact
    page, total = dataview.read_page(str(f), 1, 20)
    assert total == 41 and page[0]["q"] == "question 20?"


def test_allowed_roots(fresh_home, monkeypatch, tmp_path):
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", f"{tmp_path / 'extra'}:")
    assert dataview.is_allowed(fresh_home / "x.jsonl") and dataview.is_allowed(paths.REPO_ROOT / "engine")
    assert dataview.is_allowed(tmp_path / "extra" / "a" / "b.csv")
    assert not dataview.is_allowed("/etc/passwd") and not dataview.is_allowed(tmp_path / "extra2")


def test_drafts_recipes_and_olive_config(fresh_home, tmp_path):
    model = _model(tmp_path, {"model_type": "phi3", "vocab_size": 2048, **GEOMETRY})
    d = drafts.new_draft(str(model))
    d["dataset"] = {
        "path": str(paths.DEMO_SAMPLE),
        "text_template": dataview.PRESETS["Phi-3 chat (the lab's)"],
        "max_seq_len": 512,
    }
    for key in recipes.PRESETS:
        spec = parse_spec(drafts.to_spec_dict(drafts.apply_recipe(d, key)))
        # the baseline measures the model as it is: no passes, evaluation on; every other preset changes it
        assert bool(spec.passes) == (key != "baseline") and (spec.passes or spec.evaluation.enabled)
    lab = drafts.apply_recipe(d, "lab")
    assert [p["type"] for p in lab["passes"]] == ["LoRA", "ModelBuilder", "ExtractAdapters"]
    assert lab["dataset"]["max_seq_len"] == 128 and d["dataset"]["max_seq_len"] == 512  # the draft is not mutated
    cfg = json.loads(submit.olive_config_text(parse_spec(drafts.to_spec_dict(lab))))
    assert cfg["passes"]["lora"]["train_data_config"] == "train_data"
    assert Path(cfg["data_configs"][0]["load_dataset_config"]["data_files"]).is_file()
    clone = drafts.from_spec(json.loads(parse_spec(drafts.to_spec_dict(lab)).model_dump_json()))
    assert drafts.to_spec_dict(clone)["passes"] == drafts.to_spec_dict(lab)["passes"]


def test_olive_import_round_trips_grove_configs_and_keeps_the_rest(fresh_home, tmp_path):
    model = _model(tmp_path, {"model_type": "phi3", "vocab_size": 2048, **GEOMETRY})
    d = drafts.new_draft(str(model))
    d["dataset"] = {"path": str(paths.DEMO_SAMPLE), "text_template": "{prompt} => {response}", "max_seq_len": 64}
    lab = drafts.apply_recipe(d, "lab")
    text = submit.olive_config_text(parse_spec(drafts.to_spec_dict(lab)))
    back, notes = olive_import.import_text(text)
    assert [p["type"] for p in back["passes"]] == ["LoRA", "ModelBuilder", "ExtractAdapters"]
    assert "int4_nodes_to_exclude" not in back["passes"][1]["params"]  # Grove adds them again
    assert back["passes"][0]["params"]["r"] == 16 and "train_data_config" not in back["passes"][0]["params"]
    assert back["dataset"]["text_template"] == "{prompt} => {response}" and back["model"]["name"] == str(model)
    yaml_text = (
        "input_model: {type: HfModel, model_path: m}\npasses:\n  a: [{type: OnnxConversion}, {type: ModelBuilder}]\n"
    )
    back, notes = olive_import.import_text(yaml_text, {"OnnxConversion": {"params": {}}})
    assert not back["passes"][0]["raw"] and "alternative" in " ".join(notes)
    with pytest.raises(Exception, match="input_model"):
        olive_import.import_text("[1, 2]")


def test_preflight_messages_say_what_to_change(fresh_home, tmp_path):
    model = _model(tmp_path, {**PHI3_MINI, "auto_map": {"AutoModel": "x.Y"}})
    card = estimate.model_card(model)
    d = drafts.new_draft(str(model))
    d["passes"] = [
        {"type": "ModelBuilder", "params": {}},
        {"type": "LoRA", "params": {}},
        {"type": "AutoAWQQuantizer", "params": {}},
    ]
    found = preflight.check(
        d, catalog=None, card=card, gpus_available=0, slots={"workers": 0}, machine={"ram": 4 * 2**30, "gpus": []}
    )
    msgs = "\n".join(f"{f['level']} {f['where']} {f['message']} -> {f['fix']}" for f in found)
    assert (
        "LoRA fine-tunes a PyTorch model but comes after ModelBuilder" in msgs
        and "move LoRA above ModelBuilder" in msgs
    )
    assert "AutoAWQQuantizer cannot run on a CPU target" in msgs
    assert "need(s) a dataset" in msgs
    assert "trust_remote_code" in msgs
    assert "no worker is running" in msgs
    assert "error pass lora needs about" in msgs  # 3.8 B parameters do not fit a 4 GB slot
    d["resources"] = {"gpus": 2}
    d["target"] = {"device": "gpu", "execution_provider": "CUDAExecutionProvider", "precision": "int4"}
    msgs = " ".join(f["message"] for f in preflight.check(d, catalog=None, card=card, gpus_available=0))
    assert "asks for 2 GPU(s); this machine has 0" in msgs


def test_views_eta_timeline_and_slots(fresh_home):
    reg = Registry()
    spec = json.dumps({"model": {"name": "/m"}, "dataset": {"path": "/d.jsonl"}})
    a = reg.create_run(
        spec_json=spec,
        spec_hash="a",
        name="same",
        olive_config=json.dumps({"passes": {"p1": {}, "p2": {}}}),
        gpus_wanted=0,
    )
    reg.claim("w", lambda r: [])
    t = time.time()
    reg.add_events(
        a["id"],
        [
            (t - 30, "pass_started", {"name": "p1", "type": "X"}),
            (t - 10, "pass_finished", {"name": "p1", "type": "X", "seconds": 20.0}),
        ],
    )
    reg.update_run(a["id"], started_at=t - 30, progress=0.5)
    run = reg.get_run(a["id"])
    assert 25 < views.eta(run) < 35
    tl = views.timeline(reg, run)
    assert [(s["pass"], s["state"]) for s in tl] == [("p1", "ran"), ("p2", "planned")]
    b = reg.create_run(spec_json=spec, spec_hash="b", name="same", olive_config="{}", gpus_wanted=0)
    reg.claim("w", lambda r: [])
    reg.add_events(
        b["id"],
        [(t, "pass_started", {"name": "p1", "type": "X"}), (t + 1, "pass_cached", {"name": "p1", "model_id": "m"})],
    )
    tl = views.timeline(reg, reg.get_run(b["id"]))
    assert tl[0]["state"] == "cache hit" and tl[0]["saved_s"] == 20.0
    assert views.slots(
        [{"slots": json.dumps({"cpu": 2, "cpu_used": 1, "per_gpu": 2, "gpus": [0], "gpu_used": {"0": 1}})}]
    ) == {
        "workers": 1,
        "cpu": 2,
        "cpu_used": 1,
        "gpu": 2,
        "gpu_used": 1,
        "gpus": [{"host": None, "gpu": 0, "slots": 2, "used": 1}],
    }
    assert views.recent_inputs(reg) == {"models": ["/m"], "datasets": ["/d.jsonl"]}
    assert fmt.fmt_seconds(3.25) == "3.2s" and fmt.fmt_seconds(125) == "2m 05s" and fmt.fmt_seconds(None) == "—"


def test_one_human_size_for_pages_and_cli():
    assert fmt.human_size(None) == "—" and fmt.human_size(0, empty="-") == "-"
    assert fmt.human_size(500) == "500 B" and fmt.human_size(1536) == "1.5 KB" and fmt.human_size(3 * 2**40) == "3.0 TB"
    assert fmt.estimate_gb(2**30) == "1.00 GB" and fmt.estimate_gb(2**20) == "1 MB"


def test_model_and_gpu_checks_are_one_implementation_worded_for_submit_and_preflight(fresh_home, tmp_path):
    """submit refuses (engine.olive.validate) and pre-flight reports from the same engine.paths.model_folder_problem."""
    missing, a_file, no_config = tmp_path / "gone", tmp_path / "weights.bin", tmp_path / "empty"
    a_file.write_text("x")
    no_config.mkdir()
    expected = {
        missing: ("model folder not found", "model folder not found"),
        a_file: ("must be a folder with config.json, not a file", "model folder not found"),
        no_config: ("has no config.json: is it a Hugging Face model folder?", "has no config.json"),
    }
    for folder, (raised, finding) in expected.items():
        spec = parse_spec({"name": "x", "model": {"name": str(folder)}, "passes": [{"type": "ModelBuilder"}]})
        with pytest.raises(SpecError, match=raised.replace("?", r"\?")):
            validate.refuse(spec)
        d = drafts.new_draft(str(folder))
        found = [f["message"] for f in preflight.check(d, catalog=None) if f["where"] == "model.name"]
        assert any(finding in m for m in found), found
    spec = parse_spec({"name": "x", "model": {"name": "m/m"}, "passes": [{"type": "ModelBuilder"}],
                       "target": {"device": "gpu", "execution_provider": "CUDAExecutionProvider"}, "resources": {"gpus": 2}})
    with pytest.raises(ResourceError, match="asks for 2 GPU\\(s\\); this machine has 1"):
        submit.check_resources(spec, gpus_available=1)
    submit.check_resources(spec, gpus_available=2)


def test_one_pareto_front_matches_the_pairwise_definition_and_stays_fast():
    import random

    def pairwise(cands, x, y):
        pts = [(i, c["metrics"].get(x), c["metrics"].get(y)) for i, c in enumerate(cands)]
        pts = [(i, a, b) for i, a, b in pts if isinstance(a, (int, float)) and isinstance(b, (int, float))]
        sx, sy = (1 if x == "decode_tps" else -1), 1
        return {
            i
            for i, a, b in pts
            if not any(sx * a2 >= sx * a and sy * b2 >= sy * b and (sx * a2 > sx * a or sy * b2 > sy * b)
                       for j, a2, b2 in pts if j != i)
        }

    rnd = random.Random(0)
    for _ in range(500):
        cands = [
            {"metrics": {k: rnd.choice([0, 1, 2, 2.5, 3, float("nan"), None]) for k in ("decode_tps", "ttft_ms", "rouge_l")}}
            for _ in range(rnd.randint(0, 20))
        ]
        for x in ("decode_tps", "ttft_ms"):
            assert pareto(cands, x, "rouge_l") == pairwise(cands, x, "rouge_l")
    big = [{"metrics": {"decode_tps": rnd.random(), "rouge_l": rnd.random()}} for _ in range(10000)]
    t = time.perf_counter()
    pareto(big, "decode_tps", "rouge_l")
    assert time.perf_counter() - t < 1.0


def test_chat_ready_probes_candidate_folders(tmp_path):
    onnx, lora, gone = tmp_path / "onnx", tmp_path / "lora", tmp_path / "gone"
    onnx.mkdir()
    (onnx / "genai_config.json").write_text("{}")
    (onnx / "adapter_weights.onnx_adapter").write_text("")
    (onnx / "model.onnx").write_text("")
    lora.mkdir()
    (lora / "config.json").write_text("{}")
    base = {"run_id": "r20260101-000000-abcd", "pass_chain": ["LoRA"], "failed": {}}
    cands = [
        {**base, "id": 1, "path": str(onnx / "model.onnx"), "is_output": 1},
        {**base, "id": 2, "path": str(lora), "adapter_path": str(lora / "adapter")},
        {**base, "id": 3, "path": str(gone), "is_output": 1},
        {**base, "id": 4, "path": str(lora), "failed": {"why": "x"}, "adapter_path": "a"},
    ]
    ready = cand_views.chat_ready(cands, lambda p: Path(p).name.split(".")[0])
    assert [(c["id"], c["kind"], c["adapters"]) for c in ready] == [
        (1, "ONNX", ["none", "adapter_weights"]),
        (2, "LoRA", ["none", "adapter"]),
    ]
    # the build in words, the run's name and the end of its id (not the id cut to its date), the candidate's number
    ready = cand_views.chat_ready(cands, lambda p: Path(p).name.split(".")[0], {base["run_id"]: "travel"})
    assert ready[0]["label"] == "ONNX + adapter · travel · abcd #1"  # no precision recorded: "ONNX"
    assert ready[1]["label"] == "PyTorch + LoRA · travel · abcd #2"


def test_registry_read_models_for_the_pages(fresh_home):
    reg = Registry()
    assert reg.count_candidates() == 0 and reg.measured_runs() == [] and reg.recent_specs() == []
    r = reg.create_run(spec_json="{}", spec_hash="h", name="n", olive_config="{}", gpus_wanted=0)
    reg.upsert_candidates(r["id"], [{"model_id": "a", "metrics": {"rouge_l": 0.5}}, {"model_id": "b"}])
    assert reg.count_candidates() == 2 and reg.recent_specs() == ["{}"]
    assert reg.measured_runs() == [{"id": r["id"], "name": "n", "user": None, "candidates": 1}]


def test_demo_build_state_reads_the_pid_file(fresh_home):
    assert demo.state() == "missing"
    fresh_home.mkdir(parents=True, exist_ok=True)
    (fresh_home / "demo-build.pid").write_text(str(os.getpid()))  # alive, but not a demo build
    assert demo.state() == "missing"

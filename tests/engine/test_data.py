from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.data import prepare as data
from engine.errors import DataError
from engine.spec.schema import DatasetSpec

TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>"


def ds(path, **kw) -> DatasetSpec:
    return DatasetSpec(path=str(path), text_template=kw.pop("text_template", TEMPLATE), **kw)


def test_lab_sample_with_crlf_reads_every_row(lab_sample):
    raw = lab_sample.read_bytes()
    assert b"\r\n" in raw  # the sample is messy on purpose
    rows = data.read_rows(lab_sample)
    assert len(rows) == 289  # 288 line ends + a last line without one
    assert all("\r" not in r["response"] for _, r in rows)


def test_prepare_splits_deterministically_and_reports_duplicates(lab_sample, fresh_home):
    spec = ds(lab_sample, eval_split=0.1, split_seed=7)
    a = data.prepare(spec)
    assert a.stats["train_rows"] + a.stats["eval_rows"] == 289
    assert a.stats["eval_rows"] == 29
    train = [json.loads(x) for x in a.train_path.read_text().splitlines()]
    ev = [json.loads(x) for x in a.eval_path.read_text().splitlines()]
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in ev} or a.stats["duplicates_train_eval"] > 0
    # same settings -> same folder, same split; another seed -> another split
    assert data.prepare(spec).dir == a.dir
    b = data.prepare(ds(lab_sample, eval_split=0.1, split_seed=8))
    assert b.dir != a.dir and b.eval_path.read_text() != a.eval_path.read_text()


def test_duplicates_between_train_and_eval_are_counted(tmp_path, fresh_home):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(40)] + [{"prompt": "Q5 ", "response": "dup"}]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    prep = data.prepare(ds(p, eval_split=0.5, split_seed=1))
    assert prep.stats["duplicates_train_eval"] >= 0
    texts = [json.loads(x)["prompt"].lower().strip() for x in prep.eval_path.read_text().splitlines()]
    train = [json.loads(x)["prompt"].lower().strip() for x in prep.train_path.read_text().splitlines()]
    assert prep.stats["duplicates_train_eval"] == len(set(texts) & set(train))


def test_malformed_jsonl_line_is_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\r\n{"prompt": "c", "response": "d",}\r\n')
    with pytest.raises(DataError) as e:
        data.read_rows(p)
    assert f"{p} line 2" in str(e.value)


def test_template_column_missing_names_the_column(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"question": "a", "answer": "b"}\n')
    with pytest.raises(DataError, match="column 'prompt'") as e:
        data.load_local(ds(p))
    assert "question" in str(e.value)  # the columns it does have
    # mapping the columns fixes it
    rows, _ = data.load_local(ds(p, columns={"question": "prompt", "answer": "response"}))
    assert rows[0]["prompt"] == "a"


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        data.read_rows(p)
    with pytest.raises(DataError, match="not found"):
        data.read_rows(tmp_path / "nope.jsonl")
    q = tmp_path / "x.txt"
    q.write_text("hi")
    with pytest.raises(DataError, match="unsupported"):
        data.read_rows(q)


def test_empty_cell_is_named_with_its_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "  "}\n')
    with pytest.raises(DataError, match="line 2: column 'response'"):
        data.load_local(ds(p))


def test_csv_and_eval_split_too_small(tmp_path, fresh_home):
    p = tmp_path / "d.csv"
    p.write_text("prompt,response\r\n" + "".join(f'"q {i}, really?",a{i}\r\n' for i in range(20)))
    rows, _ = data.load_local(ds(p))
    assert rows[0]["prompt"] == "q 0, really?"
    with pytest.raises(DataError, match=r"eval split too small: 2 rows \(of 20\)"):
        data.prepare(ds(p, eval_split=0.1))


def test_chat_template_rows_carry_messages(tmp_path, fresh_home):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(60)))
    prep = data.prepare(DatasetSpec(path=str(p), chat_template=True, system_prompt="Be brief."))
    row = json.loads(prep.train_path.read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]


# -- chat formats (tests/inputs/datasets: real files of each shape) --------------------------------------------------
DATASETS = Path(__file__).resolve().parent.parent / "inputs" / "datasets"
FORMAT_FILES = {
    "messages.jsonl": "messages", "sharegpt.jsonl": "sharegpt", "sharegpt_array.json": "sharegpt",
    "alpaca.jsonl": "alpaca", "alpaca.csv": "alpaca", "prompt_response.jsonl": "prompt_response", "text.jsonl": "text",
}  # fmt: skip


@pytest.mark.parametrize("name", list(FORMAT_FILES))
def test_each_format_is_detected_on_a_real_file(name):
    assert data.detect_format(DATASETS / name) == FORMAT_FILES[name]


def _prepared_rows(name, fresh_home, **kw):
    prep = data.prepare(DatasetSpec(path=str(DATASETS / name), eval_split=0.2, **kw))
    rows = [json.loads(x) for x in prep.train_path.read_text().splitlines()]
    return rows + [json.loads(x) for x in prep.eval_path.read_text().splitlines()]


def test_messages_keep_every_turn_and_the_system_message(fresh_home):
    rows = _prepared_rows("messages.jsonl", fresh_home, chat_template=True)  # format detected
    roles = sorted({tuple(m["role"] for m in r["messages"]) for r in rows})
    assert roles == [("system", "user", "assistant", "user", "assistant"), ("user", "assistant", "user", "assistant")]
    src = [json.loads(x) for x in (DATASETS / "messages.jsonl").read_text().splitlines()]
    assert sorted(json.dumps(r["messages"]) for r in rows) == sorted(json.dumps(r["messages"]) for r in src)


def test_sharegpt_turns_and_their_variants_become_roles(fresh_home):
    rows = _prepared_rows("sharegpt.jsonl", fresh_home, format="sharegpt", system_prompt="Be brief.")
    assert {m["role"] for r in rows for m in r["messages"]} == {"system", "user", "assistant"}
    src = [json.loads(x) for x in (DATASETS / "sharegpt.jsonl").read_text().splitlines()]
    variants = {t.get("from") or t.get("role") for r in src for t in r["conversations"]}
    assert variants == {"system", "human", "gpt", "user", "assistant"}  # the file uses every spelling
    by_first = {r["messages"][1]["content"] if r["messages"][0]["role"] == "system" else r["messages"][0]["content"]: r
                for r in rows}
    first = src[0]["conversations"]  # from/value with its own system message: kept, not replaced by system_prompt
    r = by_first[first[1]["value"]]
    assert r["messages"][0] == {"role": "system", "content": "Answer as a travel guide."}
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    plain = src[1]["conversations"]  # role/content inside conversations; the dataset's system prompt is added
    assert by_first[plain[0]["content"]]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert len(_prepared_rows("sharegpt_array.json", fresh_home, chat_template=True)) == 40


def test_alpaca_input_goes_into_the_user_turn(fresh_home):
    src = [json.loads(x) for x in (DATASETS / "alpaca.jsonl").read_text().splitlines()]
    with_input = next(r for r in src if r["input"])
    rows = _prepared_rows("alpaca.jsonl", fresh_home, format="alpaca")
    user = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    assert user[f"{with_input['instruction']}\n\n{with_input['input']}"] == with_input["output"]
    without = next(r for r in src if not r["input"])
    assert user[without["instruction"]] == without["output"]
    csv_rows = _prepared_rows("alpaca.csv", fresh_home, chat_template=True)  # the CSV has a multi-line input
    assert any("\n(asked twice)" in r["messages"][0]["content"] for r in csv_rows)


def test_format_settings_in_the_spec():
    from engine.errors import SpecError
    from engine.spec.schema import parse_spec

    base = {"model": {"name": "m"}, "passes": [{"type": "LoRA"}]}
    spec = parse_spec({**base, "dataset": {"path": "d.jsonl", "format": "messages"}})
    assert spec.dataset.chat_template is True and spec.dataset.template_fields == ["messages"]
    assert parse_spec({**base, "dataset": {"path": "d.jsonl", "format": "text"}}).dataset.text_template == "{text}"
    with pytest.raises(SpecError) as e:
        parse_spec({**base, "dataset": {"path": "d.jsonl", "format": "sharegpt", "text_template": "{prompt}"}})
    assert "dataset: format 'sharegpt' holds conversations" in str(e.value) and "Value error" not in str(e.value)
    with pytest.raises(SpecError, match="dataset.format"):
        parse_spec({**base, "dataset": {"path": "d.jsonl", "format": "chatml"}})


@pytest.mark.parametrize("name, expected", [
    ("bad_messages_role.jsonl", "bad_messages_role.jsonl line 3: messages[1] has the unknown role 'bot'; known: "
                                "assistant, system, user"),
    ("bad_sharegpt_no_assistant.jsonl", "bad_sharegpt_no_assistant.jsonl line 2: the conversation has no assistant "
                                        "turn with text"),
])  # fmt: skip
def test_a_malformed_conversation_is_refused_naming_its_line(name, expected):
    with pytest.raises(DataError) as e:
        data.load_local(DatasetSpec(path=str(DATASETS / name), chat_template=True))
    assert expected in str(e.value)


def test_csv_errors_name_the_physical_line(tmp_path):
    # records 1 and 3 span two lines each: the bad record (the 4th) starts on line 7, as an editor shows it
    with pytest.raises(DataError, match=r"bad_multiline.csv line 7: more fields than the header has"):
        data.read_rows(DATASETS / "bad_multiline.csv")
    p = tmp_path / "d.csv"
    p.write_text('prompt,response\n"a\nb",x\n"c",\n')
    with pytest.raises(DataError, match=r"d.csv line 4: column 'response' is missing or empty"):
        data.load_local(ds(p, text_template="{prompt} {response}"))


def test_a_conversation_file_without_a_template_setting_is_offered_its_format(tmp_path):
    from engine.errors import SpecError
    from engine.olive import validate

    spec = tmp_path / "s.yaml"
    spec.write_text(f"model: {{name: m}}\ndataset: {{path: {DATASETS / 'sharegpt.jsonl'}}}\npasses: [{{type: LoRA}}]\n")
    with pytest.raises(SpecError) as e:
        validate.load_spec(spec)
    assert "ShareGPT format" in str(e.value) and "set format: sharegpt" in str(e.value)
    with pytest.raises(DataError, match="set format: messages"):  # a text template over a messages file
        data.load_local(ds(DATASETS / "messages.jsonl"))


def test_assistant_tokens_alone_are_labelled(demo):
    """The labels training gets (engine.data.chat, used by Olive's pre-processing): the assistant turns of a
    multi-turn conversation with a system message, every other token -100."""
    from transformers import AutoTokenizer

    from engine.data import chat

    tok = AutoTokenizer.from_pretrained(demo["model"], local_files_only=True)
    conv = json.loads((DATASETS / "messages.jsonl").read_text().splitlines()[0])["messages"]
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user", "assistant"]
    t = chat.tokenize(tok, conv)
    assert t["input_ids"] == tok(t["text"], add_special_tokens=False)["input_ids"]  # the text as training tokenizes it
    trained = [i for i, lab in zip(t["input_ids"], t["labels"], strict=True) if lab != chat.IGNORE]
    masked = [i for i, lab in zip(t["input_ids"], t["labels"], strict=True) if lab == chat.IGNORE]
    assert 0 < len(trained) < len(t["input_ids"])
    said = tok.decode(trained)
    for m in conv:
        core = " ".join(m["content"].split()[:4])  # the byte-level decode keeps words
        assert (core in said) == (m["role"] == "assistant"), (m["role"], said)
    assert "<|end|>" in said  # the end of an assistant turn is trained: the model learns to stop
    assert "<|user|>" not in said and "<|assistant|>" not in said and "<|system|>" not in said
    assert "<|user|>" in tok.decode(masked)
    cut = chat.tokenize(tok, conv, max_len=10)
    assert len(cut["input_ids"]) == 10 and all(x == chat.IGNORE for x in cut["labels"])  # only the system turn fits


def test_evaluation_asks_for_the_last_assistant_turn_given_the_turns_before(demo):
    from transformers import AutoTokenizer

    from engine.evaluate.evaluator import render
    from engine.spec.evaluation import EvalConfig

    tok = AutoTokenizer.from_pretrained(demo["model"], local_files_only=True)
    conv = json.loads((DATASETS / "messages.jsonl").read_text().splitlines()[0])["messages"]
    prefix, full, ref = render(EvalConfig(eval_path="", chat_template=True), {"messages": conv},
                               lambda m, add_generation_prompt: tok.apply_chat_template(
                                   m, tokenize=False, add_generation_prompt=add_generation_prompt))
    assert ref == conv[-1]["content"]
    assert conv[2]["content"] in prefix and conv[3]["content"] in prefix  # the first answer is context
    assert prefix.endswith("<|assistant|>\n") and ref not in prefix and full.startswith(prefix)


# -- relative paths: resolved once, at submit, against the spec file's folder ---------------------------------------
README = Path(__file__).resolve().parent.parent.parent / "README.md"


def _readme_spec() -> str:
    text = README.read_text()
    start = text.index("```yaml\nname: travel LoRA -> int4")
    return text[start + len("```yaml\n"): text.index("```", start + 8)]


def test_the_readme_spec_submits_from_another_directory(demo, tmp_path, python):
    """The README's own spec, relative paths and all, saved in a project folder and submitted through the real CLI
    from somewhere else: the run stores absolute paths, and its Olive config names them."""
    import shutil
    import subprocess

    from engine.olive import catalog

    proj, elsewhere, home = tmp_path / "proj", tmp_path / "elsewhere", tmp_path / "home"
    for d in (proj / "runs" / "demo", elsewhere, home / "catalog"):
        d.mkdir(parents=True)
    shutil.copytree(demo["model"], proj / "runs" / "demo" / "model")
    shutil.copyfile(demo["dataset"], proj / "runs" / "demo" / "travel_sample.jsonl")
    (proj / "spec.yaml").write_text(_readme_spec())
    from engine.data.benchmark_task import build_travel_mc

    build_travel_mc(proj / "runs" / "benchmarks")  # what the Workflow page's travel task button writes
    (home / "catalog" / catalog.catalog_path().name).write_text(json.dumps(catalog.load()))
    env = {**os.environ, "GROVE_HOME": str(home), "GROVE_ALLOWED_ROOTS": str(proj),
           "PYTHONPATH": str(README.parent)}
    r = subprocess.run([python, "-m", "engine.cli", "submit", "../proj/spec.yaml"], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("queued ")
    from engine.runs.registry import Registry

    reg = Registry(home / "grove.db")
    run = reg.get_run(r.stdout.split()[1])
    spec = json.loads(run["spec"])
    assert spec["model"]["name"] == str(proj / "runs" / "demo" / "model")
    assert spec["dataset"]["path"] == str(proj / "runs" / "demo" / "travel_sample.jsonl")
    cfg = json.loads(run["olive_config"])
    assert cfg["input_model"]["model_path"] == str((proj / "runs" / "demo" / "model").resolve())
    # the same spec from the same place, but a path that is not there: named as the spec file's folder sees it
    (proj / "spec.yaml").write_text(_readme_spec().replace("runs/demo/travel_sample.jsonl", "runs/demo/nope.jsonl"))
    r = subprocess.run([python, "-m", "engine.cli", "submit", str(proj / "spec.yaml")], cwd=elsewhere, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and f"file not found: {proj / 'runs' / 'demo' / 'nope.jsonl'}" in r.stderr, r.stderr


def test_the_python_api_resolves_against_the_current_directory(demo, tmp_path, monkeypatch):
    from engine.runs import submit as service
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    monkeypatch.chdir(DATASETS)
    spec = parse_spec({**recipes.lab_recipe(demo["model"], "prompt_response.jsonl"), "name": "relative"})
    resolved = service.resolve_paths(spec)
    assert resolved.dataset.path == str(DATASETS / "prompt_response.jsonl")
    assert resolved.model.name == demo["model"]  # absolute already: unchanged
    hub = parse_spec({**recipes.lab_recipe("microsoft/Phi-3.5-mini-instruct", "d.jsonl")})
    assert service.resolve_paths(hub, tmp_path).model.name == "microsoft/Phi-3.5-mini-instruct"  # a Hub id stays one


# -- a real LoRA run on a conversation dataset: only the assistant tokens are trained --------------------------------
@pytest.mark.slow
def test_a_real_lora_run_trains_on_the_assistant_tokens_only(demo, grove_home, fresh_home, monkeypatch):
    import torch
    from olive.data.config import DataConfig
    from olive.passes.pytorch.train_utils import get_training_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.olive import config as olive_config
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.spec.schema import parse_spec

    from .helpers import run_to_end

    # a GROVE_HOME of its own (an empty Olive cache: the LoRA really trains), the session's demo model allowed
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(grove_home))
    spec = parse_spec({
        "name": "messages LoRA", "model": {"name": demo["model"]},
        "dataset": {"path": str(DATASETS / "messages.jsonl"), "format": "messages", "eval_split": 0.2, "max_seq_len": 256},
        "passes": [{"type": "LoRA", "params": {"r": 4, "alpha": 8, "torch_dtype": "float32", "training_args": {
            "max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "gradient_checkpointing": False}}}],
    })  # fmt: skip
    run = run_to_end(service.submit(spec)["id"], timeout=900)
    assert run["status"] == "succeeded", run["error_message"]
    losses = [e["data"]["loss"] for e in Registry().events(run["id"], kinds=["train_step"]) if "loss" in e["data"]]
    assert losses, "no training step was logged"

    # the data Olive's LoRA pass trained on, loaded from the run's own config exactly as the pass loads it
    cfg = json.loads(run["olive_config"])
    dc = next(d for d in cfg["data_configs"] if d["name"] == olive_config.TRAIN_DATA)
    assert dc["pre_process_data_config"]["type"] == olive_config.CHAT_PRE_PROCESS
    dc["pre_process_data_config"]["params"]["model_name"] = demo["model"]  # Olive fills it from input_model
    train = get_training_dataset(DataConfig(**dc))
    tok = AutoTokenizer.from_pretrained(demo["model"], local_files_only=True)
    prepared = [json.loads(x)["messages"] for x in Path(run["data_dir"], "train.jsonl").read_text().splitlines()]
    assert len(train) == len(prepared) == 32
    for sample, conv in zip(train, prepared, strict=True):
        ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
        said = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
        assert "<|user|>" not in said and "<|system|>" not in said
        for m in conv:
            assert (" ".join(m["content"].split()[:3]) in said) == (m["role"] == "assistant")

    # and the loss of a training step counts exactly those tokens: the model's loss on these labels is the mean
    # cross-entropy over the assistant positions alone, not over the whole conversation
    model = AutoModelForCausalLM.from_pretrained(demo["model"], dtype=torch.float32).eval()
    ids, labels = train[0]["input_ids"][None], train[0]["labels"][None]
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
        logp = torch.log_softmax(out.logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        keep = labels[0, 1:] != -100
        nll = -logp[torch.arange(len(target)), target]
        assert torch.allclose(out.loss, nll[keep].mean(), atol=1e-4)
        assert not torch.allclose(out.loss, nll.mean(), atol=1e-3)
        assert keep.sum() > 0 and (~keep).sum() >= 20  # the system and user turns, the role headers: not counted


def test_a_json_array_names_the_line_an_item_starts_on(tmp_path):
    good = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    bad = {"conversations": [{"from": "human", "value": "Q"}, {"from": "narrator", "value": "A"}]}
    p = tmp_path / "d.json"
    p.write_text("[\n" + json.dumps(good, indent=1) + ",\n" + json.dumps(bad, indent=1) + "\n]")
    start = 2 + len(json.dumps(good, indent=1).splitlines())
    assert [ln for ln, _ in data.read_rows(p)] == [2, start]
    with pytest.raises(DataError, match=rf"d.json line {start}: conversations\[1\] has the unknown from 'narrator'"):
        data.load_local(DatasetSpec(path=str(p), chat_template=True))

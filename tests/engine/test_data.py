from __future__ import annotations

import json
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

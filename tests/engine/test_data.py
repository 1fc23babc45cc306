from __future__ import annotations

import json

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

"""The bad-input corpus (tests/inputs/bad/, manifest.yaml): every case refused before anything is queued, with the
field, line or file named, through the CLI (``python -m engine.cli submit``, its own GROVE_HOME) and through the
Python API (load_spec + engine.runs.submit.submit). Nothing is queued and nothing is left on disk. No Olive runs:
the catalog is built once per session (a child process that imports Olive)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine import paths
from engine.errors import GroveError
from engine.olive import catalog, validate
from engine.runs import submit as service
from engine.runs.registry import Registry

BAD = Path(__file__).resolve().parent.parent / "inputs" / "bad"
CASES = yaml.safe_load((BAD / "manifest.yaml").read_text())["cases"]
REPO = Path(__file__).resolve().parent.parent.parent
GEOMETRY = {"model_type": "phi3", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 32}


def _home(base: Path) -> Path:
    """A GROVE_HOME with the corpus' fixtures: model/ (a config.json), a good dataset, and the corpus files."""
    home = base / "home"
    (home / "model").mkdir(parents=True)
    (home / "model" / "config.json").write_text(json.dumps(GEOMETRY))
    (home / "remote").mkdir()
    (home / "remote" / "config.json").write_text(json.dumps({**GEOMETRY, "auto_map": {"AutoModel": "m.M"}}))
    for m in ("model", "remote"):  # a folder the check takes as a model (its files are not loaded before launch)
        (home / m / "model.safetensors").write_bytes(b"")
        (home / m / "tokenizer.json").write_text("{}")
    (home / "bare").mkdir()  # config.json alone: a download that stopped half-way
    (home / "bare" / "config.json").write_text(json.dumps(GEOMETRY))
    rows = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(60)]
    (home / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (home / "folder.jsonl").mkdir()
    for f in BAD.iterdir():
        if f.name != "manifest.yaml":
            (home / f.name).write_bytes(f.read_bytes())
    (home / "big.jsonl").write_bytes(b'{"prompt": "' + b"x" * 41_000 + b'\xff", "response": "r"}\n')
    outside = base / "outside"
    outside.mkdir()
    (outside / "data.jsonl").write_text((home / "good.jsonl").read_text())
    (home / "link.jsonl").symlink_to(outside / "data.jsonl")
    return home


@pytest.fixture(scope="session")
def olive_catalog():
    return catalog.load()  # built once per session (GROVE_HOME of the session)


@pytest.fixture()
def corpus(tmp_path, monkeypatch, olive_catalog):
    home = _home(tmp_path)
    cat = home / "catalog"
    cat.mkdir()
    (cat / catalog.catalog_path().name).write_text(json.dumps(olive_catalog))
    monkeypatch.setenv("GROVE_HOME", str(home))
    monkeypatch.delenv("GROVE_ALLOWED_ROOTS", raising=False)
    monkeypatch.chdir(home)
    return home


def _left_on_disk(home: Path) -> list[str]:
    runs = [p.name for p in home.iterdir() if p.name.startswith("r2")]
    data = [p.name for p in (home / "data").iterdir()] if (home / "data").is_dir() else []
    return runs + data


def _spec_file(home: Path, case: dict) -> Path:
    f = home / case["file"]
    return f if f.is_file() else home / (case["file"] + ".missing")


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_refused_through_the_python_api(corpus, case):
    with pytest.raises(GroveError) as e:
        service.submit(validate.load_spec(_spec_file(corpus, case)))
    for expected in case["expect"]:
        assert expected in str(e.value), str(e.value)
    assert Registry().list_runs(limit=10) == []
    assert _left_on_disk(corpus) == []


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_refused_through_the_cli(corpus, case):
    env = {**os.environ, "GROVE_HOME": str(corpus), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "submit", str(_spec_file(corpus, case))],
                       capture_output=True, text=True, env=env, cwd=corpus, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for expected in case["expect"]:
        assert expected in r.stderr, r.stderr
    assert Registry().list_runs(limit=10) == []
    assert _left_on_disk(corpus) == []


def test_a_good_spec_still_queues(corpus):
    spec = validate.load_spec(corpus / "ok.yaml")
    run = service.submit(spec)
    assert run["status"] == "queued"


def test_a_tiny_dataset_with_eval_path_is_honoured(corpus):
    spec = validate.load_spec(corpus / "ok.yaml")
    ds = spec.dataset.model_copy(update={"path": "tiny.jsonl", "eval_path": "tiny_eval.jsonl"})
    run = service.submit(spec.model_copy(update={"dataset": ds}))
    assert run["status"] == "queued"


def test_pretemplated_text_is_offered(corpus):
    assert validate.template_offer_message(str(corpus / "pretemplated.jsonl")).endswith("to train on the text as is")
    from engine.data import inspect

    assert inspect.template_offer(corpus / "pretemplated.jsonl") == "{text}"
    assert inspect.template_offer(corpus / "good.jsonl") is None


def test_allowed_roots_are_configurable(corpus, monkeypatch):
    assert not paths.is_allowed(corpus / "link.jsonl")  # a symlink out of the roots is outside
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(corpus.parent / "outside"))
    assert paths.is_allowed(corpus / "link.jsonl")


def test_ls_into_a_closed_pipe_ends_quietly(corpus):
    for i in range(3):
        service.submit(validate.load_spec(corpus / "ok.yaml").model_copy(update={"name": f"run {i}"}))
    env = {**os.environ, "GROVE_HOME": str(corpus), "PYTHONPATH": str(REPO)}
    r = subprocess.run(f"{sys.executable} -m engine.cli ls | head -1", shell=True, capture_output=True, text=True,
                       env=env, cwd=corpus, timeout=60)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


def test_show_prints_the_loss_of_a_short_run():
    from engine.cli import training_line, training_line_from_log

    final_only = [{"data": {"step": 20, "max_steps": 20, "train_runtime": 3.0, "train_loss": 2.41}}]
    assert training_line(final_only) == "mean training loss 2.410 over 20 steps (no step was logged)"
    assert training_line([]) is None
    assert training_line_from_log(Path("/nonexistent")) is None

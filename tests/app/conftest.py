"""Fixtures for the UI tests: a fresh GROVE_HOME per test with Olive's real pass catalog (built once per session in
a child process), a stand-in for the built demo (a Phi-3 config.json, a real tokenizer, its chat template; no
weights: the UI never loads them) and the lab's travel sample under an allowed root."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from engine import paths
from engine.models.tiny import CHAT_TEMPLATE, GEOMETRY, SPECIAL_TOKENS

REPO = Path(__file__).resolve().parents[2]
LAB_SAMPLE = (REPO.parent / "shared").resolve() / "data" / "travel_qa.jsonl"  # resolved, as the UI lists paths
MAIN = str(REPO / "app" / "main.py")
# Seconds one AppTest script run may take (AppTest.from_file/from_function(default_timeout=UI_TIMEOUT); every widget
# .run() and at.run() inherits it). AppTest's own default, 3 s, failed CI on a busy 2-core machine; tests/test_lint.py
# fails on an AppTest made without it. How fast a page is belongs to bench/, not to a timeout here.
UI_TIMEOUT = 120


@pytest.fixture(scope="session")
def catalog_json(grove_home: Path) -> Path:
    """Olive's pass catalog, built once per session (a child process imports Olive; ~10 s)."""
    from engine.olive import catalog

    catalog.load()
    return catalog.catalog_path()


def _tokenizer(texts: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(texts, trainer=trainer)
    tk.save(str(out / "tokenizer.json"))


def _fake_demo(home: Path) -> None:
    """What the UI reads of a built demo: config.json, tokenizer, chat template, the sample; the marker files."""
    d = home / "demo"
    (d / "model").mkdir(parents=True)
    shutil.copyfile(paths.DEMO_SAMPLE, d / "travel_sample.jsonl")
    cfg = {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "dtype": "float32",
        "vocab_size": 2048,
        "tie_word_embeddings": False,
        **GEOMETRY,
    }
    (d / "model" / "config.json").write_text(json.dumps(cfg))
    (d / "model" / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (d / "model" / "tokenizer_config.json").write_text(json.dumps({  # what engine.models.tiny saves
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "<|endoftext|>",
        "unk_token": "<unk>", "pad_token": "<pad>", "clean_up_tokenization_spaces": False}))
    rows = [json.loads(ln) for ln in paths.DEMO_SAMPLE.read_text().splitlines() if ln.strip()]
    _tokenizer([r["prompt"] + " " + r["response"] for r in rows], d / "model")
    (d / "model" / "model.safetensors").write_bytes(b"")
    (d / "demo.json").write_text(json.dumps({"model": str(d / "model"), "dataset": str(d / "travel_sample.jsonl")}))


@pytest.fixture
def ui_home(fresh_home: Path, catalog_json: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry with the catalog, a 'built' demo and the lab sample allowed."""
    import streamlit as st

    fresh_home.mkdir(parents=True, exist_ok=True)
    (fresh_home / "catalog").mkdir()
    shutil.copyfile(catalog_json, fresh_home / "catalog" / catalog_json.name)
    _fake_demo(fresh_home)
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(LAB_SAMPLE.parent))
    st.cache_data.clear()
    st.cache_resource.clear()
    return fresh_home


def lab_spec(home: Path, dataset: Path, **over: Any) -> dict[str, Any]:
    from engine.spec.recipes import lab_recipe

    spec = lab_recipe(str(home / "demo" / "model"), str(dataset))
    spec.update(over)
    return spec


def add_run(
    home: Path,
    name: str,
    status: str = "queued",
    *,
    events: list | None = None,
    candidates: list | None = None,
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A real run: submitted through engine.runs.submit, then moved through the registry's state machine."""
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.spec.schema import parse_spec

    reg = Registry()
    run = service.submit(parse_spec(lab_spec(home, home / "demo" / "travel_sample.jsonl", name=name)), reg=reg)
    if status == "queued":
        return run
    claimed = reg.claim("w-test", lambda r: [] if r["id"] == run["id"] else None)
    assert claimed and claimed["id"] == run["id"]
    t = time.time() - 120
    if events:
        reg.add_events(run["id"], [(t + dt, kind, data) for dt, kind, data in events])
    if candidates:
        reg.upsert_candidates(run["id"], candidates)
    if status == "running":
        reg.update_run(run["id"], stage="pass lora", progress=0.4, started_at=t)
    elif status == "succeeded":
        reg.transition(run["id"], "succeeded", expect=("running",), progress=1.0, exit_code=0)
    elif status == "failed":
        etype, msg = error or ("runner_died", "the runner exited with code 1 before finishing")
        reg.add_event(run["id"], "log_tail", {"text": "Traceback (most recent call last):\n  ...\n" + msg})
        reg.transition(run["id"], "failed", expect=("running",), error_type=etype, error_message=msg, exit_code=1)
    return reg.get_run(run["id"])

"""The demo recipe end to end: real worker, real runner, real Olive on the tiny model, real onnxruntime-genai."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engine.errors import DataError, SpecError
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .helpers import generate, make_worker, pid_alive, run_to_end, wait_for

pytestmark = pytest.mark.slow


def test_demo_recipe_succeeds_with_candidates_and_progress(demo_run):
    assert demo_run["status"] == "succeeded", demo_run["error_message"]
    reg = Registry()
    cands = reg.candidates(demo_run["id"])
    chains = sorted(" > ".join(c["pass_chain"]) for c in cands)
    assert chains == ["lora", "lora > modelbuilder", "lora > modelbuilder > extractadapters"]
    final = next(c for c in cands if c["is_output"])
    assert final["pass_chain"][-1] == "extractadapters"
    out = Path(final["path"])
    for f in ("model.onnx", "adapter_weights.onnx_adapter", "genai_config.json", "tokenizer.json"):
        assert (out / f).is_file(), f
    assert final["size_bytes"] > 1_000_000
    kinds = [e["kind"] for e in reg.events(demo_run["id"])]
    assert kinds.count("pass_finished") + kinds.count("pass_cached") == 3
    losses = [e["data"]["loss"] for e in reg.events(demo_run["id"], kinds=["train_step"]) if "loss" in e["data"]]
    assert len(losses) >= 5 and losses[-1] < losses[0]  # it learned
    assert "succeeded" in Path(demo_run["log_path"]).read_text()


def test_generates_with_and_without_the_adapter(demo_run):
    final = next(c for c in Registry().candidates(demo_run["id"]) if c["is_output"])
    questions = ["What should I see in Lisbon?", "How do I get around Tokyo?", "What food should I try in Mexico City?"]
    with_adapter = [generate(final["path"], "travel", q) for q in questions]
    base = [generate(final["path"], None, q) for q in questions]  # the int4 base, no adapter: must not crash
    assert sum(len(a.split()) for a in with_adapter) >= 10 and sum(len(a.split()) for a in base) >= 10
    assert with_adapter != base


def test_exported_config_is_what_ran(demo_run):
    exported = json.loads(service.export_config(demo_run["id"]))
    ran = json.loads((Path(demo_run["run_dir"]) / "olive_config.json").read_text())
    assert exported == ran
    assert exported["cache_dir"].endswith("cache") and exported["workflow_id"] == "grove"
    mb = exported["passes"]["modelbuilder"]
    assert mb["precision"] == "int4" and "/model/layers.0/attn/q_proj/lora_A/MatMul" in mb["int4_nodes_to_exclude"]


def test_second_launch_reuses_everything(demo_run, demo_spec):
    again = service.submit(demo_spec)
    t0 = time.perf_counter()
    done = run_to_end(again["id"])
    wall = time.perf_counter() - t0
    assert done["status"] == "succeeded"
    assert wall < 0.05 * demo_run["_wall"]
    reused = Registry().events(again["id"], kinds=["reused"])
    assert reused and reused[0]["data"]["from_run"] == demo_run["id"]
    final = next(c for c in Registry().candidates(again["id"]) if c["is_output"])
    assert final["path"].startswith(done["run_dir"]) and Path(final["path"], "model.onnx").is_file()


def test_cancel_during_training_then_identical_launch_succeeds(demo_run, grove_home):
    spec = recipes.demo_spec(max_steps=120)
    reg = Registry()
    run = service.submit(spec)
    w = make_worker()
    w.start()
    wait_for(lambda: reg.events(run["id"], kinds=["train_step"]), 120, w.tick, 0.2)
    pid = reg.get_run(run["id"])["pid"]
    t0 = time.monotonic()
    service.cancel(run["id"])
    wait_for(lambda: reg.get_run(run["id"])["status"] == "cancelled", 60, w.tick, 0.05)
    assert time.monotonic() - t0 < 5, "cancel: TERM, then SIGKILL after the grace (GROVE_CANCEL_GRACE_S)"
    wait_for(lambda: not pid_alive(pid), 60, w.tick)
    wait_for(lambda: not _group_alive(pid), 60, w.tick)  # the whole process group is gone
    assert not (Path(run["run_dir"]) / "tmp").exists()
    assert not list(Path("/tmp").glob(f"olive_tmp*{pid}*"))
    again = service.submit(spec)
    done = run_to_end(again["id"], timeout=900)  # 120 LoRA steps and the evaluation: minutes on a busy 2-core machine
    assert done["status"] == "succeeded", done["error_message"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_input_is_refused_before_queueing(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(tmp_path))  # tmp_path is outside GROVE_HOME (issue 12: roots)
    reg = Registry()
    before = len(reg.list_runs(limit=1000))
    d = recipes.lab_recipe(str(tmp_path / "no-model"), demo["dataset"])
    with pytest.raises(SpecError, match="model.name: model folder not found"):
        service.submit(parse_spec(d))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n')
    with pytest.raises(DataError, match=f"{bad} line 2"):
        service.submit(parse_spec(recipes.lab_recipe(demo["model"], str(bad))))
    assert len(reg.list_runs(limit=1000)) == before

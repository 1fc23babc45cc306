"""The evaluator on real models: the demo model (transformers) and its int4 ONNX candidate (onnxruntime-genai)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.evaluate import evaluator as ev
from engine.evaluate import fingerprint as fpm
from engine.evaluate.compare import comparability, pareto
from engine.evaluate.scores import rouge_l
from engine.runs.registry import Registry
from engine.spec.evaluation import EvalConfig
from engine.spec.metrics import METRICS, SPEED

pytestmark = pytest.mark.slow

TEMPLATE = "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>"


@pytest.fixture(scope="module")
def cfg(demo_run) -> EvalConfig:
    spec = json.loads(demo_run["spec"])
    data_dir = Path(demo_run["data_dir"])
    return EvalConfig(eval_path=str(data_dir / "eval.jsonl"), text_template=spec["dataset"]["text_template"],
                         data_key=data_dir.name, max_samples=20, generation_length=32, repeats=2)


@pytest.fixture(scope="module")
def onnx_folder(demo_run) -> str:
    return next(c for c in Registry().candidates(demo_run["id"]) if c["is_output"])["path"]


@pytest.fixture(scope="module")
def results(cfg, onnx_folder, demo) -> dict:
    return {
        "on": ev.evaluate(onnx_folder, cfg, adapter="adapter_weights"),
        "off": ev.evaluate(onnx_folder, cfg, adapter=None),
        "hf": ev.evaluate(demo["model"], cfg),
    }


def test_every_metric_is_measured_for_every_form(results):
    for name, r in results.items():
        assert not r.failed, (name, r.failed)
        assert set(r.metrics) == set(METRICS), name
        assert r.metrics["decode_tps"] > 0 and r.metrics["ttft_ms"] > 0
        assert r.metrics["latency_p90_ms"] >= r.metrics["latency_p50_ms"]
        assert 0 <= r.metrics["rouge_l"] <= 1 and r.metrics["perplexity"] > 1
        # every evaluated example is kept (bounded by max_samples), with its own scores
        assert len(r.samples) == r.fingerprint["eval_rows"] and all(s["reference"] for s in r.samples)
        assert [s["index"] for s in r.samples] == list(range(len(r.samples)))
        assert all(0 <= s["rouge_l"] <= 1 and s["exact_match"] in (0.0, 1.0) and s["loss"] > 0 for s in r.samples)
        assert sum(s["rouge_l"] for s in r.samples) / len(r.samples) == pytest.approx(r.metrics["rouge_l"])
    assert results["hf"].form == "transformers" and results["on"].form == "onnxruntime-genai"


def test_adapter_changes_quality_on_travel_questions(results):
    on, off = results["on"].metrics, results["off"].metrics
    assert on["loss"] != pytest.approx(off["loss"], abs=1e-4)
    assert [s["answer"] for s in results["on"].samples] != [s["answer"] for s in results["off"].samples]


def test_int4_is_smaller_and_faster_than_the_fp32_original(results):
    assert results["on"].metrics["size_mb"] < results["hf"].metrics["size_mb"] / 2
    assert results["off"].metrics["decode_tps"] > results["hf"].metrics["decode_tps"]


def test_quality_is_close_between_fp32_and_int4_base(results):
    # same weights family: int4 quantization moves loss, but not wildly
    assert abs(results["off"].metrics["loss"] - results["hf"].metrics["loss"]) < 1.0


def test_evaluation_is_stored_and_reused(cfg, onnx_folder):
    reg = Registry()
    first = ev.evaluate_cached(onnx_folder, cfg, adapter="adapter_weights", reg=reg)
    t0 = time.perf_counter()
    again = ev.evaluate_cached(onnx_folder, cfg, adapter="adapter_weights", reg=reg)
    assert again.reused and time.perf_counter() - t0 < 1.0
    assert again.metrics == pytest.approx(first.metrics)


def test_a_failing_metric_is_marked_with_its_reason(cfg, onnx_folder):
    import dataclasses

    bad = dataclasses.replace(cfg, prompt_length=100_000)  # longer than the model's context
    r = ev.evaluate(onnx_folder, bad, adapter=None)
    assert set(r.failed) == set(SPEED)
    assert "context length" in r.failed["decode_tps"]
    assert "rouge_l" in r.metrics and "size_mb" in r.metrics  # the rest is still measured


def test_one_repeat_slowed_by_another_process_moves_neither_speed_figure(cfg, onnx_folder):
    """Another process takes a core for a moment during one of the timed repeats (here: every step of the second
    repeat delayed 40 ms): the recorded decode tok/s and TTFT stay those of the undisturbed repeats."""
    import dataclasses

    three = dataclasses.replace(cfg, repeats=3, warmup=1)
    backend = ev.load_backend(Path(onnx_folder), "onnxruntime-genai", None, three)

    class Preempted:  # the real backend; the 2nd timed repeat (after the warm-up) loses 40 ms a step
        calls = 0
        context = backend.context
        encode = staticmethod(backend.encode)

        def timed(self, ids, n):
            Preempted.calls += 1
            t, steps = backend.timed(ids, n)
            if Preempted.calls == 3:
                time.sleep(0.04 * len(steps))
                return t + 0.04, [s + 0.04 for s in steps]
            return t, steps

    clean, hit = ev.EvalResult(onnx_folder, None, "onnxruntime-genai"), ev.EvalResult(onnx_folder, None, "onnxruntime-genai")
    ev._speed(backend, three, None, clean)
    ev._speed(Preempted(), three, None, hit)
    assert Preempted.calls == 4
    # all repeats' tokens over their total time would fall to a fraction (each step is a few ms on this model)
    assert hit.metrics["decode_tps"] > 0.6 * clean.metrics["decode_tps"], (hit.metrics, clean.metrics)
    assert hit.metrics["ttft_ms"] < clean.metrics["ttft_ms"] + 30, (hit.metrics, clean.metrics)
    assert fpm.fingerprint(three)["speed_estimator"] == "median of repeats"


def test_fingerprints_say_when_numbers_are_not_comparable(cfg):
    import dataclasses

    other = dataclasses.replace(cfg, prompt_length=64)
    a, b = fpm.fingerprint(cfg), fpm.fingerprint(other)
    assert fpm.fingerprint_diff(a, b) == ["prompt_length"]
    ida, idb = fpm.fingerprint_id(a), fpm.fingerprint_id(b)
    cands = [{"metrics": {"rouge_l": 0.1}, "fingerprint_id": ida}, {"metrics": {"rouge_l": 0.2}, "fingerprint_id": idb}]
    ok, msg = comparability(cands, {ida: a, idb: b})
    assert not ok and "prompt_length" in msg
    assert comparability(cands[:1], {ida: a}) == (True, "")


def test_pareto_front():
    cands = [{"metrics": {"decode_tps": t, "rouge_l": q}} for t, q in [(10, 0.5), (20, 0.4), (5, 0.3), (20, 0.5)]]
    assert pareto(cands, "decode_tps", "rouge_l") == {3}
    assert pareto(cands[:3], "decode_tps", "rouge_l") == {0, 1}


def test_rouge_l():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("a b c d", "a c") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert rouge_l("", "x") == 0.0


def test_batched_answers_are_the_one_at_a_time_answers(cfg, demo):
    """The PyTorch evaluator generates its held-out answers in left-padded batches: each equals the answer of its
    prompt generated alone (the batch only saves time)."""
    b = ev.HfBackend(Path(demo["model"]), None, cfg)
    rows = ev.load_rows(cfg)[:10]
    prompts = [b.encode(ev.render(cfg, r, None)[0]) for r in rows]
    assert len({len(p) for p in prompts}) > 1  # different lengths: the padding is exercised
    assert b.greedy_many(prompts, 24) == [b.greedy(p, 24) for p in prompts]


def test_intermediate_models_can_be_left_unmeasured(tmp_path):
    """evaluation.evaluate_intermediate_models: false leaves a run's intermediate PyTorch models alone and still
    measures its outputs (and their adapter-off side)."""
    from engine.evaluate.candidates import NO_ADAPTER_SUFFIX, missing

    lora, out = tmp_path / "lora", tmp_path / "out"
    lora.mkdir()
    out.mkdir()
    (out / "adapter_weights.onnx_adapter").write_bytes(b"x")
    cands = [{"model_id": "m1", "path": str(lora), "model_type": "hfmodel", "is_output": 0, "metrics": {}},
             {"model_id": "m2", "path": str(out), "model_type": "onnxmodel", "is_output": 1, "metrics": {"loss": 1.0}}]
    assert [t[2] for t in missing(cands)] == ["m1", "m2" + NO_ADAPTER_SUFFIX]
    assert [t[2] for t in missing(cands, intermediates=False)] == ["m2" + NO_ADAPTER_SUFFIX]


def test_every_measured_candidate_carries_its_own_evaluation_and_olive_never_reuses_other_settings(demo):
    """Lab runs on one model. Two with one evaluation setting: every measured candidate, including the second run's
    input model whose numbers Olive takes from its own cache, carries its evaluation (fingerprint and kept examples),
    the base and the same folder with the LoRA adapter are two evaluations, and Compare calls them comparable. A third
    with more examples: Olive measures again instead of handing back the first run's numbers (its cache keys a
    model's evaluation by model id alone), and Compare says which setting differs."""
    from engine.runs import submit as service
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    from .helpers import run_to_end

    runs = []
    for steps, samples in ((3, 4), (4, 4), (3, 5)):
        # lora_r 4: no other test's LoRA, so neither reuses the other's cached pass
        d = recipes.lab_recipe(demo["model"], demo["dataset"], name=f"evaluations joined {steps}/{samples}",
                               max_steps=steps, lora_r=4)
        d["evaluation"] = {"enabled": True, "max_eval_samples": samples, "prompt_length": 32, "generation_length": 8,
                           "repeats": 1, "metrics": [{"name": "rouge_l", "priority": 1}, {"name": "decode_tps", "priority": 2}]}
        done = run_to_end(service.submit(parse_spec(d))["id"], timeout=600)
        assert done["status"] == "succeeded", done["error_message"]
        runs.append(Registry().candidates(done["id"]))
    for cands in runs:
        measured = [c for c in cands if c["metrics"]]
        assert {c["from_pass"] for c in measured} >= {"input", "lora", "extractadapters"}
        assert all(c["fingerprint_id"] and c["eval_key"] for c in measured), [(c["from_pass"], c["eval_key"]) for c in measured]
        assert len({c["eval_key"] for c in measured}) == len(measured)  # base and base + LoRA are not one evaluation
        assert Registry().get_evaluation(next(c["eval_key"] for c in measured if c["from_pass"] == "lora"))["adapter"]
        for c in measured:  # the numbers shown are the ones its evaluation measured
            assert c["metrics"]["rouge_l"] == pytest.approx(Registry().get_evaluation(c["eval_key"])["metrics"]["rouge_l"])
    first, second, third = (next(c for c in cands if c["from_pass"] == "input") for cands in runs)
    assert second["eval_key"] == first["eval_key"] and second["path"] == demo["model"]
    assert third["fingerprint_id"] != first["fingerprint_id"]
    assert len(Registry().get_evaluation(third["eval_key"])["samples"]) == 5
    fps = Registry().fingerprints()
    assert comparability(runs[0] + runs[1], fps) == (True, "")
    ok, why = comparability(runs[0] + runs[2], fps)
    assert not ok and "eval_rows" in why  # 5 held-out examples against 4

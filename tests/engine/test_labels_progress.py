"""What a newcomer reads (issue 20): candidates named by their build and run, the candidate Chat opens on and why,
metrics with units, unmeasured candidates explained, the run's progress counting its evaluations, and the loss of a
resumed training. Real registry files; the events are written the way the runner and the evaluator write them."""

from __future__ import annotations

import json
import time

import pytest

from engine.evaluate import progress as eval_progress
from engine.runs.progress import EventSink, planned_evaluations
from engine.runs.registry import Registry
from engine.views import candidates as cand_views
from engine.views import comparison, labels
from engine.views import format as fmt
from engine.views import runs as views

INT4 = {"modelbuilder": {"precision": "int4"}}


def _demo_candidates(run1: str, run2: str) -> list[dict]:
    """The demo's candidates as the runner records them: run 1 (LoRA -> int4 + adapter), run 2 (merged int4)."""
    return [
        {"id": 1, "run_id": run1, "model_id": "in", "pass_chain": [], "model_type": "HfModel",
         "metrics": {"loss": 4.02, "decode_tps": 30.1}},
        {"id": 2, "run_id": run1, "model_id": "lora1", "pass_chain": ["lora"], "model_type": "HfModel",
         "adapter_path": "/c/lora1/adapter", "metrics": {"loss": 3.31, "decode_tps": 25.2}},
        {"id": 3, "run_id": run1, "model_id": "x1", "pass_chain": ["lora", "modelbuilder", "extractadapters"],
         "model_type": "ONNXModel", "pass_params": INT4, "adapter_path": "/c/x1/adapter_weights.onnx_adapter",
         "is_output": 1, "metrics": {"loss": 3.36, "decode_tps": 120.4}},
        {"id": 4, "run_id": run1, "model_id": "x1-no-adapter",
         "pass_chain": ["lora", "modelbuilder", "extractadapters", "adapter off"], "model_type": "ONNXModel",
         "pass_params": INT4, "metrics": {"loss": 4.05, "decode_tps": 131.0}},
        {"id": 5, "run_id": run2, "model_id": "lora1", "pass_chain": ["lora"], "model_type": "HfModel",
         "adapter_path": "/c/lora1/adapter", "metrics": {}},
        {"id": 6, "run_id": run2, "model_id": "merged", "pass_chain": ["lora", "mergeadapterweights"],
         "model_type": "HfModel", "metrics": {}},
        {"id": 7, "run_id": run2, "model_id": "m4", "pass_chain": ["lora", "mergeadapterweights", "modelbuilder"],
         "model_type": "ONNXModel", "pass_params": INT4, "is_output": 1, "metrics": {"loss": 3.34, "decode_tps": 135.8499}},
    ]


def test_candidates_are_named_by_build_and_run():
    r1, r2 = "r20261206-101500-3f2a9c1d", "r20261206-101502-77e0b1aa"  # one day: the ids share their date
    names = {r1: "demo: travel LoRA -> int4 ONNX + adapter", r2: "demo: travel LoRA merged -> int4 ONNX"}
    builds = [labels.build(c) for c in _demo_candidates(r1, r2)]
    assert builds == ["base PyTorch", "PyTorch + LoRA", "int4 + adapter", "int4, adapter off", "PyTorch + LoRA",
                      "merged PyTorch", "merged int4"]
    a = labels.label({"id": 2, "run_id": r1, "pass_chain": ["lora"], "model_type": "HfModel", "adapter_path": "/a"}, "same")
    b = labels.label({"id": 5, "run_id": r2, "pass_chain": ["lora"], "model_type": "HfModel", "adapter_path": "/a"}, "same")
    assert a == "PyTorch + LoRA · same · 3f2a9c1d #2" and b == "PyTorch + LoRA · same · 77e0b1aa #5"
    assert labels.run_label(names[r1], r1).endswith("· 3f2a9c1d")


def test_the_candidate_opened_is_olives_best_with_the_best_quality_and_says_why():
    cands = _demo_candidates("r1-aaaa", "r2-bbbb")
    i, why = labels.best(cands)
    assert cands[i]["id"] == 7  # Olive's best of two runs, the lower loss; not the PyTorch LoRA (slowest)
    assert "Olive's best" in why and "loss (3.340 nats)" in why and "135.8 tok/s" in why
    no_outputs = [{**c, "is_output": 0, "pareto": int(c["id"] in (2, 4))} for c in cands]
    i, why = labels.best(no_outputs)
    assert no_outputs[i]["id"] == 2 and "Pareto front" in why
    # ranked by the quality metric the runs rank by (their specs' priorities), else the first of QUALITY measured
    scored = [{**c, "metrics": {**c["metrics"], "rouge_l": 0.5 if c["id"] == 3 else 0.1}} for c in cands]
    assert scored[labels.best(scored)[0]]["id"] == 3
    spec = json.dumps({"evaluation": {"metrics": [{"name": "decode_tps", "priority": 1}, {"name": "loss", "priority": 2}]}})
    assert scored[labels.best(scored, {"r1-aaaa": spec, "r2-bbbb": spec})[0]]["id"] == 7
    i, why = labels.best([{**c, "metrics": {}} for c in cands])
    assert i == 0 and "No candidate has been measured" in why


def test_metrics_read_with_units_and_sensible_digits():
    assert fmt.metric("decode_tps", 135.8499) == "135.8 tok/s"
    assert fmt.metric("rouge_l", 0.38361234) == "0.384"
    assert fmt.metric("loss", 3.31234) == "3.312 nats"
    assert fmt.metric("ttft_ms", 12.345) == "12.3 ms" and fmt.metric("size_mb", 1234.56) == "1,234.6 MB"
    assert fmt.metric("loss", None) == "—" and fmt.metric("loss", float("nan")) == "—"
    assert fmt.metric_format("decode_tps") == "%.1f tok/s" and fmt.metric_format("rouge_l") == "%.3f"


def test_unmeasured_candidates_say_why_never_none(fresh_home):
    reg = Registry()
    runs = []
    for name, ev in (("first", {"enabled": True}), ("merged", {"enabled": True, "evaluate_intermediate_models": False})):
        r = reg.create_run(spec_json=json.dumps({"evaluation": ev}), spec_hash=name, name=name, olive_config="{}",
                           gpus_wanted=0)
        runs.append(r["id"])
    cands = _demo_candidates(*runs)
    for c in cands:
        reg.upsert_candidates(c["run_id"], [{k: v for k, v in c.items() if k not in ("id", "run_id")}])
    cmp = comparison.Comparison.read(reg, [runs[1]], {runs[1]: "merged"})  # Compare with the second run alone
    assert cmp.builds == ["PyTorch + LoRA", "merged PyTorch", "merged int4"]
    mids = [m for m, ok in zip(cmp.model_ids, cmp.measured(), strict=True) if not ok]
    rows = cand_views.not_measured(cmp, reg.run_specs([runs[1]]), reg.measured_twins(mids))
    first_lora = next(c["id"] for c in reg.candidates(runs[0]) if c["model_id"] == "lora1")
    assert [r["measured"] for r in rows] == [
        f"not measured (same as #{first_lora} in run first · {labels.short_id(runs[0])})",
        "not measured (the run measures only its outputs (evaluation.evaluate_intermediate_models is off))",
    ]
    table = comparison.table(cmp, cmp.measured(), cmp.measured(), cmp.measured())
    assert list(table["candidate"]) == cmp.builds and table["decode_tps"].iloc[2] == 135.8499  # the CSV: every digit


def _running(reg: Registry, spec: dict, passes: list[str]) -> dict:
    r = reg.create_run(spec_json=json.dumps(spec), spec_hash=str(time.time_ns()), name="progress",
                       olive_config=json.dumps({"passes": {p: {} for p in passes}}), gpus_wanted=0)
    reg.claim("w", lambda r: [])
    reg.update_run(r["id"], started_at=time.time() - 100)
    return reg.get_run(r["id"])


def test_progress_and_eta_count_the_evaluations_and_name_the_stage(fresh_home, monkeypatch):
    """A lab run (3 passes, evaluation on): Olive evaluates the input and the output, then 3 more are measured.
    The evaluations write their events as the evaluator's processes do (engine.evaluate.progress)."""
    reg = Registry()
    spec = {"evaluation": {"enabled": True}, "passes": [{"type": "LoRA"}, {"type": "ModelBuilder"},
                                                        {"type": "ExtractAdapters"}]}
    assert planned_evaluations(spec, 3) == 5
    run = _running(reg, spec, ["lora", "modelbuilder", "extractadapters"])
    monkeypatch.setenv(eval_progress.RUN_ID_ENV, run["id"])
    sink = EventSink(reg, run["id"])
    sink.n_passes, sink.n_evals = 3, planned_evaluations(spec, 3)

    def evaluation(label: str, answers: int = 20) -> None:
        eval_progress.emit("eval_started", model=f"/c/{label}", label=label)
        report = eval_progress.Reporter(f"/c/{label}", None, every_s=0)
        for k in range(answers + 1):
            report("answers", k, answers)
        eval_progress.emit("eval_finished", model=f"/c/{label}", seconds=1.0)

    evaluation("input")
    for n in range(3):  # the three passes
        sink.passes_done = n + 1
        sink.update()
    evaluation("output")
    sink.absorb()
    assert sink.progress == pytest.approx(5 / 8)  # 3 passes + 2 of 5 evaluations: not 99 %
    eval_progress.emit("measure_started", candidates=3)
    evaluation("lora")
    eval_progress.emit("eval_started", model="/c/int4", label="int4")
    eval_progress.Reporter("/c/int4", None, every_s=0)("answers", 2, 40)
    sink.absorb()
    assert sink.stage == "measuring 3 candidates (2 of 3): 2 of 40 answers"
    assert 0.75 < sink.progress < 0.8
    sink.flush()
    run = reg.get_run(run["id"])
    eta = views.eta(run)
    assert eta is not None and eta > 20  # about a quarter of the work is left, not "1.2 s"
    tl = views.timeline(reg, run)
    evals = [s for s in tl if s["type"] == views.EVALUATOR]
    assert [(s["pass"], s["state"]) for s in evals] == [
        ("evaluate", "measured"), ("evaluate", "measured"), ("measure", "measured"), ("measure", "running"),
        ("measurements", "planned")]
    assert evals[-2]["detail"] == "int4: 2 of 40 answers" and evals[-1]["detail"] == "about 1 more candidate(s) to measure"


def _step(step: int, loss: float, **kw: float) -> dict:
    return {"kind": "train_step", "data": {"step": step, "max_steps": 40, "loss": loss, **kw}}


def test_a_resumed_training_keeps_its_curve_and_reports_a_true_mean():
    """Killed at step 34, resumed from the step-32 checkpoint: the points up to 32 stay, 33-34 are the resumed
    attempt's, and the mean covers steps 1-40."""
    before = [_step(s, 3.0 - s * 0.02) for s in range(2, 35, 2)]  # logged every 2 steps, killed after step 34
    after = [_step(s, 2.1) for s in range(34, 41, 2)]
    final = {"kind": "train_step", "data": {"step": 40, "max_steps": 40, "trainer_train_loss": 0.42,
                                            "mean_loss": 2.1, "mean_from_step": 33}}
    events = [*before, {"kind": "resumed", "data": {"step": 32}}, *after, final]
    pts = views.loss_points(events)
    assert [p["step"] for p in pts] == list(range(2, 41, 2)) and pts[-4]["loss"] == 2.1  # 34: the resumed one
    line = views.training_summary(events)
    want = (sum(3.0 - s * 0.02 for s in range(2, 33, 2)) * 2 + 2.1 * 8) / 40
    assert line.endswith(f"mean {want:.3f} over steps 1-40; resumed from step 32, the points before it kept")
    # nothing logged before the crash: the Trainer's mean corrected to the steps it ran, or nothing
    assert views.training_summary([{"kind": "resumed", "data": {"step": 32}}, final]) == (
        "mean training loss 2.100 over steps 33-40 (resumed from step 32; no step was logged before it)")
    old = {"kind": "train_step", "data": {"step": 40, "train_loss": 0.424}}
    assert "no training loss to report" in views.training_summary([{"kind": "resumed", "data": {"step": 32}}, old])
    assert views.training_summary([old]) == "mean training loss 0.424 over 40 steps (no step was logged)"

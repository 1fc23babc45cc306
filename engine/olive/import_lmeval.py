"""Olive's ``LMEvaluator`` (lm-evaluation-harness tasks) imported as Grove's benchmark tasks.

An Olive config such as the lm-eval recipes of ``microsoft/olive-recipes``::

    "evaluators": {"evaluator": {"type": "LMEvaluator", "tasks": ["hellaswag"], "limit": 100, "batch_size": 16}}

becomes ``evaluation.benchmarks: [{task: hellaswag, limit: 100}]`` of the draft (evaluation switched on, every
benchmark's accuracy a metric ``acc:<task>``). What Grove decides itself is named in the notes: the batch size
(Grove batches PyTorch models itself; onnxruntime-genai runs one sequence at a time), ``model_class`` (Grove picks
the lm-eval model from the candidate's form), ``max_length`` and device settings (the run's target). Olive's
``LMEvaluator`` has one ``limit`` for all its tasks; a config without one gets ``DEFAULT_LIMIT`` and a note, because
a benchmark without a limit could run for hours.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LIMIT = 100
HANDLED = ("type", "tasks", "limit", "num_fewshot")
DECIDED_BY_GROVE = {
    "batch_size": "Grove batches PyTorch models itself (onnxruntime-genai runs one sequence at a time)",
    "model_class": "Grove picks lm-eval's model from each candidate's form (PyTorch, onnxruntime-genai)",
    "max_length": "the model's own context length is used",
    "execution_provider": "the run's target decides it",
    "provider_options": "the run's target decides it",
    "device": "the run's target decides it",
    "bootstrap_iters": "Grove reports lm-eval's standard error of accuracy",
}


def is_lm_evaluator(ev: Any) -> bool:
    return isinstance(ev, dict) and str(ev.get("type") or "") == "LMEvaluator"


def import_lm_evaluators(cfg: dict[str, Any], draft: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Map every ``LMEvaluator`` of ``cfg["evaluators"]`` (and an inline ``cfg["evaluator"]``) onto ``draft``'s
    ``evaluation.benchmarks``. Returns ``(notes, names of the evaluators mapped)``; the caller notes the others."""
    evs: dict[str, Any] = {}
    if isinstance(cfg.get("evaluators"), dict):
        evs.update(cfg["evaluators"])
    if isinstance(cfg.get("evaluator"), dict):
        evs["evaluator"] = cfg["evaluator"]
    notes: list[str] = []
    mapped: list[str] = []
    bench: list[dict[str, Any]] = list(((draft.get("evaluation") or {}).get("benchmarks")) or [])
    for name, ev in evs.items():
        if not is_lm_evaluator(ev):
            continue
        mapped.append(name)
        where = f"evaluators.{name}"
        tasks = ev.get("tasks")
        if isinstance(tasks, str):
            tasks = [tasks]
        if not isinstance(tasks, list) or not tasks:
            notes.append(f"{where}: an LMEvaluator without tasks: nothing to import")
            continue
        limit = ev.get("limit")
        if isinstance(limit, float) and 0 < limit < 1:
            notes.append(f"{where}.limit {limit} is a fraction of each task; Grove asks for a number of examples: "
                         f"{DEFAULT_LIMIT} used, change it in the Evaluation section")
            limit = DEFAULT_LIMIT
        elif isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0:
            notes.append(f"{where}: no limit given; {DEFAULT_LIMIT} examples per task used (without one a task "
                         "runs on all its examples, for hours on a large one); change it in the Evaluation section")
            limit = DEFAULT_LIMIT
        shots = ev.get("num_fewshot", 0)
        shots = shots if isinstance(shots, int) and not isinstance(shots, bool) and shots >= 0 else 0
        for t in tasks:
            if not isinstance(t, str) or not t.strip():
                notes.append(f"{where}.tasks: {t!r} is not a task name: dropped")
                continue
            if t == "size_on_disk":
                notes.append(f"{where}.tasks: size_on_disk is measured by Grove for every candidate (size_mb)")
                continue
            if any(b["task"] == t for b in bench):
                notes.append(f"{where}.tasks: {t} listed twice: kept once")
                continue
            bench.append({"task": t, "limit": int(limit), "num_fewshot": shots, "include_path": None})
        for k in sorted(set(ev) - set(HANDLED)):
            why = DECIDED_BY_GROVE.get(k, "not a setting Grove reads")
            notes.append(f"{where}.{k} not imported: {why}")
    if bench:
        ev = dict(draft.get("evaluation") or {})
        ev["enabled"] = True
        ev.setdefault("metrics", [])
        ev["benchmarks"] = bench
        draft["evaluation"] = ev
        notes.append("LMEvaluator tasks imported as benchmarks: " + ", ".join(f"{b['task']} (limit {b['limit']})" for b in bench)
                     + "; lm-eval's own tasks read their data from the Hugging Face hub when the run starts")
    return notes, mapped

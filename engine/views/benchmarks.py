"""Benchmark tasks on the Workflow page: what they will cost before launch, and the local travel task to add.

The cost is examples × candidates: each task's limit, summed, times the candidates the run will measure (the input
model, each pass's output unless only outputs are evaluated, the adapter-off side of an ONNX model with its adapter
extracted, times the search's combinations), and an estimate in seconds from the measured cost per example
(``engine.evaluate.benchmarks.SECONDS_PER_EXAMPLE``, docs/benchmarks.md). Results already in the registry for the
same candidate and task are not paid again: the estimate is the most a launch costs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.evaluate.benchmarks import cost


def expected_candidates(spec: dict[str, Any]) -> int:
    """About how many candidates a run of ``spec`` (a draft or RunSpec dict) measures."""
    ev = spec.get("evaluation") or {}
    passes = spec.get("passes") or []
    combos = 1
    for p in passes:
        for values in (p.get("search") or {}).values():
            combos *= max(1, len(values or []))
    if spec.get("search") and (spec["search"] or {}).get("max_samples"):
        combos = min(combos, int(spec["search"]["max_samples"]))
    extracts = any(p.get("type") == "ExtractAdapters" for p in passes)
    # ExtractAdapters rewrites the ONNX model before it: one candidate for the two, plus its adapter-off side
    per_flow = (len(passes) - extracts) if ev.get("evaluate_intermediate_models", True) else 1
    per_flow += extracts
    return (1 if ev.get("evaluate_input_model", True) else 0) + max(1, per_flow) * combos


def cost_line(spec: dict[str, Any]) -> str | None:
    """One sentence for the page: tasks, examples × candidates, estimated time (None without benchmarks)."""
    bench = ((spec.get("evaluation") or {}).get("benchmarks")) or []
    bench = [b for b in bench if isinstance(b, dict) and isinstance(b.get("limit"), int)]
    if not bench:
        return None
    c = cost(bench, expected_candidates(spec))
    minutes = c["estimated_s"] / 60
    took = f"about {math.ceil(minutes)} min" if minutes >= 1 else f"about {math.ceil(c['estimated_s'])} s"
    return (f"Benchmarks: {c['tasks']} task(s), {c['examples_per_candidate']} examples × about {c['candidates']} "
            f"candidates = {c['examples']} examples, {took} on a 2-core CPU with a 135M model (more for a larger "
            "model; a group task such as mmlu runs its limit on each subtask). Results already measured for the same "
            "candidate and task are reused.")


def travel_task(out_dir: Path | None = None) -> dict[str, Any]:
    """The local travel multiple-choice task (engine.data.benchmark_task), written if needed, as a benchmark entry."""
    from engine.data.benchmark_task import TRAVEL_TASK, build_travel_mc

    y = build_travel_mc(out_dir)
    return {"task": TRAVEL_TASK, "limit": 100, "num_fewshot": 0, "include_path": str(y.parent)}

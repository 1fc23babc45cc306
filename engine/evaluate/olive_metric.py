"""Olive user script: Grove's evaluator as one Olive custom metric, so Olive's search, goals and Pareto flags use
exactly the numbers Grove shows. Olive calls ``evaluate(model, device, execution_providers, config=...)`` for every
model it evaluates; each result is also stored in the registry and reused for the same model and settings."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from engine.evaluate.evaluator import evaluate_cached
from engine.olive.footprint import evaluation_adapter
from engine.runs import devices
from engine.spec.evaluation import EvalConfig
from engine.spec.metrics import METRICS, benchmark_metric, stderr_metric

METRIC_NAME = "grove"
RUN_ID_ENV = "GROVE_RUN_ID"  # set by the runner: the run whose workflow asks for the evaluation


def locate(model: Any) -> tuple[str, str | None]:
    """(model folder, adapter) of an Olive model handler: a PEFT folder for HF models, the adapter name for ONNX."""
    adapter_path = getattr(model, "adapter_path", None)
    if adapter_path is not None or type(model).__name__.startswith("Hf"):
        return str(getattr(model, "model_path", None) or model.model_name_or_path), adapter_path
    path = Path(model.model_path)
    folder = path if path.is_dir() else path.parent
    return str(folder), evaluation_adapter(type(model).__name__, folder, None)


def worst(name: str) -> float:
    return -math.inf if METRICS[name]["higher_is_better"] else math.inf


def evaluate(model: Any, device: Any = None, execution_providers: Any = None, config: dict | None = None) -> dict[str, float]:
    cfg = EvalConfig(**(config or {}))
    folder, adapter = locate(model)
    with devices.run_paused():  # the runner only waits for its evaluation: the device is the evaluation's meanwhile
        res = evaluate_cached(folder, cfg, adapter=adapter, run_id=os.environ.get(RUN_ID_ENV))
    # a failed metric gets the worst value: it can never meet a goal or win a comparison (a speed metric deferred until
    # the device is free too, for Olive's own goals; the run's candidates leave it out: "speed pending")
    names = [*METRICS, *(benchmark_metric(b["task"]) for b in cfg.benchmarks or ())]
    out = {m: float(res.metrics[m]) if m in res.metrics and m not in res.failed else worst(m) for m in names}
    for b in cfg.benchmarks or ():  # the standard errors Olive records beside the accuracies (never ranked)
        se = stderr_metric(b["task"])
        out[se] = float(res.metrics[se]) if se in res.metrics else math.inf
    return out

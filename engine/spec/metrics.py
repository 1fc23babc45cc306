"""What Grove measures: each metric's direction, unit and meaning, and which are quality and which speed.
One definition for run specs (metric names and goals), the evaluator, comparison and the pages."""

from __future__ import annotations

from typing import Any

BENCHMARK_PREFIX = "acc:"  # "acc:<task>": accuracy on an lm-eval task (engine.evaluate.benchmarks)
STDERR_PREFIX = "acc_stderr:"  # "acc_stderr:<task>": its standard error, stored beside it


class _Metrics(dict):
    """The metric catalogue. Besides the fixed metrics it knows one benchmark metric per lm-eval task by its name,
    ``acc:<task>`` (accuracy, higher is better, with ``acc_stderr:<task>`` beside it), so every ``METRICS[name]``
    lookup (directions, goals, Pareto fronts) works for benchmark tasks too. Iterating lists the fixed metrics only."""

    def __missing__(self, name: str) -> dict[str, Any]:
        task = benchmark_task(name)
        if task is None:
            raise KeyError(name)
        return {"higher_is_better": True, "unit": "", "what": f"accuracy on the lm-eval task {task}",
                "benchmark": task}

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or (isinstance(name, str) and benchmark_task(name) is not None)


def benchmark_metric(task: str) -> str:
    """The metric name of a benchmark task's accuracy."""
    return BENCHMARK_PREFIX + task


def stderr_metric(task: str) -> str:
    return STDERR_PREFIX + task


def benchmark_task(name: str) -> str | None:
    """The task a benchmark metric name measures (None for any other name)."""
    if isinstance(name, str) and name.startswith(BENCHMARK_PREFIX) and len(name) > len(BENCHMARK_PREFIX):
        return name[len(BENCHMARK_PREFIX):]
    return None


def stderr_of(name: str) -> str | None:
    """The name of the metric that holds ``name``'s standard error (benchmark metrics only)."""
    task = benchmark_task(name)
    return stderr_metric(task) if task else None


def is_quality(name: str) -> bool:
    return name in QUALITY or benchmark_task(name) is not None


def quality_names(measured: list[str]) -> list[str]:
    """The quality metrics among ``measured``, for a chart's quality axis: benchmark accuracies first (the number
    that says what quantization cost the model in general), then the held-out split's."""
    return [n for n in measured if benchmark_task(n)] + [q for q in QUALITY if q in measured]


METRICS: dict[str, dict[str, Any]] = _Metrics({
    "rouge_l": {"higher_is_better": True, "unit": "", "what": "ROUGE-L F1 of greedy answers vs the references"},
    "exact_match": {"higher_is_better": True, "unit": "", "what": "share of greedy answers equal to the reference"},
    "loss": {"higher_is_better": False, "unit": "nats", "what": "mean cross-entropy on response tokens"},
    "perplexity": {"higher_is_better": False, "unit": "", "what": "exp(loss)"},
    "ttft_ms": {"higher_is_better": False, "unit": "ms", "what": "time to first token"},
    "decode_tps": {"higher_is_better": True, "unit": "tok/s", "what": "decode tokens per second"},
    "latency_p50_ms": {"higher_is_better": False, "unit": "ms", "what": "per-token decode latency, median"},
    "latency_p90_ms": {"higher_is_better": False, "unit": "ms", "what": "per-token decode latency, 90th percentile"},
    "size_mb": {"higher_is_better": False, "unit": "MB", "what": "size on disk of everything needed to run it"},
    "peak_memory_mb": {"higher_is_better": False, "unit": "MB", "what": "peak process RSS (CPU) or device memory (GPU)"},
})
QUALITY = ("rouge_l", "exact_match", "loss", "perplexity")
SPEED = ("ttft_ms", "decode_tps", "latency_p50_ms", "latency_p90_ms")

"""What Grove measures: each metric's direction, unit and meaning, and which are quality and which speed.
One definition for run specs (metric names and goals), the evaluator, comparison and the pages."""

from __future__ import annotations

from typing import Any

METRICS: dict[str, dict[str, Any]] = {
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
}
QUALITY = ("rouge_l", "exact_match", "loss", "perplexity")
SPEED = ("ttft_ms", "decode_tps", "latency_p50_ms", "latency_p90_ms")

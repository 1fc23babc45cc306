"""How numbers read on the pages and on the command line: sizes, durations, memory estimates."""

from __future__ import annotations


def human_size(n: float | None, empty: str = "—") -> str:
    """Bytes as ``512 B``, ``1.5 KB`` ... ``2.0 TB``; ``empty`` for no size (the CLI passes ``"-"``)."""
    if not n:
        return empty
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def estimate_gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


# -- metrics --------------------------------------------------------------------------------------------------------
# Digits a metric is worth reading to, and its unit (engine.spec.metrics): scores to 3 decimals, rates and times to
# 0.1, sizes to 0.1 MB. The CSV export keeps every digit; only what is shown is rounded.
METRIC_DIGITS = {"rouge_l": 3, "exact_match": 3, "loss": 3, "perplexity": 2, "ttft_ms": 1, "decode_tps": 1,
                 "latency_p50_ms": 2, "latency_p90_ms": 2, "size_mb": 1, "peak_memory_mb": 0}


def metric_unit(name: str) -> str:
    from engine.spec.metrics import METRICS

    return (METRICS.get(name) or {}).get("unit", "")


def metric(name: str, value: object, empty: str = "—") -> str:
    """One metric value as the pages show it: ``135.8 tok/s``, ``0.384``, ``3.312 nats``, ``12.4 MB``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return empty
    if value != value:  # NaN: not measured
        return empty
    if value in (float("inf"), float("-inf")):
        return "failed"
    digits = METRIC_DIGITS.get(name)
    text = f"{value:,.{digits}f}" if digits is not None else f"{value:.4g}"
    unit = metric_unit(name)
    return f"{text} {unit}" if unit else text


def metric_format(name: str) -> str:
    """The printf format of a metric's table column (``%.1f tok/s``): the numbers stay numbers, so a column sorts."""
    digits = METRIC_DIGITS.get(name)
    unit = metric_unit(name).replace("%", "%%")
    return (f"%.{digits}f" if digits is not None else "%.4g") + (f" {unit}" if unit else "")

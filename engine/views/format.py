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

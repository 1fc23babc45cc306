"""A run's log file: its last lines as the user reads them (progress bars collapsed to their last state)."""

from __future__ import annotations

from pathlib import Path


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # progress bars rewrite one line with \r: keep the last state of each line
    clean = [ln.split("\r")[-1] for ln in data.splitlines()]
    return "\n".join(clean[-lines:])


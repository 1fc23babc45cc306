"""Links between pages without importing the router script."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def path(file: str) -> Path:
    return ROOT / "pages" / file

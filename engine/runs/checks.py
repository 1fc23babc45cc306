"""The model-folder and GPU checks that both ``submit`` (raising) and the pages' pre-flight (findings) run.

Each check says what is wrong as a short code; the caller words it for its reader (an exception for the CLI and
``submit``, a finding with a fix for the Workflow page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from engine import machine


def model_folder_problem(p: Path) -> Optional[str]:
    """What is wrong with a local model folder: "missing", "file" (not a folder), "no_config", or None."""
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    if not (p / "config.json").is_file():
        return "no_config"
    return None


def gpus_short(want: int, gpus_available: Optional[int] = None) -> Optional[int]:
    """None when ``want`` GPUs are there (or none are wanted); else how many this machine has (detected when
    ``gpus_available`` is None)."""
    if want <= 0:
        return None
    if gpus_available is None:
        gpus_available = len(machine.detect_gpus())
    return gpus_available if want > gpus_available else None

"""What every part of the UI's door shares: the home folder the caches are keyed by, the registry, clearing the caches
after a write, the machine (GPUs), the process warm-up, and the pure formatting helpers the components use."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import streamlit as st

from engine import machine as machine_mod
from engine import paths
from engine.runs.registry import Registry
from engine.views import charts
from engine.views import format as fmt

LIVE_TTL = 2
TTL = 30


def home() -> str:
    return str(paths.home())


@st.cache_resource(show_spinner=False)
def _registry(db: str) -> Registry:
    return Registry(Path(db))


def registry() -> Registry:
    return _registry(str(paths.db_path()))


def clear() -> None:
    st.cache_data.clear()


@st.cache_resource(show_spinner=False)
def machine() -> dict[str, Any]:
    return machine_mod.describe()


@st.cache_resource(show_spinner=False)
def _gpus() -> int:
    return len(machine_mod.detect_gpus())


def gpus_available() -> int:
    return _gpus()


def _mtime(path: str) -> float:
    try:
        return Path(path).expanduser().stat().st_mtime
    except OSError:
        return 0.0


# -- process warm-up ------------------------------------------------------------------------------------------
_warm = threading.Event()
_warm_lock = threading.Lock()


def warm_up() -> threading.Event:
    """Once per server process, in a background thread: Plotly's first figure (engine.views.charts.warm, ~0.2-0.3 s
    of reading its validators), so the first chart a user opens (Compare, a run's loss curve) does not pay it.
    Returns an event set when it is done."""
    with _warm_lock:
        if not getattr(warm_up, "started", False):
            warm_up.started = True  # type: ignore[attr-defined]

            def work() -> None:
                try:
                    charts.warm()
                finally:
                    _warm.set()

            threading.Thread(target=work, name="grove-warm-up", daemon=True).start()
    return _warm


# Pure helpers the components use (so components never reach into engine/ themselves).
fmt_seconds = fmt.fmt_seconds
human_size = fmt.human_size
estimate_gb = fmt.estimate_gb

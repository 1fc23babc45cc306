"""The demo: Grove's default model (engine.models.default: SmolLM2-135M-Instruct, or the tiny Phi-3 when the package
registry cannot be reached) fine-tuned on the built-in travel sample, built to int4 ONNX two ways and every candidate
measured, so that Compare answers "which candidate is best" and Chat offers each one.

``launch`` queues the demo runs when the model is set up; otherwise it starts ``python -m engine.cli demo`` in the
background (a fresh interpreter in its own session) which sets the model up, then queues them. That build reports
its progress to ``GROVE_HOME/demo-build.json`` (stage and percentage), which Home shows; its pid is in
``demo-build.pid`` and its output in ``demo-build.log``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from filelock import FileLock

from engine import machine, paths
from engine.models import default
from engine.runs import submit
from engine.runs.registry import Registry
from engine.spec import recipes


def _progress_file() -> Any:
    return paths.home() / "demo-build.json"


def report(stage: str, fraction: float) -> None:
    """Write the set-up's progress for the UI (one small JSON file, replaced atomically)."""
    f = _progress_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage": stage, "percent": round(100 * fraction), "at": time.time()}))
    tmp.replace(f)


def progress() -> dict[str, Any] | None:
    """The background set-up's last reported stage and percentage (None when none is known)."""
    try:
        return json.loads(_progress_file().read_text())
    except (OSError, ValueError):
        return None


def state() -> str:
    """'built' (the default model is set up), 'building' (a background set-up is running) or 'missing'."""
    if default.current() is not None:
        return "built"
    try:
        pid = int((paths.home() / "demo-build.pid").read_text())
        if machine.process_runs(pid, "engine.cli"):
            return "building"
    except (OSError, ValueError):
        pass
    return "missing"


def specs() -> list[Any]:
    """The demo's run specs on the model set up now (call after ``default.ensure``)."""
    model = default.current()
    if model is None:
        raise RuntimeError("the demo model is not set up yet")
    if default.is_real(model):
        return recipes.real_demo_specs(str(model))
    return [recipes.demo_spec()]


def queue(reg: Registry | None = None, user: str | None = None) -> list[dict[str, Any]]:
    """Queue the demo runs (the model must be set up), as ``user``'s (default: the local user)."""
    return [submit.submit(s, reg=reg, user=user) for s in specs()]


def launch(reg: Registry, user: str | None = None) -> list[dict[str, Any]] | None:
    """Queue the demo runs if the model is set up (the queued runs); otherwise start setting it up (then queueing)
    in the background, unless that is already running (None)."""
    if default.current() is not None:
        return queue(reg, user)
    h = paths.home()
    h.mkdir(parents=True, exist_ok=True)
    # two browser sessions clicking at once: the lock makes "is a build running? if not, start one" one step
    with FileLock(str(h / "demo-build.lock"), timeout=30):
        if state() == "building":
            return None
        report("starting", 0.0)
        with open(h / "demo-build.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "demo", *(["--as", user] if user else [])],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, GROVE_HOME=str(h)),
                cwd=str(paths.REPO_ROOT),
                start_new_session=True,
            )
        (h / "demo-build.pid").write_text(str(p.pid))
    return None



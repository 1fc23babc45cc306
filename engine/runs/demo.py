"""The embedded demo for the UI: is its model built, or being built; queue its recipe, or build it first in the
background (``python -m engine.cli demo``, a fresh interpreter in its own session, which queues the run when done).

The build's pid is kept in ``GROVE_HOME/demo-build.pid`` and its output in ``GROVE_HOME/demo-build.log``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional

from filelock import FileLock

from engine import machine, paths
from engine.models import tiny
from engine.runs.registry import Registry


def state() -> str:
    """'built', 'building' (a background build is running) or 'missing'."""
    if tiny.is_built():
        return "built"
    try:
        pid = int((paths.home() / "demo-build.pid").read_text())
        if machine.process_runs(pid, "engine.cli"):
            return "building"
    except (OSError, ValueError):
        pass
    return "missing"


def launch(reg: Registry) -> Optional[dict[str, Any]]:
    """Queue the demo recipe if the demo model is built (the queued run); otherwise start building it (and queueing)
    in the background, unless a build is already running (None)."""
    if tiny.is_built():
        from engine.runs import submit
        from engine.spec import recipes

        return submit.submit(recipes.demo_spec(), reg=reg)
    h = paths.home()
    h.mkdir(parents=True, exist_ok=True)
    # two browser sessions clicking at once: the lock makes "is a build running? if not, start one" one step
    with FileLock(str(h / "demo-build.lock"), timeout=30):
        if state() == "building":
            return None
        with open(h / "demo-build.log", "ab") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "demo"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, GROVE_HOME=str(h)),
                cwd=str(paths.REPO_ROOT),
                start_new_session=True,
            )
        (h / "demo-build.pid").write_text(str(p.pid))
    return None

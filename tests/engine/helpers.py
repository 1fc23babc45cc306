from __future__ import annotations

import json
import time
from typing import Callable

from engine.registry import Registry


def fake_run(reg: Registry, mode: str, gpus: int = 0) -> dict:
    """A queued run for the stand-in runner (tests/engine/fake_runner.py)."""
    return reg.create_run(spec_json="{}", spec_hash=f"fake-{time.time_ns()}", name=f"fake:{mode}",
                          olive_config=json.dumps({"passes": {}, "output_dir": "/nonexistent"}), gpus_wanted=gpus)


def wait_for(pred: Callable[[], bool], timeout: float, tick: Callable[[], None] | None = None, step: float = 0.1) -> float:
    """Seconds until pred() holds (calling tick() between polls); fails the test after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if tick:
            tick()
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

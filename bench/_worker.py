"""A real worker ticking in a background thread, as `grove up` runs one: for benchmarks that submit runs and wait."""

from __future__ import annotations

import threading
import time
from typing import Any


def ticking_worker(reg: Any = None, poll_s: float | None = None) -> tuple[Any, threading.Event]:
    """Start a worker on ``reg`` (the default registry when None) ticking every ``poll_s`` seconds (the worker's own
    poll interval when None) in a daemon thread; set the returned event to stop the ticking."""
    from engine.runs.registry import Registry
    from engine.runs.worker import POLL_S, Worker

    w = Worker(reg if reg is not None else Registry())
    w.start()
    stop = threading.Event()
    step = POLL_S if poll_s is None else poll_s

    def loop() -> None:
        while not stop.is_set():
            w.tick()
            time.sleep(step)

    threading.Thread(target=loop, daemon=True).start()
    return w, stop

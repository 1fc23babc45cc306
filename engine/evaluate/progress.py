"""An evaluation's progress as events of the run that asked for it, so the Runs page counts evaluation in the run's
progress and ETA and names the stage (engine.runs.progress.EventSink.absorb reads them back in the runner).

Evaluations run in processes of their own (the evaluator's subprocess, engine.evaluate.candidates), so they write
straight to the registry (relayed to the head on Ray): ``eval_started`` / ``eval_finished`` around each evaluation
(``evaluate_cached``), ``eval_progress`` per scored example and per answer (at most one every ``EVERY_S``, and always
the last), ``measure_started`` when the measurements after the workflow begin. Outside a run (``GROVE_RUN_ID``
unset: chat, benchmarks, tests) nothing is written."""

from __future__ import annotations

import os
import time
from typing import Any

RUN_ID_ENV = "GROVE_RUN_ID"  # set by the runner for everything it starts (engine.runs.runner)
EVERY_S = 0.5


def run_id() -> str | None:
    return os.environ.get(RUN_ID_ENV) or None


def emit(kind: str, rid: str | None = None, reg: Any = None, **data: Any) -> None:
    """One event of the run (``rid``, else the run this process works for); never raises: progress must not fail an
    evaluation."""
    rid = rid or run_id()
    if not rid:
        return
    try:
        if reg is None:
            from engine.runs.relay import open_registry

            reg = open_registry()
        reg.add_event(rid, kind, data)
    except Exception:  # noqa: BLE001 - a busy registry costs a progress line, never the evaluation
        pass


class Reporter:
    """``report(phase, done, total)`` for one evaluation: throttled ``eval_progress`` events."""

    def __init__(self, model: str, adapter: str | None, every_s: float = EVERY_S) -> None:
        self.rid = run_id()
        self.model, self.adapter, self.every_s = model, adapter, every_s
        self._reg: Any = None
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.rid:
            return
        now = time.monotonic()
        if done < total and now - self._last < self.every_s:
            return
        self._last = now
        if self._reg is None:
            from engine.runs.relay import open_registry

            self._reg = open_registry()
        emit("eval_progress", self.rid, self._reg, model=self.model, adapter=self.adapter, phase=phase, done=done,
             total=total)

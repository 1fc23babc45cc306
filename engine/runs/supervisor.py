"""What ``grove up`` runs: the UI and a supervised worker.

- The worker is restarted whenever it exits (a crash, ``kill -9``, out of memory) after a back-off: 1 s, doubling
  for each exit in a row that came within ``STABLE_S`` of its start, at most 30 s; a worker that ran ``STABLE_S``
  resets the back-off. Each restart is printed to the console and recorded as a ``worker_restart`` notice in the
  registry (``Registry.notices``), which Home and Runs show. The restarted worker's sweep adopts or recovers the
  runs the dead one watched (engine.runs.worker).
- The UI is never stopped because the worker died. When the UI itself exits, or on Ctrl-C/SIGTERM, both stop
  (running runs go on; the next worker adopts them).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

STABLE_S = 60.0
MAX_BACKOFF_S = 30.0


def backoff(quick_exits: int) -> float:
    """Seconds to wait before restart number ``quick_exits`` (1, 2, 4, ... 30)."""
    return min(MAX_BACKOFF_S, 2.0 ** max(0, quick_exits - 1))


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, worker_cmd: list[str], ui_cmd: list[str] | None, env: dict[str, str],
                 note: Callable[[str, dict[str, Any]], None] | None = None, say: Callable[[str], None] = print) -> None:
        self.worker_cmd, self.ui_cmd, self.env = worker_cmd, ui_cmd, env
        self.note, self.say = note or _registry_note, say
        self.worker: subprocess.Popen | None = None
        self.ui: subprocess.Popen | None = None
        self.worker_started_at = 0.0
        self.quick_exits = 0
        self.restarts = 0
        self.restart_at: float | None = None
        self._stop = False

    def start(self) -> None:
        self._start_worker()
        if self.ui_cmd:
            self.ui = subprocess.Popen(self.ui_cmd, env=self.env)

    def _start_worker(self) -> None:
        self.worker = subprocess.Popen(self.worker_cmd, env=self.env)
        self.worker_started_at = time.monotonic()
        self.restart_at = None

    def stop(self, *_: Any) -> None:
        self._stop = True

    def step(self) -> int | None:
        """One look at the children: restart the worker when due; the UI's exit code when it has exited."""
        if self.ui is not None and (code := self.ui.poll()) is not None:
            return code
        if self.worker is not None and self.restart_at is None and (code := self.worker.poll()) is not None:
            lived = time.monotonic() - self.worker_started_at
            self.quick_exits = self.quick_exits + 1 if lived < STABLE_S else 1
            delay = backoff(self.quick_exits)
            self.restarts += 1
            msg = f"the worker {_describe(code)} after {lived:.0f}s; restarting it in {delay:g}s (restart {self.restarts})"
            self.say(f"[grove] {msg}")
            try:
                self.note(msg, {"exit_code": code, "lived_s": round(lived, 1), "restart_in_s": delay, "restarts": self.restarts})
            except Exception as e:  # noqa: BLE001 - a full or locked registry must not stop the supervisor
                self.say(f"[grove] could not record the restart in the registry: {e}")
            self.restart_at = time.monotonic() + delay
        if self.restart_at is not None and time.monotonic() >= self.restart_at:
            self._start_worker()
            self.say(f"[grove] worker restarted (pid {self.worker.pid if self.worker else '?'})")
        return None

    def serve(self, poll_s: float = 0.5) -> int:
        """Run until the UI exits or a stop is asked; then stop both children."""
        code = 0
        try:
            while not self._stop:
                ui_code = self.step()
                if ui_code is not None:
                    code = ui_code
                    break
                time.sleep(poll_s)
        except KeyboardInterrupt:
            pass
        self.shutdown()
        return code

    def shutdown(self) -> None:
        procs = [p for p in (self.worker, self.ui) if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _registry_note(message: str, data: dict[str, Any]) -> None:
    from engine.runs.registry import Registry

    Registry().add_notice("worker_restart", message, data)


def worker_command() -> list[str]:
    return [sys.executable, "-m", "engine.runs.worker"]

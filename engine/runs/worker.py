"""The worker: ``python -m engine.runs.worker``. Claims queued runs, starts one fresh runner process per run, watches.

- Claims are atomic (one ``BEGIN IMMEDIATE`` transaction in the registry), so several workers can share a
  registry without taking the same run twice.
- Each run is a fresh interpreter (``python -m engine.runs.runner ID``) in its own process group, never a fork and
  never a thread, pinned to its GPU slots with ``CUDA_VISIBLE_DEVICES``; its output goes to ``runs/<id>/run.log``
  and its temp files to ``runs/<id>/tmp`` (removed when it ends, whatever way it ends).
- Slots: ``GROVE_CPU_SLOTS`` runs at once on the CPU (default 1) and ``GROVE_RUNS_PER_GPU`` per GPU (default 1);
  GPUs come from ``GROVE_GPUS`` (e.g. ``0,1``; empty for none) or ``nvidia-smi``.
- Cancel: a flag in the registry; the worker signals the run's whole process group (SIGTERM, which the runner
  turns into a clean KeyboardInterrupt), then SIGKILL after ``GROVE_CANCEL_GRACE_S`` (default 3 s).
- A runner that dies without ending its run (``kill -9``, out of memory) is marked failed with its exit status
  and log tail as soon as the worker sees it exit.
- On start-up, runs left ``running`` by a crashed worker are recovered: a runner still alive is adopted and
  watched to its end; a dead one is queued again once (Olive's cache keeps its finished passes), then failed.
- Launch sits behind a small executor seam (``Executor``): a Ray or Slurm executor can replace the local one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine import machine
from engine.errors import RunStateError
from engine.runs import reuse
from engine.runs.executors import Executor, LocalHandle, from_env, pid_is_runner
from engine.runs.registry import Registry

log = logging.getLogger("grove.worker")
POLL_S = float(os.environ.get("GROVE_POLL_S", "0.5"))
MAX_ATTEMPTS = 2



@dataclass
class Slots:
    """Free and used run slots: CPU slots, and per-GPU slots."""

    cpu: int = 1
    per_gpu: int = 1
    gpus: list[int] = field(default_factory=list)
    cpu_used: int = 0
    gpu_used: dict[int, int] = field(default_factory=dict)

    def fit(self, gpus_wanted: int) -> Optional[list[int]]:
        if gpus_wanted == 0:
            return [] if self.cpu_used < self.cpu else None
        free = [g for g in self.gpus if self.gpu_used.get(g, 0) < self.per_gpu]
        if len(free) < gpus_wanted:
            return None
        free.sort(key=lambda g: self.gpu_used.get(g, 0))
        return sorted(free[:gpus_wanted])

    def take(self, gpus: list[int]) -> None:
        if not gpus:
            self.cpu_used += 1
        for g in gpus:
            self.gpu_used[g] = self.gpu_used.get(g, 0) + 1

    def give(self, gpus: list[int]) -> None:
        if not gpus:
            self.cpu_used = max(0, self.cpu_used - 1)
        for g in gpus:
            self.gpu_used[g] = max(0, self.gpu_used.get(g, 0) - 1)

    def describe(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "cpu_used": self.cpu_used, "per_gpu": self.per_gpu, "gpus": self.gpus,
                "gpu_used": {str(k): v for k, v in self.gpu_used.items()}}


def slots_from_env() -> Slots:
    return Slots(
        cpu=int(os.environ.get("GROVE_CPU_SLOTS", "1")),
        per_gpu=int(os.environ.get("GROVE_RUNS_PER_GPU", "1")),
        gpus=machine.detect_gpus(),
    )


def worker_alive(w: dict[str, Any]) -> bool:
    """A worker row with a fresh heartbeat is alive, unless it is on this host and its process is gone."""
    if w.get("host") != machine.hostname():
        return True
    return machine.process_runs(w["pid"], "engine.runs.worker", "grove")


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # progress bars rewrite one line with \r: keep the last state of each line
    clean = [ln.split("\r")[-1] for ln in data.splitlines()]
    return "\n".join(clean[-lines:])


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Active:
    handle: Any
    gpus: list[int]
    term_sent_at: Optional[float] = None
    kill_sent: bool = False


class Worker:
    def __init__(self, reg: Optional[Registry] = None, executor: Optional[Executor] = None, slots: Optional[Slots] = None,
                 worker_id: Optional[str] = None) -> None:
        self.reg = reg or Registry()
        self.ex = executor or from_env()  # GROVE_EXECUTOR: local (default) or ray
        self.slots = slots or getattr(self.ex, "slots", None) or slots_from_env()  # Ray brings its own accounting
        self.id = worker_id or f"w-{os.uname().nodename}-{os.getpid()}"
        self.active: dict[str, Active] = {}
        self.grace = float(os.environ.get("GROVE_CANCEL_GRACE_S", "3"))
        self._stop = False
        self._last_beat = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.reg.worker_started(self.id)
        self.recover()

    def stop(self, *_: Any) -> None:
        self._stop = True

    def serve(self, *, until_idle: bool = False, timeout: Optional[float] = None) -> None:
        """Loop until stopped (or, with ``until_idle``, until nothing is queued or running)."""
        self.start()
        t0 = time.monotonic()
        try:
            while not self._stop:
                self.tick()
                if until_idle and not self.active and not self.reg.list_runs(status=["queued"], limit=1):
                    break
                if timeout and time.monotonic() - t0 > timeout:
                    break
                time.sleep(POLL_S)
        finally:
            self.reg.worker_stopped(self.id)

    def tick(self) -> None:
        self.watch()
        self.claim_all()
        if time.monotonic() - self._last_beat > 2:
            self.reg.worker_beat(self.id, self.slots.describe())
            self._last_beat = time.monotonic()

    # -- recovery ----------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Runs left 'running' by a worker that is gone: adopt live runners, re-queue (once) or fail the rest."""
        live_workers = {w["id"] for w in self.reg.live_workers() if worker_alive(w)} - {self.id}
        for run in self.reg.list_runs(status=["running"], limit=100000):
            if run["worker_id"] in live_workers or run["id"] in self.active:
                continue
            full = self.reg.get_run(run["id"])
            gpus = json.loads(full["gpus"] or "[]")
            adopt = getattr(self.ex, "adopt", None)  # an executor that can find its runs again (Ray) says so
            handle = adopt(full) if adopt else (LocalHandle(run["id"], full["pid"]) if pid_is_runner(full["pid"], run["id"]) else None)
            if handle is not None:
                self.active[run["id"]] = Active(handle, gpus)
                self.slots.take(gpus)
                self.reg.update_run(run["id"], worker_id=self.id)
                self.reg.add_event(run["id"], "recovered", {"worker": self.id, "adopted_pid": full["pid"]})
                log.info("adopted running run %s (pid %s)", run["id"], full["pid"])
            elif (full["attempts"] or 0) < MAX_ATTEMPTS and not full["cancel_requested"]:
                self._cleanup_tmp(full)
                self.reg.transition(run["id"], "queued", expect=("running",), pid=None, stage="queued (recovered)")
                self.reg.add_event(run["id"], "recovered", {"worker": self.id, "requeued": True})
                log.info("re-queued run %s left by a crashed worker", run["id"])
            else:
                self._fail(full, "lost", "the worker stopped and the runner is gone; it had already been retried")

    # -- watching ----------------------------------------------------------------------------------------
    def watch(self) -> None:
        for run_id, a in list(self.active.items()):
            code = self.ex.poll(a.handle)
            if code is None:
                self._maybe_cancel(run_id, a)
                continue
            self._finished(run_id, a, code)

    def _maybe_cancel(self, run_id: str, a: Active) -> None:
        if a.term_sent_at is None:
            run = self.reg.get_run(run_id)
            if run["cancel_requested"]:
                self.ex.signal(a.handle, signal.SIGTERM)
                a.term_sent_at = time.monotonic()
                self.reg.add_event(run_id, "log", {"level": "INFO", "message": "cancel: SIGTERM sent to the process group"})
        elif not a.kill_sent and time.monotonic() - a.term_sent_at > self.grace:
            self.ex.signal(a.handle, signal.SIGKILL)
            a.kill_sent = True
            self.reg.add_event(run_id, "log", {"level": "WARNING", "message": f"cancel: no exit after {self.grace:g}s, SIGKILL sent"})

    def _finished(self, run_id: str, a: Active, code: int) -> None:
        del self.active[run_id]
        self.slots.give(a.gpus)
        # the group may still hold children (dataloader workers...): end them all
        self.ex.signal(a.handle, signal.SIGKILL)
        run = self.reg.get_run(run_id)
        self._cleanup_tmp(run)
        if run["status"] != "running":
            return  # the runner ended its own run
        if run["cancel_requested"]:
            self.reg.transition(run_id, "cancelled", expect=("running",), exit_code=code)
            return
        self._fail(run, "runner_died", f"the runner {describe_exit(code)} before finishing", exit_code=code)

    def _fail(self, run: dict[str, Any], etype: str, msg: str, exit_code: Optional[int] = None) -> None:
        tail = log_tail(Path(run["log_path"]))
        self.reg.add_event(run["id"], "log_tail", {"text": tail})
        try:
            self.reg.transition(run["id"], "failed", expect=("running",), error_type=etype, error_message=msg, exit_code=exit_code)
        except RunStateError:
            pass

    @staticmethod
    def _cleanup_tmp(run: dict[str, Any]) -> None:
        shutil.rmtree(Path(run["run_dir"]) / "tmp", ignore_errors=True)

    # -- claiming ----------------------------------------------------------------------------------------
    def claim_all(self) -> None:
        while True:
            run = self.reg.claim(self.id, lambda r: self.slots.fit(r["gpus_wanted"] or 0))
            if run is None:
                return
            gpus = json.loads(run["gpus"] or "[]")
            if reuse.reuse_finished(self.reg, run):
                continue
            self.slots.take(gpus)
            try:
                h = self.ex.launch(run, gpus)
            except Exception as e:  # noqa: BLE001
                self.slots.give(gpus)
                self._fail(run, "launch_failed", f"could not start the runner: {e}")
                continue
            self.reg.update_run(run["id"], pid=h.pid)
            self.active[run["id"]] = Active(h, gpus)
            log.info("started run %s (pid %s, gpus %s)", run["id"], h.pid, gpus or "cpu")


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.runs.worker", description="Run queued Grove runs.")
    ap.add_argument("--until-idle", action="store_true", help="exit when nothing is queued or running")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    w = Worker()
    signal.signal(signal.SIGTERM, w.stop)
    signal.signal(signal.SIGINT, w.stop)
    log.info("worker %s: registry %s, slots %s", w.id, w.reg.path, w.slots.describe())
    w.serve(until_idle=args.until_idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

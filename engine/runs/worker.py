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
- The sweep (at start-up and every ``GROVE_WORKER_BEAT_S``, default 1 s): a run left ``running`` by a worker that
  is gone (no heartbeat for three beats, or its process gone on this host) is recovered: a runner still alive here
  is adopted and watched to its end; a runner on another host whose run still heart-beats is left alone; a dead
  one is queued again once (Olive's cache keeps its finished passes, training its checkpoints), then failed
  ``lost``; a run whose cancel was requested ends ``cancelled``.
- A hung runner (alive, but its run has not heart-beaten for ``GROVE_HUNG_TIMEOUT_S``, default 120 s; a runner
  beats every second from its own thread, so only a stopped or wedged process misses 120 beats) is killed with its
  process group and failed ``hung``.
- Claims are fair: oldest first, and the oldest run that does not fit yet reserves its resource class (CPU or GPU)
  on this worker, so no stream of small runs starves a big one (``Registry.claim_fair``).
- Reusing a finished twin's output (hard links, or a copy across filesystems) happens in a thread, off the tick.
- A tick that fails (a locked or full registry) is logged, recorded as a ``worker_error`` notice when possible,
  and retried with back-off: the loop never dies of it.
- Devices (engine/runs/devices.py): no run starts on a device a speed measurement holds (its exclusive claim in
  the registry); speed measurements deferred while a run's passes used the device ("speed pending") are run here,
  one at a time, when their device on this host has no Grove activity (``python -m engine.evaluate.speed KEY``).
- Launch sits behind a small executor seam (``Executor``): a Ray or Slurm executor can replace the local one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import machine, paths
from engine.errors import RunStateError
from engine.runs import devices, reuse
from engine.runs.executors import Executor, LocalHandle, from_env, pid_is_runner
from engine.runs.logs import log_tail
from engine.runs.registry import Registry

log = logging.getLogger("grove.worker")
POLL_S = float(os.environ.get("GROVE_POLL_S", "0.5"))
MAX_ATTEMPTS = 2


def beat_s() -> float:
    """How often a worker writes its heartbeat and sweeps; a worker silent for three beats is gone."""
    return float(os.environ.get("GROVE_WORKER_BEAT_S", "1.0"))


def run_beat_s() -> float:
    """How often a runner heart-beats its run (engine.runs.runner.HEARTBEAT_S)."""
    return float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))


def hung_timeout_s() -> float:
    return float(os.environ.get("GROVE_HUNG_TIMEOUT_S", "120"))


@dataclass
class Slots:
    """Free and used run slots: CPU slots, and per-GPU slots."""

    cpu: int = 1
    per_gpu: int = 1
    gpus: list[int] = field(default_factory=list)
    cpu_used: int = 0
    gpu_used: dict[int, int] = field(default_factory=dict)

    def fit(self, gpus_wanted: int) -> list[int] | None:
        if gpus_wanted == 0:
            return [] if self.cpu_used < self.cpu else None
        free = [g for g in self.gpus if self.gpu_used.get(g, 0) < self.per_gpu]
        if len(free) < gpus_wanted:
            return None
        free.sort(key=lambda g: self.gpu_used.get(g, 0))
        return sorted(free[:gpus_wanted])

    def could_fit(self, gpus_wanted: int) -> bool:
        """Whether the run fits these slots at all (once they are free)."""
        return self.cpu > 0 if gpus_wanted == 0 else len(self.gpus) >= gpus_wanted and self.per_gpu > 0

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
    term_sent_at: float | None = None
    kill_sent: bool = False
    hung_for: float | None = None  # seconds without a heartbeat when the worker killed it


class Worker:
    def __init__(self, reg: Registry | None = None, executor: Executor | None = None, slots: Slots | None = None,
                 worker_id: str | None = None) -> None:
        self.reg = reg or Registry()
        self.ex = executor or from_env()  # GROVE_EXECUTOR: local (default) or ray
        self.slots = slots or getattr(self.ex, "slots", None) or slots_from_env()  # Ray brings its own accounting
        self.id = worker_id or f"w-{os.uname().nodename}-{os.getpid()}"
        self.active: dict[str, Active] = {}
        self.grace = float(os.environ.get("GROVE_CANCEL_GRACE_S", "3"))
        self._stop = False
        self._last_beat = 0.0
        self.reusing: dict[str, threading.Thread] = {}
        self.no_reuse: set[str] = set()
        self.failed_ticks = 0
        self.measuring: tuple[str, Any] | None = None  # (eval key, process) of a deferred speed measurement

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self.reg.worker_started(self.id)
        self.recover()

    def stop(self, *_: Any) -> None:
        self._stop = True

    def serve(self, *, until_idle: bool = False, timeout: float | None = None) -> None:
        """Loop until stopped (or, with ``until_idle``, until nothing is queued or running). A failed tick is logged
        and retried after a back-off (0.5 s doubling to 30 s); it never ends the loop."""
        self._retry(self.start)
        t0 = time.monotonic()
        try:
            while not self._stop:
                if not self._retry(self.tick, once=True):
                    continue
                if (until_idle and not self.active and not self.reusing and not self.measuring
                        and not self.reg.list_runs(status=["queued"], limit=1) and not self.pending_here()):
                    break
                if timeout and time.monotonic() - t0 > timeout:
                    break
                time.sleep(POLL_S)
        finally:
            try:
                self.reg.worker_stopped(self.id)
            except Exception:  # noqa: BLE001 - a stopping worker reports what it can
                log.exception("could not record the worker's stop")

    def _retry(self, fn: Any, once: bool = False) -> bool:
        """Run ``fn``; on an exception log it, note it, back off, and (unless ``once``) try again until it works."""
        while not self._stop:
            try:
                fn()
                self.failed_ticks = 0
                return True
            except Exception as e:  # noqa: BLE001 - the loop outlives any one failure
                self.failed_ticks += 1
                delay = min(30.0, 0.5 * 2 ** (self.failed_ticks - 1))
                log.exception("worker tick failed (%d in a row); retrying in %.1fs", self.failed_ticks, delay)
                try:
                    self.reg.add_notice("worker_error", f"worker {self.id}: {type(e).__name__}: {e}", {"worker": self.id})
                except Exception:  # noqa: BLE001 - the registry may be what fails
                    pass
                time.sleep(delay)
                if once:
                    return False
        return False

    def tick(self) -> None:
        self.watch()
        self.claim_all()
        if time.monotonic() - self._last_beat > beat_s():
            self.reg.worker_beat(self.id, self.slots.describe())
            self._last_beat = time.monotonic()
            self.sweep()
            self.measure_pending()

    # -- deferred speed measurements ------------------------------------------------------------------------------
    def pending_here(self) -> list[dict[str, Any]]:
        """Speed measurements deferred on this host's devices (a worker measures only its own host's)."""
        return self.reg.pending_speed(host=machine.hostname())

    def measure_pending(self) -> None:
        """One deferred speed measurement at a time, started when its device has no Grove activity at all and no
        run of this worker is on it (engine/evaluate/speed.py, a fresh interpreter); it claims the device itself."""
        if self.measuring is not None:
            key, p = self.measuring
            if p.poll() is None:
                return
            self.measuring = None
            if p.returncode != 0:
                log.warning("deferred speed measurement %s exited with %s", key, p.returncode)
        pending = self.pending_here()
        if not pending:
            return
        mine = {d for a in self.active.values() for d in devices.of_gpus(a.gpus)} if self._places_runs() else set()
        busy = {r["device"] for r in self.reg.device_activities(live=True)} | mine
        for p in pending:
            if p["device"] in busy:
                continue
            import subprocess

            logf = open(paths.home() / "speed-measurements.log", "ab", buffering=0)  # noqa: SIM115 - the child owns it
            env = paths.olive_env()
            kind = p["device"].split("@", 1)[0]
            env["CUDA_VISIBLE_DEVICES"] = kind[3:] if kind.startswith("gpu") else ""
            python = sys.executable
            ep = (p.get("config") or {}).get("execution_provider")
            from engine.targets import env as target_env
            from engine.targets import for_provider

            if not for_provider(ep).default:  # an OpenVINO candidate is measured in the OpenVINO environment
                try:
                    python, env = target_env.python_for(for_provider(ep).name), target_env.run_env(env)
                except target_env.TargetError as e:
                    logf.close()
                    self.reg.mark_speed(p["key"], "failed", reason=str(e))
                    continue
            try:
                proc = subprocess.Popen([python, "-m", "engine.evaluate.speed", p["key"]], env=env,
                                        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            finally:
                logf.close()
            self.measuring = (p["key"], proc)
            log.info("measuring the deferred speed of %s on %s (pid %s)", p["model_path"], p["device"], proc.pid)
            return

    def _places_runs(self) -> bool:
        """Whether this worker decides which device a run uses (the local executor; Ray places runs itself, and its
        runners wait at start while their node's device is held: engine.runs.devices.RunActivity)."""
        return getattr(self.ex, "slots", None) is None

    # -- recovery ----------------------------------------------------------------------------------------
    def live_worker_ids(self) -> set[str]:
        """Workers with a heartbeat within three beats (and, on this host, a live process), this one included."""
        return {w["id"] for w in self.reg.live_workers(max_age_s=3 * beat_s()) if worker_alive(w)} | {self.id}

    def recover(self) -> None:
        """Runs left 'running' by a worker that is gone (kept for callers of the start-up recovery)."""
        self.sweep()

    def sweep(self) -> None:
        """Runs 'running' with no live worker watching: adopt live local runners, leave remote runners that still
        heart-beat, and re-queue (once), cancel or fail the rest."""
        live = self.live_worker_ids()
        hosts = self.reg.worker_hosts()
        for full in self.reg.unwatched_runs(live):
            run_id = full["id"]
            if run_id in self.active or run_id in self.reusing:
                continue
            gpus = json.loads(full["gpus"] or "[]")
            adopt = getattr(self.ex, "adopt", None)  # an executor that can find its runs again (Ray) says so
            handle = adopt(full) if adopt else (LocalHandle(run_id, full["pid"]) if pid_is_runner(full["pid"], run_id) else None)
            if handle is not None:
                self.active[run_id] = Active(handle, gpus)
                self.slots.take(gpus)
                self.reg.update_run(run_id, worker_id=self.id)
                self.reg.add_event(run_id, "recovered", {"worker": self.id, "adopted_pid": full["pid"]})
                log.info("adopted running run %s (pid %s)", run_id, full["pid"])
                continue
            remote = hosts.get(full["worker_id"], machine.hostname()) != machine.hostname()
            if remote and time.time() - (full["heartbeat_at"] or 0) < 3 * run_beat_s():
                continue  # its runner lives on another host and still beats: it ends its own run
            self._lost(full)
        release = getattr(self.ex, "release_orphans", None)  # Ray: host actors no worker released
        if release:
            release()

    def _lost(self, full: dict[str, Any]) -> None:
        run_id = full["id"]
        self._cleanup_tmp(full)
        try:
            if full["cancel_requested"]:
                self.reg.transition(run_id, "cancelled", expect=("running",), stage="cancelled (runner gone)")
                self._cleanup_run(full)
                log.info("run %s: cancelled while no worker watched; its runner is gone", run_id)
            elif (full["attempts"] or 0) < MAX_ATTEMPTS:
                self.reg.transition(run_id, "queued", expect=("running",), pid=None, stage="queued (recovered)")
                self.reg.add_event(run_id, "recovered", {"worker": self.id, "requeued": True})
                log.info("re-queued run %s: its worker and runner are gone", run_id)
            else:
                self._fail(full, "lost", "the worker stopped and the runner is gone; it had already been retried")
                return
        except RunStateError:
            return  # someone else (another worker, the runner) ended or moved it first
        self.reg.add_notice("swept", f"run {run_id}: its worker and runner were gone; recovered by {self.id}", {"run_id": run_id})

    # -- watching ----------------------------------------------------------------------------------------
    def watch(self) -> None:
        for run_id, t in list(self.reusing.items()):
            if not t.is_alive():
                del self.reusing[run_id]
        for run_id, a in list(self.active.items()):
            code = self.ex.poll(a.handle)
            if code is None:
                self._maybe_stop(run_id, a)
                continue
            self._finished(run_id, a, code)

    def _maybe_stop(self, run_id: str, a: Active) -> None:
        if a.kill_sent:
            return
        run = self.reg.get_run(run_id)
        silent = time.time() - (run["heartbeat_at"] or run["started_at"] or time.time())
        if silent > hung_timeout_s():
            # a hung runner may not run its SIGTERM handler (and would call itself cancelled): kill the group
            self.ex.signal(a.handle, signal.SIGKILL)
            a.kill_sent, a.hung_for = True, silent
            self.reg.add_event(run_id, "log", {"level": "WARNING", "message": f"no heartbeat for {silent:.0f}s: runner hung, SIGKILL sent"})
            return
        if a.term_sent_at is None:
            if run["cancel_requested"]:
                self.ex.signal(a.handle, signal.SIGTERM)
                a.term_sent_at = time.monotonic()
                self.reg.add_event(run_id, "log", {"level": "INFO", "message": "cancel: SIGTERM sent to the process group"})
        elif time.monotonic() - a.term_sent_at > self.grace:
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
            if run["status"] != "queued":
                self._cleanup_run(run)
            return  # the runner ended its own run
        if run["cancel_requested"]:
            self.reg.transition(run_id, "cancelled", expect=("running",), exit_code=code)
            self._cleanup_run(run)
            return
        if a.hung_for is not None:
            self._fail(run, "hung", f"the runner sent no heartbeat for {a.hung_for:.0f}s (limit {hung_timeout_s():g}s, "
                       "GROVE_HUNG_TIMEOUT_S) and was killed", exit_code=code)
            return
        self._fail(run, "runner_died", f"the runner {describe_exit(code)} before finishing", exit_code=code)

    def _fail(self, run: dict[str, Any], etype: str, msg: str, exit_code: int | None = None) -> None:
        tail = log_tail(Path(run["log_path"]))
        self._cleanup_tmp(run)
        self._cleanup_run(run)
        try:
            self.reg.add_event(run["id"], "log_tail", {"text": tail})
            self.reg.transition(run["id"], "failed", expect=("running",), error_type=etype, error_message=msg, exit_code=exit_code)
        except RunStateError:
            pass

    @staticmethod
    def _cleanup_tmp(run: dict[str, Any]) -> None:
        shutil.rmtree(Path(run["run_dir"]) / "tmp", ignore_errors=True)

    @staticmethod
    def _cleanup_run(run: dict[str, Any]) -> None:
        """A run that ended keeps no training checkpoints (a re-queued one keeps them to resume)."""
        shutil.rmtree(Path(run["run_dir"]) / "checkpoints", ignore_errors=True)

    # -- claiming ----------------------------------------------------------------------------------------
    def claim_all(self) -> None:
        # a device a speed measurement holds takes no new run until the measurement ends (it holds it for seconds)
        held = self.reg.held_devices() if self._places_runs() else {}

        def fits(r: dict[str, Any]) -> list[int] | None:
            gpus = self.slots.fit(r["gpus_wanted"] or 0)
            return None if gpus is None or any(d in held for d in devices.of_gpus(gpus)) else gpus

        while True:
            run = self.reg.claim_fair(self.id, fits, lambda r: self.slots.could_fit(r["gpus_wanted"] or 0))
            if run is None:
                return
            gpus = json.loads(run["gpus"] or "[]")
            if run["id"] not in self.no_reuse and reuse.find_twin(self.reg, run) is not None:
                t = threading.Thread(target=self._reuse, args=(run,), name=f"grove-reuse-{run['id']}", daemon=True)
                self.reusing[run["id"]] = t
                t.start()
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

    def _reuse(self, run: dict[str, Any]) -> None:
        """In a thread: complete ``run`` from its finished twin; on any error, queue it again to run for real."""
        try:
            if reuse.reuse_finished(self.reg, run):
                return
        except Exception as e:  # noqa: BLE001 - an error here must never reach the worker's loop
            log.exception("reusing a finished result for run %s failed", run["id"])
            try:
                self.reg.add_event(run["id"], "log", {"level": "WARNING", "message": f"reusing an identical run's result failed ({e}); running it"})
            except Exception:  # noqa: BLE001
                pass
        self.no_reuse.add(run["id"])
        try:
            self.reg.transition(run["id"], "queued", expect=("running",), stage="queued")
        except Exception:  # noqa: BLE001 - cancelled meanwhile, or a registry error the sweep will see
            log.exception("could not queue run %s again after a failed reuse", run["id"])


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.runs.worker", description="Run queued Grove runs.")
    ap.add_argument("--until-idle", action="store_true", help="exit when nothing is queued or running")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    w = Worker()
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an OSError the tick survives
    signal.signal(signal.SIGTERM, w.stop)
    signal.signal(signal.SIGINT, w.stop)
    log.info("worker %s: registry %s, slots %s", w.id, w.reg.path, w.slots.describe())
    w.serve(until_idle=args.until_idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())

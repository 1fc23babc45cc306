"""Who uses which device, and speed measured with the device to itself.

A *device* is this host's CPU (``cpu@<host>``) or one GPU (``gpu<index>@<host>``). Every Grove activity on a device
is a heart-beaten row of the registry's ``device_activity`` table, written through ``open_registry()`` so a runner
on a Ray node records its activities on the head like a local one:

- a run while its passes execute (``run``; paused while its own evaluation runs: the runner only waits for it),
- an evaluation's quality part (``eval``: loss, ROUGE-L, answers; no exclusivity needed, they go on in parallel),
- a chat answer being generated (``chat``),
- a speed measurement's timed part (``measure``, *exclusive*).

``claim_device`` takes a device exclusively in one registry transaction when no other activity is live on it, and
``begin_activity`` refuses to start anything on a device a claim holds, so a claim's interval overlaps no other
Grove activity on its device (what ``tests/engine/test_speed_claims.py`` checks from the recorded intervals). A row
whose holder stopped beating for ``Registry.ACTIVITY_STALE_S`` is over (a killed process never blocks a device).
A claim is held only for the timed part; what it was measured under (load before and during, the Grove work it
waited for, threads) is returned as its *conditions* and stored with the figures.

Waiting: a measurement waits for other evaluations, chats and measurements (they end within seconds or minutes);
a device busy with a run's passes (training can take hours) makes it give up at once: the evaluator records the
quality now and queues the speed measurement (``Registry.queue_speed``), which a worker on the device's host runs
when the device is idle (engine/runs/worker.py).
"""

from __future__ import annotations

import os
import resource
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import machine
from engine.runs.registry.devices import computing

STAGE_NOTE_ENV = "GROVE_STAGE_NOTE"  # a file the runner's heartbeat shows as its stage while it exists


def beat_s() -> float:
    return float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))


def speed_wait_s() -> float:
    """How long a speed measurement waits for other evaluations and chats to leave its device before it is
    deferred (``GROVE_SPEED_WAIT_S``, default 600 s). A device busy with a run's passes defers it at once."""
    return float(os.environ.get("GROVE_SPEED_WAIT_S", "600"))


# -- device names ---------------------------------------------------------------------------------------------------
def cpu(host: str | None = None) -> str:
    return f"cpu@{host or machine.hostname()}"


def gpu(index: int | str, host: str | None = None) -> str:
    return f"gpu{index}@{host or machine.hostname()}"


def visible_gpus() -> list[str]:
    """The GPUs this process was given (``CUDA_VISIBLE_DEVICES``, as the worker and Ray's host actor set it)."""
    return [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]


def of_process() -> list[str]:
    """The devices a run in this process works on: its GPUs, else the CPU."""
    gpus = visible_gpus()
    return [gpu(g) for g in gpus] if gpus else [cpu()]


def for_eval(device: str) -> str:
    """The device an evaluation with ``EvalConfig.device`` (``cpu`` or ``gpu``) measures on."""
    if device == "gpu":
        gpus = visible_gpus()
        return gpu(gpus[0] if gpus else 0)
    return cpu()


def of_gpus(gpus: list[int]) -> list[str]:
    """The devices a run placed on ``gpus`` (a worker's slots; [] = the CPU) works on, on this host."""
    return [gpu(g) for g in gpus] if gpus else [cpu()]


def describe(device: str) -> str:
    """'the CPU' or 'GPU 0' (for stage texts)."""
    kind = device.split("@", 1)[0]
    return "the CPU" if kind == "cpu" else f"GPU {kind[3:]}"


def host_of(device: str) -> str:
    return device.split("@", 1)[1] if "@" in device else ""


# -- the CPU's cores shared among Grove's work on it --------------------------------------------------------------
def cpu_cores() -> int:
    """Cores this process may use (its affinity mask, else the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def niceness() -> int:
    """This process's scheduling niceness (0 where it cannot be read)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def normal_priority() -> int:
    """Bring this process back to niceness 0 where it runs lower, and return its niceness now. Ray starts its
    workers at niceness 15 (raylet's ``worker_niceness``), and a runner started from a Ray actor inherits it, as do
    its evaluations: on a CPU shared with anything at normal priority (the worker, a chat, the UI) its training
    slowed and its speed figures came out lower than the same candidate's alone (issue 21). The runner calls this only
    when a Ray node started it (a niceness the user chose for Grove is kept). Lowering niceness needs
    the privilege to do so (CAP_SYS_NICE) unless the node was started with ``RAY_worker_niceness=0``
    (``engine.runs.ray_cluster.start_node`` does); where it fails, the niceness stays, is recorded with every speed
    figure (``Claim.conditions``) and Compare tells such figures apart."""
    n = niceness()
    if n > 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        except (AttributeError, OSError):
            pass
    return niceness()


def cpu_share(reg: Any, *, cores: int | None = None) -> int:
    """Threads one Grove activity on this host's CPU should use now: its cores divided evenly among the Grove
    activities computing on it (runs' passes, evaluations' quality part, chats), at least 1. Two runs that each
    start as many threads as there are cores slow each other down far more than twice (their thread pools spin
    and wait on each other's descheduled threads: measured 4-14x on 2 cores, docs/benchmarks.md, issue 21)."""
    cores = cores or cpu_cores()
    try:  # a measurement (exclusive) has the device alone: it divides nothing
        n = sum(1 for r in computing(reg.device_activities(cpu(), live=True)) if not r["exclusive"])
    except Exception:  # a registry that cannot be read must not stop the work: all cores, as before
        return cores
    return max(1, cores // max(1, n))


class CpuShare:
    """Keeps this process's PyTorch threads at its share of the CPU (``cpu_share``). ``adjust()`` is called from the
    thread that computes (OpenMP's thread count belongs to the calling thread; the runner calls it at each training
    step) and never waits for the registry: the share is read once at the first call, then every ``every_s`` by a
    background thread, and ``adjust()`` applies the latest figure. On the Ray executor every registry read is relayed
    to the head and answered at the worker's next poll; read on the training thread, it added ~2 s to each 3.5 s LoRA
    step of the demo (issue 21). A process on a GPU is left alone."""

    def __init__(self, reg: Any, every_s: float = 2.0) -> None:
        self.reg, self.every_s = reg, every_s
        self.active = not visible_gpus()
        self.threads: int | None = None
        self._want: int | None = None
        self._reader: threading.Thread | None = None

    @staticmethod
    def _read(ref: Any, every_s: float) -> None:
        while True:  # until the CpuShare is gone (the reader holds it only weakly)
            time.sleep(every_s)
            me = ref()
            if me is None:
                return
            me._want = cpu_share(me.reg)
            del me

    def adjust(self) -> int | None:
        if not self.active:
            return None
        if self._reader is None:
            self._want = cpu_share(self.reg)
            self._reader = threading.Thread(target=self._read, args=(weakref.ref(self), self.every_s),
                                            name="grove-cpu-share", daemon=True)
            self._reader.start()
        n = self._want
        if n is not None and n != self.threads:
            import torch

            torch.set_num_threads(n)
            self.threads = n
        return self.threads


# -- stage notes (what a run waits for, shown by its heartbeat) -------------------------------------------------------
def waiting_stage(device: str, why: str = "") -> str:
    """The stage of a run whose evaluation waits for the device."""
    return f"waiting for {describe(device)} to measure speed alone" + (f" ({why})" if why else "")


def blocked_stage(device: str, label: str = "") -> str:
    """The stage of a run that waits to go on while another measurement holds its device."""
    return f"waiting: {describe(device)} is measuring a candidate's speed alone" + (f" ({label})" if label else "")


def set_stage_note(text: str | None) -> None:
    """Show ``text`` as the run's stage (None: back to the run's own stage). Works from the evaluator's child
    processes too: the note is a file named by the runner (``GROVE_STAGE_NOTE``)."""
    path = os.environ.get(STAGE_NOTE_ENV)
    if not path:
        return
    try:
        if text:
            Path(path).write_text(text)
        else:
            Path(path).unlink(missing_ok=True)
    except OSError:
        pass


def stage_with_note(stage: str) -> str:
    """The stage a run's heartbeat writes: the note while one is up, else ``stage``."""
    path = os.environ.get(STAGE_NOTE_ENV)
    if path:
        try:
            note = Path(path).read_text().strip()
            if note:
                return note
        except OSError:
            pass
    return stage


# -- activities ----------------------------------------------------------------------------------------------------
class _Beat:
    """Heart-beats activity rows from a daemon thread until stopped."""

    def __init__(self, reg: Any, ids: list[int]) -> None:
        self.reg, self.ids = reg, ids
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="grove-device-beat", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(beat_s()):
            for i in self.ids:
                try:
                    self.reg.beat_activity(i)
                except Exception:  # noqa: BLE001 - a busy registry: the next beat retries
                    pass

    def stop(self) -> None:
        self._stop.set()


def begin(reg: Any, devices: list[str], kind: str, *, run_id: str | None = None, label: str = "",
          on_wait: Callable[[str, dict[str, Any]], None] | None = None, poll_s: float = 0.5) -> list[int]:
    """Record ``kind`` work starting on ``devices``, waiting while a speed measurement holds one of them
    (``on_wait(device, claim)`` is called each time it waits). Returns the activity ids (end them with ``end``)."""
    ids: list[int] = []
    try:
        for d in devices:
            while True:
                r = reg.begin_activity(d, kind, run_id=run_id, label=label, host=machine.hostname(), pid=os.getpid())
                if r["id"] is not None:
                    ids.append(int(r["id"]))
                    break
                if on_wait:
                    on_wait(d, r["held_by"])
                time.sleep(poll_s)
    except BaseException:
        end(reg, ids)
        raise
    return ids


def end(reg: Any, ids: list[int]) -> None:
    for i in ids:
        try:
            reg.end_activity(i)
        except Exception:  # noqa: BLE001 - unended rows go stale and are swept
            pass


@contextmanager
def using(reg: Any, devices: list[str], kind: str, *, run_id: str | None = None, label: str = "",
          on_wait: Callable[[str, dict[str, Any]], None] | None = None) -> Iterator[list[int]]:
    """``kind`` work on ``devices`` for the ``with`` block (waits first while a measurement holds one)."""
    ids = begin(reg, devices, kind, run_id=run_id, label=label, on_wait=on_wait)
    beat = _Beat(reg, ids)
    try:
        yield ids
    finally:
        beat.stop()
        end(reg, ids)


class RunActivity:
    """A runner's passes on its devices: started when the run starts, paused while its own evaluation runs (so
    the evaluation can have the device alone), resumed after (waiting while another measurement holds it)."""

    current: RunActivity | None = None  # the one of this process (the runner's)

    def __init__(self, reg: Any, run_id: str, label: str = "") -> None:
        self.reg, self.run_id, self.label = reg, run_id, label
        self.devices = of_process()
        self.ids: list[int] = []
        self._beat: _Beat | None = None
        self._lock = threading.Lock()

    def start(self) -> RunActivity:
        def wait(device: str, claim: dict[str, Any]) -> None:
            set_stage_note(blocked_stage(device, claim.get("label") or ""))

        with self._lock:
            if not self.ids:
                self.ids = begin(self.reg, self.devices, "run", run_id=self.run_id, label=self.label, on_wait=wait)
                set_stage_note(None)
                self._beat = _Beat(self.reg, self.ids)
        RunActivity.current = self
        return self

    def stop(self) -> None:
        with self._lock:
            if self._beat:
                self._beat.stop()
            end(self.reg, self.ids)
            self.ids, self._beat = [], None


@contextmanager
def run_paused() -> Iterator[None]:
    """Inside a runner: its passes' activity is ended for the ``with`` block (its evaluation runs meanwhile, in a
    child process with activities of its own) and started again after. Elsewhere: nothing."""
    act = RunActivity.current
    if act is None:
        yield
        return
    act.stop()
    try:
        yield
    finally:
        act.start()


# -- exclusive claims ------------------------------------------------------------------------------------------------
def _cpu_times() -> tuple[float, float]:
    """(busy, all) seconds of every CPU of the machine since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / hz, sum(vals[:8]) / hz


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


@dataclass
class Claim:
    """An exclusive claim on one device (``granted``), or why it was not had (``why``, ``waited_for``)."""

    device: str
    granted: bool = False
    id: int | None = None
    started_at: float = 0.0
    waited_s: float = 0.0
    waited_for: list[str] = field(default_factory=list)
    why: str = ""
    load_before: float | None = None
    _probe: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def start_probe(self) -> None:
        busy, _ = _cpu_times()
        self._probe = (time.monotonic(), busy, _own_cpu(), 0.0)

    def conditions(self, reg: Any, threads: int | None) -> dict[str, Any]:
        """What the figures measured under this claim were measured under: the device alone or not, the load of
        the machine before (1-min load average) and during (CPU cores busy with other processes than this one,
        from /proc/stat), the Grove work it waited for and any Grove work on the device while it held it (none,
        by construction; read back from the registry), the threads the measurement used."""
        t0, busy0, own0, _ = self._probe
        wall = max(1e-6, time.monotonic() - t0)
        busy1, _ = _cpu_times()
        others = max(0.0, (busy1 - busy0) - (_own_cpu() - own0)) / wall
        during = []
        if self.granted:
            rows = reg.device_activities(self.device, since=self.started_at)
            during = [f"{r['kind']} {r['run_id'] or ''} {r['label']}".strip() for r in rows
                      if r["id"] != self.id and r["started_at"] >= self.started_at]
        return {
            "device": self.device,
            "alone": bool(self.granted and not during),
            "grove_during": during,
            "waited_s": round(self.waited_s, 2),
            "waited_for": self.waited_for[:10],
            "load_before": self.load_before,
            "load_after": load_avg(),
            "other_cpu_during": round(others, 2),
            "cpus": os.cpu_count(),
            "threads": threads,
            "niceness": niceness(),
        }


def _label(r: dict[str, Any]) -> str:
    return f"{r['kind']} of run {r['run_id']}: {r['label']}" if r.get("run_id") else f"{r['kind']}: {r['label']}"


@contextmanager
def exclusive(reg: Any, device: str, *, run_id: str | None = None, label: str = "",
              wait_s: float | None = None, defer_for_runs: bool = True, stage: bool = True,
              poll_s: float = 0.5) -> Iterator[Claim]:
    """Claim ``device`` for the ``with`` block. Waits while other evaluations, chats or measurements use it (at
    most ``wait_s``; the run's stage says so); gives up at once while a run's passes use it (``defer_for_runs``).
    Yields the ``Claim``: measure only when ``claim.granted``; it is released when the block ends."""
    wait_s = speed_wait_s() if wait_s is None else wait_s
    claim = Claim(device)
    t0 = time.monotonic()
    while True:
        claim.load_before = load_avg()
        r = reg.claim_device(device, run_id=run_id, label=label, host=machine.hostname(), pid=os.getpid(),
                             info={"load_before": claim.load_before})
        if r["id"] is not None:
            claim.granted, claim.id, claim.started_at = True, int(r["id"]), float(r["started_at"])
            break
        blockers = r["blockers"]
        for b in blockers:
            if _label(b) not in claim.waited_for:
                claim.waited_for.append(_label(b))
        runs = [b for b in blockers if b["kind"] == "run"]
        if (defer_for_runs and runs) or time.monotonic() - t0 >= wait_s:
            claim.why = (f"{describe(device)} is busy with " + "; ".join(_label(b) for b in (runs or blockers)[:3]))
            break
        if stage:
            set_stage_note(waiting_stage(device, _label(blockers[0])))
        time.sleep(poll_s)
    claim.waited_s = time.monotonic() - t0
    if stage:
        set_stage_note(None)
    beat = _Beat(reg, [claim.id]) if claim.granted else None
    try:
        if claim.granted:
            claim.start_probe()
        yield claim
    finally:
        if beat:
            beat.stop()
        if claim.id is not None:
            try:
                reg.end_activity(claim.id, {"load_before": claim.load_before, "load_after": load_avg(),
                                            "waited_s": round(claim.waited_s, 2)})
            except Exception:  # noqa: BLE001 - an unended claim goes stale and is swept
                pass


def comparable_class(cond: dict[str, Any] | None, busy_cores: float = 0.5) -> str:
    """The class of conditions a speed figure was measured under; figures of different classes are not put on
    one axis without a warning (Compare): alone or shared with other Grove work, the threads used, and whether
    processes outside Grove kept more than ``busy_cores`` CPU cores busy meanwhile."""
    if not cond:
        return "conditions not recorded"
    parts = ["device alone" if cond.get("alone") else "shared with other Grove work"]
    if cond.get("threads"):
        parts.append(f"{cond['threads']} threads")
    if cond.get("niceness"):  # measured at lowered priority (a Ray worker's default): anything else came first
        parts.append(f"niceness {cond['niceness']}")
    other = cond.get("other_cpu_during")
    if isinstance(other, (int, float)) and other > busy_cores:
        parts.append("machine busy outside Grove")
    return ", ".join(parts)


@contextmanager
def chatting(device: str, label: str = "") -> Iterator[None]:
    """A chat answer being generated on ``device`` (``cpu``, or ``cuda``/``gpu``): waits while a speed measurement
    holds the device, and keeps every measurement off it until the answer ends."""
    from engine.runs.registry import Registry

    with using(Registry(), [for_eval("cpu" if device == "cpu" else "gpu")], "chat", label=label):
        yield

"""Progress capture inside a runner: Olive's log lines, the Trainer's steps and per-pass GPU memory become registry
events. ``EventSink`` collects them from any thread; the runner's heartbeat thread writes them in batches."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Optional

from engine.runs import devices
from engine.runs.registry import Registry, now

PASS_START = re.compile(r"^Running pass (?P<name>[^:]+):(?P<type>\S+)")
PASS_END = re.compile(r"^Pass (?P<name>[^:]+):(?P<type>\S+) finished in (?P<seconds>[0-9.]+) seconds")
CACHE_HIT = re.compile(r"^Loaded model from cache: (?P<model_id>\S+)")
SEARCH_POINT = re.compile(r"^Step (?P<step>\d+) with search point (?P<point>.*)$")
NOTEWORTHY = re.compile(r"(pruned|FAILED|No output model produced|Saved output model|evaluation)", re.I)


class EventSink:
    """Collects events from any thread; the heartbeat thread writes them to the registry in batches."""

    def __init__(self, reg: Registry, run_id: str) -> None:
        self.reg, self.run_id = reg, run_id
        self._buf: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.stage = "starting"
        self.progress = 0.0
        self.passes_done = 0
        self.n_passes = 1
        self.olive_errors: list[BaseException] = []  # exceptions Olive logged and swallowed (it may still exit 0)

    def emit(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._buf.append((now(), kind, data))

    def flush(self) -> None:
        # one flush at a time, taken and written under one lock: the runner's last flush (before "succeeded") must
        # not overtake a batch the heartbeat thread took and is still writing (relayed on Ray, it reached the head
        # after the run's end, so a reader saw "succeeded" without the run's last events)
        with self._flush_lock:
            with self._lock:
                buf, self._buf = self._buf, []
            self.reg.add_events(self.run_id, buf)
            self.reg.heartbeat(self.run_id, stage=devices.stage_with_note(self.stage), progress=round(self.progress, 4))


class OliveLogHandler(logging.Handler):
    """Turns Olive's log lines into progress events (Olive 0.13 has no callback API)."""

    def __init__(self, sink: EventSink, n_passes: int) -> None:
        super().__init__(logging.INFO)
        self.sink, self.n_passes, self.done = sink, max(n_passes, 1), 0
        sink.n_passes = self.n_passes
        self._pending: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        if record.exc_info and record.exc_info[1] is not None and record.levelno >= logging.ERROR:
            self.sink.olive_errors.append(record.exc_info[1])
        if m := PASS_START.match(msg):
            self._pending = m["name"]
            self.sink.stage = f"pass {m['name']}"
            self.sink.emit("pass_started", name=m["name"], type=m["type"])
        elif m := CACHE_HIT.match(msg):
            self.done += 1
            self.sink.passes_done = self.done
            self.sink.progress = min(self.done / self.n_passes, 0.99)
            self.sink.emit("pass_cached", name=self._pending, model_id=m["model_id"])
        elif m := PASS_END.match(msg):
            self.done += 1
            self.sink.passes_done = self.done
            self.sink.progress = min(self.done / self.n_passes, 0.99)
            self.sink.emit("pass_finished", name=m["name"], type=m["type"], seconds=float(m["seconds"]))
        elif m := SEARCH_POINT.match(msg):
            self.sink.emit("search_point", step=int(m["step"]), point=m["point"])
        elif record.levelno >= logging.WARNING or NOTEWORTHY.search(msg):
            self.sink.emit("log", level=record.levelname, message=msg[:2000])


def install_trainer_callback(sink: EventSink) -> None:
    """Add a TrainerCallback to every transformers.Trainer built in this process (Olive's LoRA/QLoRA passes)."""
    import transformers

    class GroveProgress(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            sink.emit("train_started", max_steps=state.max_steps)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            logs = logs or {}
            data = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            sink.emit("train_step", step=state.global_step, max_steps=state.max_steps, **data)

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if state.max_steps:
                sink.stage = f"training {state.global_step}/{state.max_steps}"
                # progress inside the training pass, so the UI can estimate what is left
                sink.progress = min((sink.passes_done + state.global_step / state.max_steps) / sink.n_passes, 0.99)

    original = transformers.Trainer.__init__
    if getattr(original, "_grove", False):
        return

    def __init__(self, *a, **kw):  # noqa: ANN001, N807
        original(self, *a, **kw)
        self.add_callback(GroveProgress())

    __init__._grove = True  # type: ignore[attr-defined]
    transformers.Trainer.__init__ = __init__


def install_memory_probe(sink: EventSink, interval: float = 0.2) -> None:
    """On a GPU, record each pass's peak memory as a ``pass_memory`` event: PyTorch's peak allocated and reserved
    bytes (what the pre-flight estimate models) and the device's peak used bytes sampled with ``cudaMemGetInfo``
    (adds the CUDA context and onnxruntime's allocations). Nothing is recorded on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return
    from olive.engine.engine import Engine

    original = Engine._run_pass
    if getattr(original, "_grove", False):
        return

    def _run_pass(self, pass_name, *a, **kw):  # noqa: ANN001, ANN202
        peak = {"device_used": 0}
        done = threading.Event()

        def sample() -> None:
            while True:
                try:
                    free, total = torch.cuda.mem_get_info()
                    peak["device_used"] = max(peak["device_used"], total - free)
                except Exception:  # noqa: BLE001 - a probe must never break the run
                    return
                if done.wait(interval):
                    return

        torch.cuda.reset_peak_memory_stats()
        t = threading.Thread(target=sample, name="grove-memory", daemon=True)
        t.start()
        try:
            return original(self, pass_name, *a, **kw)
        finally:
            done.set()
            t.join(timeout=2)
            sink.emit("pass_memory", name=pass_name, torch_peak_allocated=torch.cuda.max_memory_allocated(),
                      torch_peak_reserved=torch.cuda.max_memory_reserved(), device_peak_used=peak["device_used"],
                      device_total=torch.cuda.get_device_properties(0).total_memory)

    _run_pass._grove = True  # type: ignore[attr-defined]
    Engine._run_pass = _run_pass

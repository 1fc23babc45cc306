"""Progress capture inside a runner: Olive's log lines, the Trainer's steps and per-pass GPU memory become registry
events. ``EventSink`` collects them from any thread; the runner's heartbeat thread writes them in batches.

The run's progress counts its work in units: one per pass (a training pass advances step by step) and one per
evaluation (advanced answer by answer): Olive's own evaluations (the input model, the outputs) and the measurements
after the workflow (engine.evaluate.candidates). Evaluations run in processes of their own and write ``eval_*`` and
``measure_started`` events straight to the registry (engine.evaluate.progress); the heartbeat reads them back
(``EventSink.absorb``) and names the stage: ``measuring 3 candidates (2 of 3): 12 of 20 answers``."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

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
        self.pass_frac = 0.0  # of the pass running now (a training pass: its steps)
        self.n_evals = 0  # evaluations expected (planned_evaluations; exact once the measuring starts)
        self.evals_done = 0
        self.eval_frac = 0.0  # of the evaluation running now (its answers)
        self.measuring = 0  # candidates measured after the workflow (0 while Olive runs)
        self._measure_base = 0  # evaluations done when the measuring started
        self._eval_pass = ""  # the stage an evaluation interrupted (Olive evaluates between passes)
        self._last_event = 0  # the last eval_* event absorbed
        self._absorb_lock = threading.Lock()
        self.olive_errors: list[BaseException] = []  # exceptions Olive logged and swallowed (it may still exit 0)

    def update(self) -> None:
        """Recompute ``progress`` from the units done; it never goes back, and stays below 1 until the run ends."""
        total = max(self.n_passes + self.n_evals, 1)
        done = self.passes_done + min(self.pass_frac, 1.0) + self.evals_done + min(self.eval_frac, 1.0)
        self.progress = max(self.progress, min(done / total, 0.99))

    def absorb(self) -> None:
        """Read the evaluations' events written since the last call (by the evaluator's own processes) into the
        stage and the progress."""
        with self._absorb_lock:  # the heartbeat and the runner's last call: each event counted once
            events = self.reg.events(self.run_id, kinds=list(EVAL_EVENTS), after_id=self._last_event)
            for e in events:
                self._last_event = max(self._last_event, int(e["id"]))
                self.on_eval_event(e["kind"], e["data"])
            if events:
                self.update()

    def on_eval_event(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "measure_started":
            self.measuring = int(d.get("candidates") or 0)
            self._measure_base = self.evals_done
            self.n_evals = self.evals_done + self.measuring  # exact from here on
            self.stage = f"measuring {self.measuring} candidates" if self.measuring else "measuring: nothing left"
            return
        if kind == "eval_started":
            self.eval_frac = 0.0
            if not self.stage.startswith(("evaluating", "measuring")):
                self._eval_pass = self.stage
        elif kind == "eval_progress":
            done, total = int(d.get("done") or 0), max(int(d.get("total") or 1), 1)
            lo, hi = EVAL_PHASES.get(str(d.get("phase")), (0.0, 1.0))
            self.eval_frac = lo + (hi - lo) * done / total
        elif kind == "eval_finished":
            self.evals_done += 1
            self.eval_frac = 0.0
            self.n_evals = max(self.n_evals, self.evals_done)
        self.stage = self._eval_stage(kind, d)

    def _eval_stage(self, kind: str, d: dict[str, Any]) -> str:
        what = {"scoring": "{done} of {total} examples scored", "answers": "{done} of {total} answers",
                "timing": "timing decode"}.get(str(d.get("phase")), "")
        detail = what.format(done=d.get("done"), total=d.get("total")) if kind == "eval_progress" else (
            "loading" if kind == "eval_started" else "done")
        if self.measuring:
            k = min(self.evals_done - self._measure_base + (kind != "eval_finished"), self.measuring)
            return f"measuring {self.measuring} candidates ({max(k, 1)} of {self.measuring}): {detail}"
        if kind == "eval_finished":
            return self._eval_pass or "running"
        return f"evaluating {d.get('label') or 'a candidate'}: {detail}"

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


EVAL_EVENTS = ("measure_started", "eval_started", "eval_progress", "eval_finished")
# the share of one evaluation each of its phases takes (engine.evaluate.evaluator: scoring, answers, timing)
EVAL_PHASES = {"scoring": (0.0, 0.3), "answers": (0.3, 0.85), "timing": (0.85, 1.0)}


def planned_evaluations(spec: dict[str, Any], n_passes: int) -> int:
    """How many evaluations a run of ``spec`` (the run's spec as JSON) is expected to make, which its progress counts:
    the input model, the output, every intermediate model, and the int4 build with its adapter off
    (engine.evaluate.candidates)."""
    ev = spec.get("evaluation") or {}
    if not ev.get("enabled"):
        return 0
    n = int(ev.get("evaluate_input_model", True)) + 1
    if ev.get("evaluate_intermediate_models", True):
        n += max(n_passes - 1, 0)
    if any(p.get("type") == "ExtractAdapters" for p in spec.get("passes") or []):
        n += 1
    return n


class OliveLogHandler(logging.Handler):
    """Turns Olive's log lines into progress events (Olive 0.13 has no callback API)."""

    def __init__(self, sink: EventSink, n_passes: int) -> None:
        super().__init__(logging.INFO)
        self.sink, self.n_passes, self.done = sink, max(n_passes, 1), 0
        sink.n_passes = self.n_passes
        self._pending: str | None = None

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
            self.sink.passes_done, self.sink.pass_frac = self.done, 0.0
            self.sink.update()
            self.sink.emit("pass_cached", name=self._pending, model_id=m["model_id"])
        elif m := PASS_END.match(msg):
            self.done += 1
            self.sink.passes_done, self.sink.pass_frac = self.done, 0.0
            self.sink.update()
            self.sink.emit("pass_finished", name=m["name"], type=m["type"], seconds=float(m["seconds"]))
        elif m := SEARCH_POINT.match(msg):
            self.sink.emit("search_point", step=int(m["step"]), point=m["point"])
        elif record.levelno >= logging.WARNING or NOTEWORTHY.search(msg):
            self.sink.emit("log", level=record.levelname, message=msg[:2000])


LOSS_POINTS = 50  # the fewest loss points a training run logs (more when its logging_steps asks for more)


def install_trainer_callback(sink: EventSink, on_step: Callable[[], Any] | None = None) -> None:
    """Add a TrainerCallback to every transformers.Trainer built in this process (Olive's LoRA/QLoRA passes).
    ``on_step`` is called at the start of every training step, on the training thread."""
    import transformers

    class GroveProgress(transformers.TrainerCallback):
        start_step = 0  # the step this process's training started from (> 0 after a resume from a checkpoint)

        def on_train_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.start_step = int(state.global_step or 0)
            sink.emit("train_started", max_steps=state.max_steps, start_step=self.start_step)
            # resumed: the loss points up to the checkpoint, from its state, so the curve before the crash stays
            # (those the dead attempt wrote are kept too; readers keep one point per step)
            for h in state.log_history or []:
                if "loss" in h and "step" in h and int(h["step"]) <= self.start_step:
                    data = {k: float(v) for k, v in h.items() if isinstance(v, (int, float)) and k != "step"}
                    sink.emit("train_step", step=int(h["step"]), max_steps=state.max_steps, restored=True, **data)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            logs = logs or {}
            data = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            if "train_loss" in data and self.start_step and state.global_step > self.start_step:
                # after a resume the Trainer divides the loss of the steps it ran by every step of the run: keep the
                # mean over the steps it did run, and say which (engine.views.runs.training_summary)
                data["trainer_train_loss"] = data.pop("train_loss")
                data["mean_loss"] = data["trainer_train_loss"] * state.global_step / (state.global_step - self.start_step)
                data["mean_from_step"] = self.start_step + 1
            sink.emit("train_step", step=state.global_step, max_steps=state.max_steps, **data)

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            if on_step is not None:
                on_step()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            # a loss point at least every max_steps/LOSS_POINTS steps, whatever logging_steps says, so a run has a
            # curve (logging only reads the loss the Trainer already sums: training is unchanged)
            every = max(1, -(-int(state.max_steps or 0) // LOSS_POINTS))
            if state.global_step and state.global_step % every == 0:
                control.should_log = True
            if state.max_steps:
                sink.stage = f"training {state.global_step}/{state.max_steps}"
                # progress inside the training pass, so the UI can estimate what is left
                sink.pass_frac = state.global_step / state.max_steps
                sink.update()

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

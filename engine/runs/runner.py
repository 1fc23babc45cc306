"""Runs one Olive workflow in its own interpreter: ``python -m engine.runs.runner RUN_ID``.

The worker starts it in a new process group with stdout/stderr sent to ``runs/<id>/run.log``. The runner:
- writes the run's exported Olive config to ``runs/<id>/olive_config.json`` and runs it with Olive's own API
  (``olive.workflows.run``), exactly what ``olive run --config`` does;
- reports progress as registry events: a handler on the ``olive`` logger turns Olive's log lines into
  pass started/finished/cached events, and a ``transformers.TrainerCallback`` (added to every Trainer Olive builds)
  reports training step, loss and learning rate; a heartbeat thread writes them in batches;
- reads Olive's footprint into candidates (every model the run produced, with its parent and parameters); a
  workflow with no passes (a baseline run) has one candidate, the input model, with Olive's evaluation of it;
- checks that the promised files exist (Olive often exits 0 when a pass failed);
- ends the run: succeeded, failed (error type, message) or cancelled (SIGTERM/SIGINT become KeyboardInterrupt,
  so Olive unwinds and removes its temp folders).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from engine import paths
from engine.olive import config as olive_config
from engine.olive.footprint import (
    INPUT_METRICS,
    baseline_candidates,
    candidates_from_footprint,
    evaluation_adapter,
    expected_files,
    final_model_ids,
)
from engine.runs import devices
from engine.runs.progress import (
    EventSink,
    OliveLogHandler,
    install_memory_probe,
    install_trainer_callback,
    planned_evaluations,
)
from engine.runs.registry import Registry
from engine.runs.relay import RELAY_ENV, open_registry

HEARTBEAT_S = float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))
LOG = logging.getLogger("grove.runner")

def _sigterm(signum: int, frame: Any) -> None:
    # once: a second SIGTERM (the worker's, after the runner's own cancel) must not interrupt the clean-up
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def attach_evaluations(cands: list[dict[str, Any]], run_id: str, reg: Registry) -> None:
    """Failed metrics (with reasons), the evaluation record and its fingerprint, joined on the model folder and
    adapter that the run's evaluator recorded (engine.evaluate.olive_metric.locate, linked to the run)."""
    evals = reg.run_evaluations(run_id)
    for c in cands:
        p = Path(c["_eval_path"] or c["path"] or "")
        folder = p.parent if p.is_file() else p
        adapter = evaluation_adapter(c.get("model_type"), folder, c.get("adapter_path")) or ""
        rec = evals.get((str(folder), adapter)) if c["metrics"] else None
        if rec:
            c["fingerprint_id"] = rec["fingerprint_id"]
            c["failed"] = rec["failed"] or {}
            c["eval_key"] = rec["key"]
            # a metric deferred until the device is free is "speed pending", not Olive's worst value; one measured
            # since (a deferred measurement that already ran) is the evaluation's number
            for m, v in list(c["metrics"].items()):
                if isinstance(v, (int, float)) and math.isinf(v) and m not in c["failed"]:
                    if m in (rec.get("metrics") or {}) and m not in (rec.get("pending") or []):
                        c["metrics"][m] = rec["metrics"][m]
                    else:
                        c["metrics"].pop(m)
            for m in rec.get("pending") or []:
                c["metrics"].pop(m, None)


class OutputMissing(Exception):
    pass


def run(run_id: str) -> int:
    reg = open_registry()  # grove.db, or relayed to the head (Ray executor)
    row = reg.get_run(run_id)
    rdir = Path(row["run_dir"])
    rdir.mkdir(parents=True, exist_ok=True)
    sink = EventSink(reg, run_id)
    stop = threading.Event()

    def beat() -> None:
        cancel_seen = False
        while not stop.wait(HEARTBEAT_S):
            try:
                sink.absorb()  # the evaluations' progress, written by their own processes
                sink.flush()
                # a cancel is honoured even when no worker is alive to signal the process group
                if not cancel_seen and reg.get_run(run_id)["cancel_requested"]:
                    cancel_seen = True
                    os.kill(os.getpid(), signal.SIGTERM)
            except Exception:  # a busy registry must not kill the run; the next beat retries
                _quiet(traceback.print_exc)

    os.environ["GROVE_RUN_ID"] = run_id  # the evaluator links its results to this run (engine.evaluate.olive_metric)
    os.environ[devices.STAGE_NOTE_ENV] = str(rdir / "stage-note")  # what the run waits for (its evaluator's too)
    devices.set_stage_note(None)
    signal.signal(signal.SIGTERM, _sigterm)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an OSError (EFBIG), not a silent death
    reg.update_run(run_id, pid=os.getpid())
    threading.Thread(target=beat, name="grove-heartbeat", daemon=True).start()
    t0 = time.perf_counter()
    activity = devices.RunActivity(reg, run_id, label=row.get("name") or "")
    try:
        activity.start()  # the run's passes use its device (waits while a speed measurement holds it)
        config = olive_config.parse(row["olive_config"])
        cfg_path = rdir / "olive_config.json"
        cfg_path.write_text(json.dumps(config, indent=2))
        sink.stage = "loading Olive"
        sink.emit("log", level="INFO", message=f"runner started, pid {os.getpid()}, python {sys.executable}")
        # a runner started by a Ray node's RunHost inherits the niceness Ray gives its workers (15 unless the node
        # was started with RAY_worker_niceness=0): go back to normal there; a niceness the user chose is kept
        ray_child = bool(os.environ.get(RELAY_ENV))
        nice = devices.normal_priority() if ray_child else devices.niceness()
        if nice > 0:
            sink.emit("log", level="WARNING", message=(
                f"this runner runs at niceness {nice}" + (
                    " and could not raise it (Ray nodes nice their workers: start them with RAY_worker_niceness=0, "
                    "docs/ray.md)" if ray_child else "") + "; its training is slowed by anything else on the CPU and "
                "its speed figures are marked with the niceness"))
        spec = _prepare_data(row)
        from engine.olive import compat as olive_compat

        olive_compat.register_hook()  # Olive bugs Grove's evaluator hits (no-op when the .pth hook already did it)
        from olive.workflows import run as olive_run

        from engine.runs import olive_cache

        handler = OliveLogHandler(sink, len(config.get("passes", {})))
        if olive_config.grove_eval_config(config):
            sink.n_evals = planned_evaluations(json.loads(row["spec"]), handler.n_passes)  # evaluation counts in progress and ETA
        logging.getLogger("olive").addHandler(handler)
        install_trainer_callback(sink, on_step=devices.CpuShare(reg).adjust)  # its share of the CPU, step by step
        install_memory_probe(sink)
        olive_cache.install(sink, rdir / "checkpoints", spec.resources.checkpoint_steps,
                            olive_config.evaluation_cache_key(config))
        sink.stage = "running"
        wf = olive_run(str(cfg_path))
        output_dir = olive_config.output_dir(config) or rdir / "output"
        fp_path = output_dir / "footprint.json"
        fp = json.loads(fp_path.read_text()) if fp_path.exists() else {}
        baseline = not config.get("passes")  # no passes: Olive measures the input model, the run's one candidate
        if baseline:
            cands = baseline_candidates(output_dir, olive_config.input_model(config))
            best_ids = {c["model_id"] for c in cands}
        else:
            best = wf.get_best_candidate() if wf is not None and wf.has_output_model() else None
            best_ids = {best.model_id} if best is not None else final_model_ids(output_dir / "output_footprint.json")
            cands = candidates_from_footprint(fp, output_dir, best_ids, olive_config.input_model(config))
        attach_evaluations(cands, run_id, reg)
        for c in cands:
            del c["_eval_path"]
        missing = [f for f in expected_files(config) if not (output_dir / f).is_file()]
        if missing or not best_ids:
            cause = sink.olive_errors[0] if sink.olive_errors else None
            raise OutputMissing(
                "Olive finished without the promised output "
                + (f"(missing in {output_dir}: {', '.join(missing)})" if missing else
                   f"(no {INPUT_METRICS}: the input model was not measured)" if baseline else "(no output model)")
                + (f"; a pass failed with {type(cause).__name__}: {cause}" if cause else "; see the log for the pass that failed")
            ) from cause
        reg.upsert_candidates(run_id, cands)
        if olive_config.grove_eval_config(config) and not baseline:
            _measure_the_rest(run_id, sink)
        sink.progress = 1.0
        sink.stage = "succeeded"
        sink.flush()
        reg.transition(run_id, "succeeded", expect=("running",), exit_code=0, progress=1.0)
        _quiet(print, f"[grove] run {run_id} succeeded in {time.perf_counter() - t0:.1f}s, {len(cands)} candidate(s)", flush=True)
        return 0
    except KeyboardInterrupt:
        stop.set()
        _quiet(sink.flush)
        _quiet(print, f"[grove] run {run_id} cancelled", flush=True)
        reg.transition(run_id, "cancelled", expect=("running",), exit_code=130)
        return 130
    except BaseException as e:  # noqa: BLE001 - every failure ends the run with its reason
        stop.set()
        # the log may sit on the full disk: writing to it must not stop the failure from being recorded
        _quiet(traceback.print_exc)
        _quiet(sys.stdout.flush)
        _quiet(sink.flush)
        etype, msg = classify(e)
        reg.transition(run_id, "failed", expect=("running",), exit_code=1, error_type=etype, error_message=msg[:4000])
        return 1
    finally:
        stop.set()
        activity.stop()
        devices.set_stage_note(None)
        tmp = os.environ.get("TMPDIR", "")
        if tmp and Path(tmp).resolve().is_relative_to(rdir.resolve()):
            shutil.rmtree(tmp, ignore_errors=True)  # the worker removes it too; this covers a run with no worker alive


def _quiet(fn: Any, *a: Any, **kw: Any) -> None:
    """Call ``fn`` and ignore OSError (printing to a log on a full disk)."""
    try:
        fn(*a, **kw)
    except Exception:  # noqa: BLE001
        pass


def _measure_the_rest(run_id: str, sink: EventSink) -> None:
    """Candidates Olive did not evaluate (intermediate models, int4 builds with the adapter off), measured by the
    evaluator in its own interpreter (engine.evaluate.candidates). A failure there leaves them unmeasured, with a
    warning: the run's models are still good."""
    if devices.RunActivity.current:
        devices.RunActivity.current.stop()  # the passes are over: the device is the evaluations' now
    sink.stage = "measuring the other candidates"
    sink.emit("log", level="INFO", message="measuring the candidates Olive did not evaluate")
    sink.flush()
    p = subprocess.run([sys.executable, "-m", "engine.evaluate.candidates", run_id], capture_output=True, text=True)
    sink.absorb()
    print(p.stdout[-2000:], p.stderr[-4000:], sep="\n", flush=True)
    if p.returncode != 0:
        sink.emit("log", level="WARNING", message=f"some candidates were not measured (exit {p.returncode}); see the log")


def classify(e: BaseException) -> tuple[str, str]:
    """A short error type users can act on, and the message."""
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
    if _is_disk_full(e):
        return "disk_full", f"disk full: {text} (free space in {paths.home()}, or lower the output size)"
    if isinstance(e, MemoryError) or "out of memory" in low:
        return "out_of_memory", text
    if isinstance(e, ModuleNotFoundError):
        return "missing_package", text
    if "cuda" in low and ("not available" in low or "no cuda" in low or "use gpu" in low):
        return "no_cuda", text
    if isinstance(e, OutputMissing):
        return "no_output", str(e)
    from engine.errors import DataError

    if isinstance(e, DataError):
        return "bad_data", str(e)
    return type(e).__name__, text


def _is_disk_full(e: BaseException) -> bool:
    """ENOSPC (no space), EDQUOT (quota) or EFBIG (a file-size limit), wherever in the chain of causes it is."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 10:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return True
        if "no space left on device" in str(cur).lower():
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _prepare_data(row: dict[str, Any]) -> Any:
    """The run's spec, with its data prepared as training and evaluation read it (engine.data.prepare; a no-op when
    submit already prepared it)."""
    from engine.spec.schema import parse_spec

    spec = parse_spec(json.loads(row["spec"]))
    if spec.dataset is not None:
        from engine.data import prepare as data

        data.prepare(spec.dataset)
    return spec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.runs.runner RUN_ID", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())

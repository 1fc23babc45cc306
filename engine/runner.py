"""Runs one Olive workflow in its own interpreter: ``python -m engine.runner RUN_ID``.

The worker starts it in a new process group with stdout/stderr sent to ``runs/<id>/run.log``. The runner:
- writes the run's exported Olive config to ``runs/<id>/olive_config.json`` and runs it with Olive's own API
  (``olive.workflows.run``), exactly what ``olive run --config`` does;
- reports progress as registry events: a handler on the ``olive`` logger turns Olive's log lines into
  pass started/finished/cached events, and a ``transformers.TrainerCallback`` (added to every Trainer Olive builds)
  reports training step, loss and learning rate; a heartbeat thread writes them in batches;
- reads Olive's footprint into candidates (every model the run produced, with its parent and parameters);
- checks that the promised files exist (Olive often exits 0 when a pass failed);
- ends the run: succeeded, failed (error type, message) or cancelled (SIGTERM/SIGINT become KeyboardInterrupt,
  so Olive unwinds and removes its temp folders).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from engine.registry import Registry, now

HEARTBEAT_S = float(os.environ.get("GROVE_HEARTBEAT_S", "1.0"))
LOG = logging.getLogger("grove.runner")

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
        self.stage = "starting"
        self.progress = 0.0
        self.passes_done = 0
        self.n_passes = 1

    def emit(self, kind: str, **data: Any) -> None:
        with self._lock:
            self._buf.append((now(), kind, data))

    def flush(self) -> None:
        with self._lock:
            buf, self._buf = self._buf, []
        self.reg.add_events(self.run_id, buf)
        self.reg.heartbeat(self.run_id, stage=self.stage, progress=round(self.progress, 4))


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


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def dir_size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def model_path_of(node: dict[str, Any]) -> Optional[str]:
    cfg = (node.get("model_config_data") or {}).get("config") or {}
    return cfg.get("model_path")


def _metric_values(node: dict[str, Any]) -> tuple[dict[str, float], Optional[bool]]:
    """Grove metric values of a footprint node (Olive names them 'grove-<metric>'), and whether goals were met."""
    m = node.get("metrics") or {}
    values = {}
    for k, v in (m.get("value") or {}).items():
        name = k.split("-", 1)[1] if k.startswith("grove-") else k
        values[name] = v.get("value") if isinstance(v, dict) else v
    return values, (m.get("if_goals_met") if m else None)


def candidates_from_footprint(fp: dict[str, Any], output_dir: Path, best_ids: set[str]) -> list[dict[str, Any]]:
    """Every model the workflow produced (and the input model when it was evaluated), with its pass chain."""
    out = []
    for mid, node in fp.items():
        mc = node.get("model_config_data") or {}
        if mc.get("is_pruned"):
            continue
        metrics, goals_met = _metric_values(node)
        if not node.get("from_pass") and not metrics:
            continue  # the input model, not evaluated
        chain, cur = [], node
        while cur and cur.get("from_pass"):
            chain.append(cur["from_pass"])
            cur = fp.get(cur.get("parent_model_id") or "")
        chain.reverse()
        path = eval_path = model_path_of(node)
        cfg = mc.get("config") or {}
        is_output = mid in best_ids
        if is_output and (output_dir / "model.onnx").exists():
            path = str(output_dir)
        size = 0
        for key in ("model_path", "adapter_path"):
            if cfg.get(key) and Path(cfg[key]).exists():
                size += dir_size(Path(cfg[key]))
        out.append(
            {
                "model_id": mid,
                "adapter_path": cfg.get("adapter_path") or _onnx_adapter(path),
                "parent_model_id": node.get("parent_model_id"),
                "from_pass": node.get("from_pass") or "input",
                "pass_chain": chain,
                "pass_params": node.get("pass_run_config") or {},
                "path": path,
                "model_type": mc.get("type"),
                "size_bytes": size,
                "metrics": metrics,
                "goals_met": None if goals_met is None or not metrics else int(bool(goals_met)),
                "is_output": int(is_output),
                "pareto": int(bool(node.get("is_pareto_frontier"))),
                "_eval_path": eval_path,  # the folder Olive evaluated (its cache copy), not the output copy
            }
        )
    return out


def attach_evaluations(cands: list[dict[str, Any]], config: dict[str, Any], reg: Registry) -> None:
    """Failed metrics (with reasons), sample answers and the fingerprint, from the evaluator's registry records."""
    ev = (config.get("evaluators") or {}).get("grove")
    if not ev:
        return
    from engine.evaluate import EvalConfig, eval_key, fingerprint_id

    cfg = EvalConfig(**ev["metrics"][0]["user_config"]["evaluate_func_kwargs"]["config"])
    fid = fingerprint_id(cfg.fingerprint())
    for c in cands:
        if not c["metrics"] or not c["path"]:
            continue
        folder = c["_eval_path"] or c["path"]
        adapter = c["adapter_path"] if c["model_type"] == "hfmodel" else ("adapter_weights" if _onnx_adapter(folder) else None)
        rec = reg.get_evaluation(eval_key(folder, adapter, cfg))
        c["fingerprint_id"] = fid
        if rec:
            c["failed"] = rec["failed"] or {}
            c["eval_key"] = rec["key"]


def _onnx_adapter(path: Optional[str]) -> Optional[str]:
    if path and Path(path, "adapter_weights.onnx_adapter").is_file():
        return str(Path(path, "adapter_weights.onnx_adapter"))
    return None


def expected_files(config: dict[str, Any]) -> list[str]:
    """Files the workflow promises in its output folder, from its last pass."""
    passes = list(config.get("passes", {}).values())
    if not passes:
        return []
    last = passes[-1]
    last = last[0] if isinstance(last, list) else last
    types = [(p[0] if isinstance(p, list) else p)["type"] for p in passes]
    want = []
    if last["type"] in ("ModelBuilder", "ExtractAdapters") or ("ModelBuilder" in types):
        want += ["model.onnx", "genai_config.json"]
    if last["type"] == "ExtractAdapters":
        want.append("adapter_weights.onnx_adapter")
    return want


def final_model_ids(out_fp_path: Path) -> set[str]:
    """Models Olive reports as outputs that no other output model was built from (the ends of the chains)."""
    if not out_fp_path.exists():
        return set()
    nodes = json.loads(out_fp_path.read_text())
    parents = {n.get("parent_model_id") for n in nodes.values()}
    return {mid for mid, n in nodes.items() if n.get("from_pass") and mid not in parents}


class OutputMissing(Exception):
    pass


def run(run_id: str) -> int:
    reg = Registry()
    row = reg.get_run(run_id)
    rdir = Path(row["run_dir"])
    rdir.mkdir(parents=True, exist_ok=True)
    sink = EventSink(reg, run_id)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                sink.flush()
            except Exception:  # a busy registry must not kill the run; the next beat retries
                traceback.print_exc()

    signal.signal(signal.SIGTERM, _sigterm)
    reg.update_run(run_id, pid=os.getpid())
    threading.Thread(target=beat, name="grove-heartbeat", daemon=True).start()
    config = json.loads(row["olive_config"])
    cfg_path = rdir / "olive_config.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    t0 = time.perf_counter()
    try:
        sink.stage = "loading Olive"
        sink.emit("log", level="INFO", message=f"runner started, pid {os.getpid()}")
        _prepare_data(row)
        from engine import olive_compat

        olive_compat.register_hook()  # Olive bugs Grove's evaluator hits (no-op when the .pth hook already did it)
        from olive.workflows import run as olive_run

        handler = OliveLogHandler(sink, len(config.get("passes", {})))
        logging.getLogger("olive").addHandler(handler)
        install_trainer_callback(sink)
        install_memory_probe(sink)
        sink.stage = "running"
        wf = olive_run(str(cfg_path))
        output_dir = Path(config["output_dir"])
        fp_path = output_dir / "footprint.json"
        fp = json.loads(fp_path.read_text()) if fp_path.exists() else {}
        best = wf.get_best_candidate() if wf is not None and wf.has_output_model() else None
        best_ids = {best.model_id} if best is not None else final_model_ids(output_dir / "output_footprint.json")
        cands = candidates_from_footprint(fp, output_dir, best_ids)
        attach_evaluations(cands, config, reg)
        for c in cands:
            del c["_eval_path"]
        missing = [f for f in expected_files(config) if not (output_dir / f).is_file()]
        if missing or not best_ids:
            raise OutputMissing(
                "Olive finished without the promised output "
                + (f"(missing in {output_dir}: {', '.join(missing)})" if missing else "(no output model)")
                + "; see the log for the pass that failed"
            )
        reg.upsert_candidates(run_id, cands)
        sink.progress = 1.0
        sink.stage = "succeeded"
        sink.flush()
        reg.transition(run_id, "succeeded", expect=("running",), exit_code=0, progress=1.0)
        print(f"[grove] run {run_id} succeeded in {time.perf_counter() - t0:.1f}s, {len(cands)} candidate(s)", flush=True)
        return 0
    except KeyboardInterrupt:
        stop.set()
        sink.flush()
        print(f"[grove] run {run_id} cancelled", flush=True)
        reg.transition(run_id, "cancelled", expect=("running",), exit_code=130)
        return 130
    except BaseException as e:  # noqa: BLE001 - every failure ends the run with its reason
        stop.set()
        traceback.print_exc()
        sys.stdout.flush()
        try:
            sink.flush()
        except Exception:
            pass
        etype, msg = classify(e)
        reg.transition(run_id, "failed", expect=("running",), exit_code=1, error_type=etype, error_message=msg[:4000])
        return 1
    finally:
        stop.set()


def classify(e: BaseException) -> tuple[str, str]:
    """A short error type users can act on, and the message."""
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
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


def _prepare_data(row: dict[str, Any]) -> None:
    """Hub datasets are fetched and split here, in the run (local files were prepared at submit)."""
    from engine.spec import parse_spec

    spec = parse_spec(json.loads(row["spec"]))
    if spec.dataset is not None and spec.dataset.hf_name:
        from engine import data

        data.prepare(spec.dataset)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.runner RUN_ID", file=sys.stderr)
        return 2
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())

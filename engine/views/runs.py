"""Read-models for the dashboard, built from the registry: run rows with elapsed time and ETA, a run's stage
timeline (cache hits and the time they saved), its training curve, slot use, recently used inputs and the
model and dataset choices found on disk, a run's output folder and its download.

Pure functions over ``Registry`` reads; no Streamlit here, nothing heavy imported.
"""

from __future__ import annotations

import io
import json
import statistics
import time
import zipfile
from pathlib import Path
from typing import Any

from engine import paths
from engine.data import inspect as dataview
from engine.models import smollm
from engine.olive import config as olive_config
from engine.runs.progress import planned_evaluations
from engine.runs.registry import ACTIVE, Registry
from engine.views.format import fmt_seconds

KNOWN_FAILURES = {
    "out_of_memory": "The run ran out of memory. Lower per_device_train_batch_size or max_seq_len, enable "
    "gradient_checkpointing, use a smaller model, or run on a GPU with more memory.",
    "no_cuda": "A pass needs CUDA but the run had no GPU. Set the target device to GPU (with resources.gpus >= 1) "
    "on a machine with a GPU, or remove the GPU-only pass (AutoAWQQuantizer, GptqQuantizer, QLoRA...).",
    "missing_package": "A Python package a pass needs is not installed. Install it into Grove's environment "
    "(the message names the module), or remove the pass.",
    "bad_data": "The dataset could not be used. Check the file named in the message (line and column) and the "
    "column mapping / template on the Model & data page.",
    "runner_died": "The run's process ended without reporting back (often killed by the system for using too much "
    "memory). Look at the log tail; try a smaller batch or sequence length.",
    "no_output": "Olive finished but a pass produced no model. The log tail names the pass that failed.",
    "lost": "The worker stopped while the run was going and it could not be resumed. Retry the run.",
    "launch_failed": "The worker could not start the run's process. Check the worker's output and retry.",
}


def elapsed(run: dict[str, Any], now: float | None = None) -> float | None:
    if not run.get("started_at"):
        return None
    end = run.get("finished_at") or (now or time.time())
    return max(0.0, end - run["started_at"])


def eta(run: dict[str, Any], now: float | None = None, typical_s: float | None = None) -> float | None:
    """Seconds left for a running run: from its progress, else from how long similar runs took."""
    if run.get("status") != "running":
        return None
    el = elapsed(run, now) or 0.0
    p = run.get("progress") or 0.0
    if 0.02 <= p < 1:
        return el * (1 - p) / p
    if typical_s:
        return max(0.0, typical_s - el)
    return None


def typical_durations(reg: Registry, names: list[str]) -> dict[str, float]:
    """Median duration of the last succeeded runs with each name (for the ETA of runs that just started)."""
    durations = {name: reg.recent_durations(name) for name in set(names)}
    return {name: statistics.median(d) for name, d in durations.items() if d}


def run_rows(reg: Registry, runs: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """What the runs table shows for each run."""
    now = now or time.time()
    typical = typical_durations(reg, [r["name"] for r in runs if r["status"] == "running"])
    rows = []
    for r in runs:
        rows.append(
            {
                "id": r["id"],
                "name": r["name"],
                "status": r["status"],
                "stage": r.get("stage") or "",
                "progress": float(r.get("progress") or (1.0 if r["status"] == "succeeded" else 0.0)),
                "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])),
                "elapsed": fmt_seconds(elapsed(r, now)),
                "eta": fmt_seconds(eta(r, now, typical.get(r["name"]))) if r["status"] == "running" else "",
                "error": r.get("error_type") or "",
                "user": r.get("user") or "",
                "devices": devices(r),
            }
        )
    return rows


def devices(run: dict[str, Any]) -> str:
    """Where a run is: "GPU 0, 1" for the GPUs it holds, "CPU" when running without one, "" while queued/finished."""
    if run["status"] != "running":
        return ""
    try:
        gpus = json.loads(run.get("gpus") or "[]")
    except (TypeError, ValueError):
        gpus = []
    return ("GPU " + ", ".join(str(g) for g in gpus)) if gpus else "CPU"


# -- one run ---------------------------------------------------------------------------------------------------
def _pass_seconds(reg: Registry, name: str | None, ptype: str | None, exclude_run: str) -> float | None:
    """How long the same pass took the last time it really ran (what a cache hit saved)."""
    if not name:
        return None
    for d in reg.pass_finished(name, exclude_run):
        if ptype is None or str(d.get("type", "")).lower() == ptype.lower():
            return float(d.get("seconds") or 0)
    return None


def _pass_types(run: dict[str, Any]) -> dict[str, str]:
    """Pass key -> Olive pass type, from the run's spec (Olive's log lines give the type in lower case)."""
    try:
        spec = json.loads(run.get("spec") or "{}")
    except (TypeError, ValueError):
        return {}
    return {(p.get("name") or p["type"].lower()): p["type"] for p in spec.get("passes") or [] if p.get("type")}


def original_seconds(reg: Registry, run_id: str | None) -> float | None:
    """How long the run that really computed a reused result took (following reuse of a reuse)."""
    seen: set[str] = set()
    while run_id and run_id not in seen:
        seen.add(run_id)
        ev = reg.events(run_id, kinds=["reused"])
        if not ev:
            try:
                return elapsed(reg.get_run(run_id))
            except Exception:  # noqa: BLE001 - the source run may have been deleted
                return None
        run_id = ev[-1]["data"].get("from_run")
    return None


def timeline(reg: Registry, run: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """The run's passes and evaluations in the order they ran: ran or measured (with seconds), reused from cache (with
    time saved), running (an evaluation: how many answers), or planned (the passes left, then the measurements left)."""
    now = now or time.time()
    types = _pass_types(run)
    events = reg.events(run["id"], kinds=["pass_started", "pass_finished", "pass_cached", "reused"])
    stages: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for e in events:
        d = e["data"]
        if e["kind"] == "reused":
            src = d.get("from_run")
            saved = original_seconds(reg, src)
            stages.append(
                {
                    "pass": "(whole run)",
                    "type": "",
                    "state": "reused",
                    "seconds": 0.0,
                    "saved_s": saved,
                    "detail": f"identical to run {src}: every pass reused",
                }
            )
            continue
        name = d.get("name") or "?"
        st = by_name.get(name)
        if e["kind"] == "pass_started" or st is None:
            st = {
                "pass": name,
                "type": types.get(name) or d.get("type") or "",
                "state": "running",
                "started": e["ts"],
                "seconds": None,
                "saved_s": None,
                "detail": "",
            }
            by_name[name] = st
            stages.append(st)
        if e["kind"] == "pass_finished":
            st.update(state="ran", seconds=float(d.get("seconds") or 0), type=st["type"] or d.get("type") or "")
        elif e["kind"] == "pass_cached":
            st.update(
                state="cache hit",
                seconds=max(0.0, e["ts"] - st.get("started", e["ts"])),
                saved_s=_pass_seconds(reg, name, st["type"] or None, run["id"]),
                detail=f"model {d.get('model_id')}",
            )
    stages += _evaluations(reg, run)
    stages.sort(key=lambda s: s.get("started", 0.0))  # Olive evaluates between passes: in the order they ran
    active = run.get("status") == "running"
    for st in stages:
        if st["state"] == "running":
            if active:
                st["seconds"] = now - st.get("started", now)
            else:
                st["state"] = "stopped"
        st.pop("started", None)
    seen = {s["pass"] for s in stages}
    planned = olive_config.planned_passes(run.get("olive_config"))
    if run.get("status") in ACTIVE and not any(s["state"] == "reused" for s in stages):
        stages += [
            {"pass": p, "type": types.get(p, ""), "state": "planned", "seconds": None, "saved_s": None, "detail": ""}
            for p in planned
            if p not in seen
        ]
        left = _evaluations_left(reg, run, sum(s["type"] == EVALUATOR for s in stages))
        if left:
            stages.append({"pass": "measurements", "type": EVALUATOR, "state": "planned", "seconds": None,
                           "saved_s": None, "detail": f"about {left} more candidate(s) to measure"})
    return stages


EVALUATOR = "Grove evaluator"


def _evaluations(reg: Registry, run: dict[str, Any]) -> list[dict[str, Any]]:
    """One stage per evaluation of the run (Olive's and the measurements after the workflow): measured (seconds),
    reused (an earlier evaluation with the same settings), or running (with its progress)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    measuring = False
    for e in reg.events(run["id"], kinds=["measure_started", "eval_started", "eval_progress", "eval_finished"]):
        d = e["data"]
        if e["kind"] == "measure_started":
            measuring = True
            continue
        if e["kind"] == "eval_started":
            what = d.get("label") or _model_name(d.get("model"), d.get("adapter"))
            current = {"pass": "measure" if measuring else "evaluate", "type": EVALUATOR, "state": "running",
                       "started": e["ts"], "seconds": None, "saved_s": None, "detail": what}
            out.append(current)
        elif current is not None and e["kind"] == "eval_progress":
            noun = {"scoring": "examples scored", "answers": "answers"}.get(d.get("phase"), "")
            current["progress"] = f"{d.get('done')} of {d.get('total')} {noun}" if noun else "timing decode"
        elif current is not None and e["kind"] == "eval_finished":
            current.update(state="reused" if d.get("reused") else "measured",
                           seconds=float(d.get("seconds") or 0) if not d.get("reused") else 0.0)
            current = None
    for st in out:
        if st["state"] == "running" and st.get("progress"):
            st["detail"] = f"{st['detail']}: {st['progress']}"
        st.pop("progress", None)
    return out


def _model_name(model: str | None, adapter: str | None) -> str:
    """A model folder as a stage names it: its last two path parts, and the adapter."""
    parts = Path(model or "?").parts[-2:]
    return "/".join(parts) + (f" + {Path(adapter).name}" if adapter else "")


def _evaluations_left(reg: Registry, run: dict[str, Any], seen: int) -> int:
    """Evaluations the run has still to make, as planned from its spec (engine.runs.progress.planned_evaluations),
    exact once its measuring started."""
    started = reg.events(run["id"], kinds=["measure_started"])
    try:
        spec = json.loads(run.get("spec") or "{}")
    except ValueError:
        return 0
    if started:
        before = len([e for e in reg.events(run["id"], kinds=["eval_started"]) if e["id"] < started[-1]["id"]])
        return max(0, before + int(started[-1]["data"].get("candidates") or 0) - seen)
    return max(0, planned_evaluations(spec, len(olive_config.planned_passes(run.get("olive_config")))) - seen)


def train_curve(reg: Registry, run_id: str) -> list[dict[str, Any]]:
    """Training log points (step, loss, learning_rate, ...) in step order, one per step, across resumes
    (loss_points); the final summary line is skipped."""
    return loss_points(reg.events(run_id, kinds=["train_step", "resumed"]))


CURVE_KEYS = ("step", "max_steps", "loss", "learning_rate", "grad_norm", "epoch")


def loss_points(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One loss point per step from ``train_step`` and ``resumed`` events in the order written. A resume from step k
    drops the points past k (the dead attempt trained those steps again), so the curve before the crash stays and
    the steps after it are the resumed ones."""
    by_step: dict[int, dict[str, Any]] = {}
    for e in events:
        d = e["data"]
        if e["kind"] == "resumed":
            k = int(d.get("step") or 0)
            by_step = {s: p for s, p in by_step.items() if s <= k}
        elif e["kind"] == "train_step" and "loss" in d and "step" in d:
            by_step[int(d["step"])] = {k: d.get(k) for k in CURVE_KEYS}
    return [by_step[s] for s in sorted(by_step)]


def training_summary(events: list[dict[str, Any]]) -> str | None:
    """The training line of ``grove show``: the logged points with a true mean over the steps they cover (each point
    is the mean of the steps since the one before), or, with no step logged, the Trainer's mean over the steps it
    ran (corrected after a resume: the Trainer divides by every step of the run), or nothing it cannot vouch for.
    ``events``: the run's ``train_step`` and ``resumed`` events."""
    pts = loss_points(events)
    resumed = [int(e["data"].get("step") or 0) for e in events if e["kind"] == "resumed"]
    note = f"; resumed from step {resumed[-1]}, the points before it kept" if resumed else ""
    if pts:
        prev, total, n = 0, 0.0, 0
        for p in pts:
            w = int(p["step"]) - prev
            total, n, prev = total + float(p["loss"]) * w, n + w, int(p["step"])
        return (f"{len(pts)} log points, loss {pts[0]['loss']:.3f} -> {pts[-1]['loss']:.3f} at step {pts[-1]['step']}; "
                f"mean {total / max(n, 1):.3f} over steps 1-{prev}{note}")
    final = [e["data"] for e in events if e["kind"] == "train_step" and ("train_loss" in e["data"] or "mean_loss" in e["data"])]
    if not final:
        return None
    d = final[-1]
    if "mean_loss" in d:
        return (f"mean training loss {d['mean_loss']:.3f} over steps {int(d['mean_from_step'])}-{d.get('step', '?')} "
                f"(resumed from step {int(d['mean_from_step']) - 1}; no step was logged before it)")
    if resumed:  # the Trainer's mean after a resume, from before Grove corrected it: not a mean of anything
        return f"no training loss to report: no step was logged, and the run resumed from step {resumed[-1]}"
    return f"mean training loss {d['train_loss']:.3f} over {d.get('step', '?')} steps (no step was logged)"


def recent_logs(reg: Registry, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    ev = reg.events(run_id, kinds=["log"])[-limit:]
    return [{"time": time.strftime("%H:%M:%S", time.localtime(e["ts"])), **e["data"]} for e in ev]


def failure_tail(reg: Registry, run_id: str) -> str:
    ev = reg.events(run_id, kinds=["log_tail"])
    return ev[-1]["data"].get("text", "") if ev else ""


# -- machine -------------------------------------------------------------------------------------------------
def slots(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU and GPU slots of the live workers, and how many are used."""
    out = {"workers": len(workers), "cpu": 0, "cpu_used": 0, "gpu": 0, "gpu_used": 0, "gpus": []}
    for w in workers:
        try:
            s = json.loads(w.get("slots") or "{}")
        except ValueError:
            continue
        out["cpu"] += int(s.get("cpu", 0))
        out["cpu_used"] += int(s.get("cpu_used", 0))
        per = int(s.get("per_gpu", 1))
        used = s.get("gpu_used", {}) or {}
        for g in s.get("gpus", []) or []:
            out["gpus"].append({"host": w.get("host"), "gpu": g, "slots": per, "used": int(used.get(str(g), 0))})
            out["gpu"] += per
            out["gpu_used"] += int(used.get(str(g), 0))
    return out


# -- recently used inputs ---------------------------------------------------------------------------------------
def recent_inputs(reg: Registry, limit: int = 50) -> dict[str, list[str]]:
    """Models and dataset files of recent runs, most recent first, without repeats."""
    models: list[str] = []
    datasets: list[str] = []
    for spec in reg.recent_specs(limit):
        try:
            s = json.loads(spec or "{}")
        except ValueError:
            continue
        m = (s.get("model") or {}).get("name")
        d = (s.get("dataset") or {}).get("path")
        if m and m not in models:
            models.append(m)
        if d and d not in datasets:
            datasets.append(d)
    return {"models": models, "datasets": datasets}


def input_choices(reg: Registry) -> dict[str, list[str]]:
    """Model folders and dataset files under the allowed roots that exist on disk, recently used first (then the
    demo's, then what the roots hold); ``hub_models``: recently used model names that are not local paths."""
    recent = recent_inputs(reg)
    roots = dataview.allowed_roots()
    models = [m for m in recent["models"] if Path(m).is_dir()]
    for built_in in (smollm.model_dir(), paths.demo_model_dir()):  # the real default model first, then the tiny one
        if Path(built_in).is_dir() and str(built_in) not in models:
            models.append(str(built_in))
    models += [m for m in dataview.find_models(roots) if m not in models]
    ds = [d for d in recent["datasets"] if Path(d).is_file()]
    demo_d = str(paths.demo_dir() / "travel_sample.jsonl")
    if Path(demo_d).is_file() and demo_d not in ds:
        ds.append(demo_d)
    ds += [d for d in dataview.find_datasets(roots) if d not in ds]
    return {"models": models, "datasets": ds, "hub_models": [m for m in recent["models"] if not Path(m).exists()]}


# -- a run's files ----------------------------------------------------------------------------------------------
def output_dir(run: dict[str, Any]) -> Path | None:
    """The run's output folder, when it exists."""
    p = olive_config.output_dir(run["olive_config"])
    return p if p and p.is_dir() else None


def artifacts_zip(run: dict[str, Any]) -> bytes:
    """The run's output folder (and its Olive config, spec and log) as a zip."""
    out = olive_config.output_dir(run["olive_config"]) or Path(run["run_dir"]) / "output"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("olive_config.json", run["olive_config"] or "{}")
        z.writestr("spec.json", run["spec"] or "{}")
        if run["log_path"] and Path(run["log_path"]).is_file():
            z.write(run["log_path"], "run.log")
        if out.is_dir():
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, str(Path("output") / f.relative_to(out)))
    return buf.getvalue()

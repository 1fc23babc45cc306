"""A deferred speed measurement: ``python -m engine.evaluate.speed KEY``, started by a worker when the device is idle.

The evaluation ``KEY`` measured its quality while the device was busy with a run's passes and queued its speed
(``Registry.queue_speed``). Here the model is loaded again, the device claimed exclusively (waiting for other
evaluations and chats, giving up while a run's passes use it: the worker tries again later), the speed metrics
measured as the evaluator measures them, and the figures with their conditions written to the evaluation and to
every candidate it measured (``Registry.finish_speed``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from engine.evaluate.evaluator import EvalResult, _chat_renderer, detect_form, load_backend, timed_part
from engine.runs import devices
from engine.runs.relay import open_registry
from engine.spec.evaluation import EvalConfig

MAX_TRIES = 20  # a measurement that never finds its device free is failed with the reason, after this many tries


def measure(key: str, reg: Any = None) -> str:
    """Run the deferred measurement ``key``: ``done``, ``pending`` (the device was busy again) or ``failed``."""
    reg = reg or open_registry()
    rows = reg.pending_speed(key=key, statuses=("pending", "running"))
    if not rows:
        return "gone"
    p = rows[0]
    reg.mark_speed(key, "running")
    try:
        cfg = EvalConfig(**p["config"])
        folder = Path(p["model_path"])
        form = detect_form(folder)
        res = EvalResult(str(folder), p["adapter"], form)
        with devices.using(reg, [p["device"]], "eval", label=f"loading {folder.name} to measure its speed"):
            backend = load_backend(folder, form, p["adapter"], cfg)
            render = _chat_renderer(folder) if cfg.chat_template else None
        ok = timed_part(res, backend, cfg, render, reg, p["device"], run_id=None, wait_s=60)
    except Exception as e:  # noqa: BLE001 - the candidate's numbers stay as they are; the reason is recorded
        reg.finish_speed(key, {}, {m: f"deferred speed measurement failed: {type(e).__name__}: {e}"[:500]
                                   for m in p["metrics"]}, None)
        return "failed"
    if not ok:
        if (p["tries"] or 0) + 1 >= MAX_TRIES:
            reg.finish_speed(key, {}, {m: f"the device was never free to measure speed alone ({res.pending['reason']})"
                                       for m in p["metrics"]}, None)
            return "failed"
        reg.mark_speed(key, "pending", res.pending["reason"])
        return "pending"
    metrics = {m: v for m, v in res.metrics.items() if m in p["metrics"]}
    failed = {m: v for m, v in res.failed.items() if m in p["metrics"]}
    n = reg.finish_speed(key, metrics, failed, res.conditions)
    print(f"[grove] speed of {folder} measured alone: {metrics} ({n} candidate(s))", flush=True)
    return "done"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.evaluate.speed EVAL_KEY", file=sys.stderr)
        return 2
    out = measure(argv[0])
    print(f"[grove] deferred speed measurement {argv[0]}: {out}", flush=True)
    return 0 if out in ("done", "pending", "gone") else 1


if __name__ == "__main__":
    sys.exit(main())

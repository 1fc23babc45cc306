"""Every candidate of a run measured the same way, not only the ones Olive evaluates.

Without a search, Olive evaluates the input model and each flow's final model. A user deciding between models also
wants the intermediate ones (the LoRA fine-tune in PyTorch) and the int4 build with its adapter switched off (the
base the adapter sits on). The runner calls ``python -m engine.evaluate.candidates RUN_ID`` after the workflow, in
its own interpreter (the runner's layer does not import the evaluator): it evaluates what Olive did not, with the
run's own evaluator settings and the evaluation cache, and records the results on the run's candidates. An adapter-off
measurement becomes a candidate of its own (``<model_id>-no-adapter``) that chat offers like any other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from engine.evaluate import progress as eval_progress
from engine.evaluate.evaluator import eval_key, evaluate_cached
from engine.evaluate.fingerprint import fingerprint, fingerprint_id
from engine.olive import config as olive_config
from engine.olive.footprint import evaluation_adapter
from engine.runs.relay import open_registry
from engine.spec.evaluation import EvalConfig

NO_ADAPTER_SUFFIX = "-no-adapter"


def _onnx_adapter(path: str) -> bool:
    return Path(path, "adapter_weights.onnx_adapter").is_file()


def _pytorch(c: dict[str, Any]) -> bool:
    return (c.get("model_type") or "").lower().startswith(("hf", "pytorch"))


def missing(cands: list[dict[str, Any]], intermediates: bool = True) -> list[tuple[dict[str, Any], Optional[str], str]]:
    """What is left to measure: ``(candidate, adapter, model_id to record it under)``. ``intermediates=False``
    (the spec's ``evaluation.evaluate_intermediate_models``): only the run's outputs (and their adapter-off side)."""
    todo = []
    for c in cands:
        path = c.get("path") or ""
        if not path or not Path(path).exists() or c["model_id"].endswith(NO_ADAPTER_SUFFIX):
            continue
        if not intermediates and not c.get("is_output"):
            continue
        if not c.get("metrics"):
            todo.append((c, evaluation_adapter(c.get("model_type"), path, c.get("adapter_path")), c["model_id"]))
        if not _pytorch(c) and _onnx_adapter(path):
            todo.append((c, None, c["model_id"] + NO_ADAPTER_SUFFIX))
    have = {c["model_id"] for c in cands if c.get("metrics")}
    return [t for t in todo if t[2] not in have]


def _join_cached(run_id: str, cands: list[dict[str, Any]], cfg: EvalConfig, reg: Any) -> None:
    """Candidates Olive gave numbers from its own evaluation cache (the same input model in every run on it, a pass
    reused from an earlier run) never called Grove's metric in this run, so the runner found no evaluation of theirs
    to join. Their evaluation record is the one with this run's settings: join it by key (the same folder, adapter
    and fingerprint), which brings the fingerprint, failed metrics and kept examples."""
    for c in cands:
        if not c.get("metrics") or c.get("eval_key") or not c.get("path") or not Path(c["path"]).exists():
            continue
        adapter = evaluation_adapter(c.get("model_type"), c["path"], c.get("adapter_path"))
        key = eval_key(c["path"], adapter, cfg)
        rec = reg.get_evaluation(key)
        if rec is None:
            continue
        reg.upsert_candidates(run_id, [{"model_id": c["model_id"], "created_at": c.get("created_at"),
                                        "fingerprint_id": rec["fingerprint_id"], "failed": rec["failed"] or {},
                                        "eval_key": key}])
        reg.link_evaluation(run_id, c["path"], key, adapter)


def evaluate_run(run_id: str, reg: Any = None) -> int:
    """Measure the run's candidates that have no numbers yet; returns how many were recorded."""
    reg = reg or open_registry()
    cfg_kwargs = olive_config.grove_eval_config(reg.get_run(run_id)["olive_config"])
    if not cfg_kwargs:
        return 0
    cfg = EvalConfig(**cfg_kwargs)
    fid = fingerprint_id(fingerprint(cfg))
    cands = reg.candidates(run_id)
    try:
        spec_ev = (json.loads(reg.get_run(run_id).get("spec") or "{}").get("evaluation") or {})
    except ValueError:
        spec_ev = {}
    done = 0
    _join_cached(run_id, cands, cfg, reg)
    todo = missing(cands, spec_ev.get("evaluate_intermediate_models", True))
    eval_progress.emit("measure_started", run_id, reg, candidates=len(todo))  # the run's stage and progress count them
    for c, adapter, model_id in todo:
        what = " > ".join(c.get("pass_chain") or []) + (" (adapter off)" if model_id != c["model_id"] else "")
        res = evaluate_cached(c["path"], cfg, adapter=adapter, reg=reg, run_id=run_id, label=what)
        row = {k: c[k] for k in ("model_id", "parent_model_id", "from_pass", "pass_chain", "pass_params", "path",
                                 "model_type", "size_bytes", "is_output") if k in c}
        row.update(model_id=model_id, metrics=res.metrics, failed=res.failed, fingerprint_id=fid, pareto=0,
                   eval_key=res.key,
                   adapter_path=c.get("adapter_path") if adapter else None)
        if model_id != c["model_id"]:  # the same files, measured with the adapter switched off
            row["from_pass"] = f"{c.get('from_pass') or ''} (adapter off)"
            row["parent_model_id"] = c["model_id"]
            row["pass_chain"] = [*(c.get("pass_chain") or []), "adapter off"]
            row["is_output"] = 0
        reg.upsert_candidates(run_id, [row])
        done += 1
    return done


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.evaluate.candidates RUN_ID", file=sys.stderr)
        return 2
    n = evaluate_run(argv[0])
    print(f"[grove] measured {n} more candidate(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

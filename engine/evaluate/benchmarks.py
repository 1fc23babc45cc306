"""Benchmark tasks (lm-evaluation-harness) as metrics of every candidate.

The spec's ``evaluation.benchmarks`` lists lm-eval tasks, each with a limit (``[{task: hellaswag, limit: 200}]``; a
task over local files names the folder of its YAML in ``include_path``). For every candidate the evaluator measures,
each task is run by lm-eval itself (``lm_eval.simple_evaluate``; Grove never re-implements a task) on one of its model
interfaces:

- a Hugging Face folder, with or without a PEFT adapter: lm-eval's ``HFLM`` (``peft=`` the adapter folder);
- an onnxruntime-genai folder, adapter on or off: ``GenaiLM``, lm-eval's own ``onnxruntime-genai`` model with the
  model and its ``.onnx_adapter`` loaded by Grove's backend (engine.evaluate.backends.Genai) and the adapter made
  active on every generator it creates.

A task's result is its ``acc`` with lm-eval's standard error, stored as the metrics ``acc:<task>`` and
``acc_stderr:<task>`` (engine.spec.metrics). Each task's result is cached in the registry per model, adapter and
task fingerprint (task, limit, few-shot, the hash of the task's YAML and local data files, its version, device,
package versions), so a second evaluation of the same candidate pays nothing; the same fingerprint is part of the
candidate's evaluation fingerprint (engine.evaluate.fingerprint), so only like is compared. Each candidate's tasks run in a fresh
interpreter (``python -m engine.evaluate.benchmark_run``): the candidate's peak memory stays its own and a crash fails
that task only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.evaluate.backends import form_of
from engine.evaluate.fingerprint import fingerprint_id, task_fingerprint
from engine.spec.evaluation import EvalConfig
from engine.spec.metrics import benchmark_metric, stderr_metric

# the estimate before launch, per example and candidate: SmolLM2-135M on the travel task (4 choices) took 26 s an
# example at load ~22 on 2 cores, i.e. with about 1/11 of them; scaled to quiet cores, ~2.5 s (docs/benchmarks.md)
SECONDS_PER_EXAMPLE = 2.5


def _entries(cfg: EvalConfig) -> list[dict[str, Any]]:
    return [dict(b) for b in (cfg.benchmarks or ())]


def cost(benchmarks: list[dict[str, Any]], candidates: int, seconds_per_example: float = SECONDS_PER_EXAMPLE) -> dict[str, Any]:
    """What the benchmarks cost before launch: examples per candidate (the sum of the limits), examples in all, and
    an estimate in seconds (a group task such as mmlu runs its limit on each of its subtasks: more than this)."""
    per = sum(int(b.get("limit") or 0) for b in benchmarks)
    return {"tasks": len(benchmarks), "examples_per_candidate": per, "candidates": candidates,
            "examples": per * candidates, "estimated_s": per * candidates * seconds_per_example}


def measure_in_subprocess(model_path: str, adapter: str | None, cfg: EvalConfig, entries: list[dict[str, Any]],
                          timeout: float = 3600) -> dict[str, Any]:
    import tempfile
    from dataclasses import asdict

    with tempfile.TemporaryDirectory(prefix="grove-bench-") as d:
        out = Path(d) / "result.json"
        args = [sys.executable, "-m", "engine.evaluate.benchmark_run", "--model", model_path, "--config",
                json.dumps(asdict(cfg), default=list), "--tasks", json.dumps(entries), "--out", str(out)]
        if adapter:
            args += ["--adapter", adapter]
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {e["task"]: {"error": f"benchmark timed out after {timeout:.0f}s"} for e in entries}
        if p.returncode != 0 or not out.is_file():
            tail = (p.stderr or p.stdout)[-1500:]
            return {e["task"]: {"error": f"lm-eval exited with code {p.returncode}: {tail}"} for e in entries}
        return json.loads(out.read_text())


# -- the hook of the evaluator: cached per candidate and task ---------------------------------------------------------
def task_key(identity: str, fp: dict[str, Any]) -> str:
    """The registry key of one task's result on one candidate (``identity``: evaluator.model_identity)."""
    return f"{identity}-bench-{fingerprint_id(fp)}"


def add_benchmarks(res: Any, model_path: str, cfg: EvalConfig, *, adapter: str | None, reg: Any, identity: str,
                   timeout: float = 3600) -> dict[str, bool]:
    """Put each benchmark task's ``acc:<task>`` and ``acc_stderr:<task>`` on the evaluation result ``res``
    (an ``EvalResult``): from the registry when this candidate (``identity``: its files and adapter, as
    ``evaluator.model_identity`` says) was measured on the task with the same fingerprint, else measured now (one
    interpreter for all the tasks still missing, ``python -m engine.evaluate.benchmark_run``) and stored.
    Returns {task: reused}."""
    entries = _entries(cfg)
    if not entries:
        return {}
    fps = {e["task"]: task_fingerprint(e, cfg) for e in entries}
    keys = {t: task_key(identity, fp) for t, fp in fps.items()}
    results: dict[str, Any] = {}
    for t, k in keys.items():
        hit = reg.get_evaluation(k)
        if hit and not hit.get("failed"):
            results[t] = {**(hit.get("metrics") or {}), "reused": True}
    todo = [e for e in entries if e["task"] not in results]
    if todo:
        fresh = measure_in_subprocess(model_path, adapter, cfg, todo, timeout)
        for e in todo:
            t = e["task"]
            r = fresh.get(t) or {"error": "no result"}
            failed = {benchmark_metric(t): r["error"]} if "error" in r else {}
            metrics = {} if failed else {k: v for k, v in r.items() if k != "error"}
            reg.save_evaluation(keys[t], {"model_path": str(model_path), "adapter": adapter,
                                          "form": form_of(Path(model_path)) or "unknown", "metrics": metrics,
                                          "failed": failed, "samples": [], "fingerprint": fps[t],
                                          "seconds": r.get("seconds", 0.0)}, fingerprint_id(fps[t]))
            results[t] = {**metrics, "reused": False} if not failed else {"error": r["error"]}
    reused = {}
    for e in entries:
        t = e["task"]
        r = results[t]
        if "error" in r:
            res.failed[benchmark_metric(t)] = r["error"]
            continue
        res.metrics[benchmark_metric(t)] = r["acc"]
        if r.get("acc_stderr") is not None:
            res.metrics[stderr_metric(t)] = r["acc_stderr"]
        reused[t] = bool(r.get("reused"))
    return reused



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
candidate's evaluation fingerprint (engine.evaluate.fingerprint), so only like is compared. Each task runs in a fresh
interpreter (``python -m engine.evaluate.benchmarks``): the candidate's peak memory stays its own and a crash fails
that task only.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import machine
from engine.data.benchmark_task import load_task_yaml, task_file
from engine.evaluate.backends import GENAI, Genai, form_of
from engine.spec.evaluation import EvalConfig
from engine.spec.metrics import benchmark_metric, stderr_metric

VERSION_PACKAGES = ("lm_eval", "onnxruntime-genai-cuda", "onnxruntime-gpu", "torch", "transformers", "peft", "datasets")
BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap, for metrics whose stderr is not analytic (acc's is: mean_stderr)
HF_BATCH = 8
# the estimate before launch, per example and candidate: SmolLM2-135M on the travel task (4 choices) took 26 s an
# example at load ~22 on 2 cores, i.e. with about 1/11 of them; scaled to quiet cores, ~2.5 s (docs/benchmarks.md)
SECONDS_PER_EXAMPLE = 2.5


# -- which task, which files ----------------------------------------------------------------------------------------
def _entries(cfg: EvalConfig) -> list[dict[str, Any]]:
    return [dict(b) for b in (cfg.benchmarks or ())]


def _local_data_files(doc: dict[str, Any], base: Path) -> list[Path]:
    files: list[Any] = []
    dk = doc.get("dataset_kwargs") or {}
    df = dk.get("data_files") if isinstance(dk, dict) else None
    if isinstance(df, dict):
        for v in df.values():
            files += v if isinstance(v, list) else [v]
    elif isinstance(df, (list, str)):
        files += df if isinstance(df, list) else [df]
    for k in ("dataset_path",):
        if isinstance(doc.get(k), str):
            files.append(doc[k])
    out = []
    for f in files:
        if not isinstance(f, str):
            continue
        p = Path(f) if Path(f).is_absolute() else base / f
        if p.is_file():
            out.append(p)
    return out


def _sha(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def task_fingerprint(entry: dict[str, Any], cfg: EvalConfig) -> dict[str, Any]:
    """Everything that changes a task's number: the task, its limit and few-shot count, the hash of its YAML file and
    of the local data files it reads, its version, the device and the package versions (lm-eval's among them)."""
    task, inc = entry["task"], entry.get("include_path")
    f = task_file(task, inc)
    doc = load_task_yaml(f.read_text(encoding="utf-8")) if f else None
    doc = doc if isinstance(doc, dict) else {}
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return {
        "task": task,
        "limit": entry.get("limit"),
        "num_fewshot": entry.get("num_fewshot", 0),
        "task_file": f.name if f else None,
        "task_hash": _sha([f]) if f else None,
        "data_hash": _sha(_local_data_files(doc, f.parent)) if f and _local_data_files(doc, f.parent) else None,
        "task_version": meta.get("version"),
        "device": cfg.device,
        "execution_provider": cfg.execution_provider,
        "versions": machine.package_versions(VERSION_PACKAGES),
    }


def fingerprints(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The fingerprint of each benchmark task of ``cfg`` (part of the candidate's evaluation fingerprint)."""
    return [task_fingerprint(b, cfg) for b in _entries(cfg)]


def cost(benchmarks: list[dict[str, Any]], candidates: int, seconds_per_example: float = SECONDS_PER_EXAMPLE) -> dict[str, Any]:
    """What the benchmarks cost before launch: examples per candidate (the sum of the limits), examples in all, and
    an estimate in seconds (a group task such as mmlu runs its limit on each of its subtasks: more than this)."""
    per = sum(int(b.get("limit") or 0) for b in benchmarks)
    return {"tasks": len(benchmarks), "examples_per_candidate": per, "candidates": candidates,
            "examples": per * candidates, "estimated_s": per * candidates * seconds_per_example}


# -- the models lm-eval runs -----------------------------------------------------------------------------------------
def _genai_lm_class() -> Any:
    from lm_eval.models.onnxruntime_genai import ONNXRuntimeGenAILM

    class _ActiveAdapter:
        """onnxruntime_genai as lm-eval's model uses it, except that every generator starts with the adapter active."""

        def __init__(self, og: Any, adapters: Any, name: str) -> None:
            self._og, self._adapters, self._name = og, adapters, name

        def __getattr__(self, attr: str) -> Any:
            return getattr(self._og, attr)

        def Generator(self, model: Any, params: Any) -> Any:  # noqa: N802 (og's name)
            gen = self._og.Generator(model, params)
            gen.set_active_adapter(self._adapters, self._name)
            return gen

    class GenaiLM(ONNXRuntimeGenAILM):
        """lm-eval's onnxruntime-genai model, loaded by Grove's backend, with an ``.onnx_adapter`` active or none."""

        def __init__(self, pretrained: str, adapter: str | None = None, device: str | None = "cpu", **kw: Any) -> None:
            self._adapter, self._device = adapter, device
            super().__init__(pretrained=pretrained, **kw)

        def _load(self) -> None:
            folder = Path(self.model_dir)
            adapters = {}
            if self._adapter:
                files = {p.stem: p for p in folder.glob("*.onnx_adapter")}
                name = self._adapter if self._adapter in files else ("adapter_weights" if self._adapter == "adapter" else self._adapter)
                if name not in files:
                    raise FileNotFoundError(f"no adapter '{self._adapter}' in {folder} (have: {', '.join(files) or 'none'})")
                adapters[name] = files[name]
            self.grove = Genai(folder, device=self._device, adapters=adapters)
            self.model = self.grove.model
            og = self.grove.og
            self.og = _ActiveAdapter(og, self.grove.adapters, next(iter(adapters))) if adapters else og

    return GenaiLM


def make_lm(model_path: str, adapter: str | None, cfg: EvalConfig) -> Any:
    """The lm-eval model of a candidate: ``HFLM`` for a Hugging Face folder (+ PEFT adapter folder), ``GenaiLM`` for an
    onnxruntime-genai folder (+ adapter name)."""
    folder = Path(model_path)
    form = form_of(folder)
    if form is None:
        raise FileNotFoundError(f"{folder} is neither an onnxruntime-genai folder nor a Hugging Face folder")
    if form == GENAI:
        device = "cuda" if cfg.execution_provider == "CUDAExecutionProvider" else None
        return _genai_lm_class()(str(folder), adapter=adapter, device=device)
    import torch
    from lm_eval.models.huggingface import HFLM

    from engine.evaluate.evaluator import register_olive_quantizer

    register_olive_quantizer(folder)
    device = "cuda" if cfg.device == "gpu" and torch.cuda.is_available() else "cpu"
    kw: dict[str, Any] = {"pretrained": str(folder), "device": device, "batch_size": HF_BATCH,
                          "dtype": "float32" if device == "cpu" else "float16"}
    if adapter:
        kw["peft"] = str(adapter)
    return HFLM(**kw)


def task_manager(entry: dict[str, Any]) -> Any:
    from lm_eval.tasks import TaskManager

    inc = entry.get("include_path")
    if not inc:
        return TaskManager()
    # a local task: only its own folder is indexed (lm-eval's ~10,000 shipped tasks take a while to index)
    return TaskManager(include_path=str(Path(inc).parent if Path(inc).is_file() else inc), include_defaults=False)


def run_task(lm: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """One task through ``lm_eval.simple_evaluate``: {acc, acc_stderr, metric, examples, seconds, version}."""
    import lm_eval

    task = entry["task"]
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[task], task_manager=task_manager(entry), limit=entry.get("limit"),
        num_fewshot=entry.get("num_fewshot") or None, log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS,
        random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    seconds = time.perf_counter() - t0
    if not out or task not in out.get("results", {}):
        raise RuntimeError(f"lm-eval returned no result for the task {task}")
    res = out["results"][task]
    metric = "acc" if any(k.startswith("acc,") for k in res) else next(
        (k.split(",")[0] for k in res if k != "alias" and "_stderr" not in k and isinstance(res[k], (int, float))), None)
    if metric is None:
        raise RuntimeError(f"lm-eval gave the task {task} no numeric metric (it reported: {', '.join(res)})")
    key = next(k for k in res if k.split(",")[0] == metric)
    filt = key.split(",", 1)[1] if "," in key else "none"
    stderr = res.get(f"{metric}_stderr,{filt}")
    n = out.get("n-samples", {}).get(task, {}).get("effective")
    if n is None:  # a group: the sum over its subtasks
        n = sum(v.get("effective", 0) for v in out.get("n-samples", {}).values())
    out_row = {"metric": metric, "acc": float(res[key]),
               "acc_stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
               "examples": int(n or 0), "seconds": seconds, "version": out.get("versions", {}).get(task)}
    # lm-eval's length-normalised accuracy, kept in the task's record beside acc (multiple-choice tasks report it)
    for k in ("acc_norm", "acc_norm_stderr"):
        v = res.get(f"{k},{filt}")
        if isinstance(v, (int, float)):
            out_row[k] = float(v)
    return out_row


def measure(model_path: str, adapter: str | None, cfg: EvalConfig, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``entries`` on one candidate in this process: {task: result or {"error": reason}}."""
    t0 = time.perf_counter()
    lm = make_lm(model_path, adapter, cfg)
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {}
    for e in entries:
        try:
            out[e["task"]] = {**run_task(lm, e), "load_s": load_s}
        except Exception as ex:  # one task that fails fails that task only
            import traceback

            traceback.print_exc()
            out[e["task"]] = {"error": f"{type(ex).__name__}: {ex}"[:500]}
    return out


def measure_in_subprocess(model_path: str, adapter: str | None, cfg: EvalConfig, entries: list[dict[str, Any]],
                          timeout: float = 3600) -> dict[str, Any]:
    import tempfile
    from dataclasses import asdict

    with tempfile.TemporaryDirectory(prefix="grove-bench-") as d:
        out = Path(d) / "result.json"
        args = [sys.executable, "-m", "engine.evaluate.benchmarks", "--model", model_path, "--config",
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
def task_key(model_path: str, adapter: str | None, fp: dict[str, Any]) -> str:
    from engine.evaluate.evaluator import model_identity
    from engine.evaluate.fingerprint import fingerprint_id

    return f"{model_identity(model_path, adapter)}-bench-{fingerprint_id(fp)}"


def add_benchmarks(res: Any, model_path: str, cfg: EvalConfig, *, adapter: str | None, reg: Any,
                   subprocess_: bool = True, timeout: float = 3600) -> dict[str, bool]:
    """Put each benchmark task's ``acc:<task>`` and ``acc_stderr:<task>`` on the evaluation result ``res``
    (an ``EvalResult``): from the registry when this candidate was measured on the task with the same fingerprint,
    else measured now (one interpreter for all the tasks still missing) and stored. Returns {task: reused}."""
    from engine.evaluate.fingerprint import fingerprint_id

    entries = _entries(cfg)
    if not entries:
        return {}
    fps = {e["task"]: task_fingerprint(e, cfg) for e in entries}
    keys = {t: task_key(model_path, adapter, fp) for t, fp in fps.items()}
    results: dict[str, Any] = {}
    for t, k in keys.items():
        hit = reg.get_evaluation(k)
        if hit and not hit.get("failed"):
            results[t] = {**(hit.get("metrics") or {}), "reused": True}
    todo = [e for e in entries if e["task"] not in results]
    if todo:
        fresh = (measure_in_subprocess(model_path, adapter, cfg, todo, timeout) if subprocess_
                 else measure(model_path, adapter, cfg, todo))
        for e in todo:
            t = e["task"]
            r = fresh.get(t) or {"error": "no result"}
            failed = {benchmark_metric(t): r["error"]} if "error" in r else {}
            metrics = {} if failed else {k: v for k, v in r.items() if k != "error"}
            reg.save_evaluation(keys[t], {"model_path": str(model_path), "adapter": adapter, "form": form_of(Path(model_path)) or "unknown",
                                          "metrics": metrics, "failed": failed, "samples": [], "fingerprint": fps[t],
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.evaluate.benchmarks")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--config", required=True, help="EvalConfig as JSON")
    ap.add_argument("--tasks", required=True, help="the benchmark entries as JSON")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    out = measure(a.model, a.adapter, EvalConfig(**json.loads(a.config)), json.loads(a.tasks))
    text = json.dumps(out, indent=2, default=float)
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lm-eval side of benchmark tasks, run in its own interpreter (``python -m engine.evaluate.benchmark_run``, started
by engine.evaluate.benchmarks): the candidate loaded as one of lm-eval's models and each task run by
``lm_eval.simple_evaluate``. Grove never re-implements a task.

- a Hugging Face folder, with or without a PEFT adapter: lm-eval's ``HFLM`` (``peft=`` the adapter folder);
- an onnxruntime-genai folder, adapter on or off: ``GenaiLM``, lm-eval's own ``onnxruntime-genai`` model with the
  model and its ``.onnx_adapter`` loaded by Grove's backend (engine.evaluate.backends.Genai) and the adapter made
  active on every generator it creates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from engine.evaluate.backends import GENAI, Genai, form_of
from engine.evaluate.evaluator import register_olive_quantizer
from engine.spec.evaluation import EvalConfig

BOOTSTRAP_ITERS = 1000  # lm-eval's bootstrap, for metrics whose stderr is not analytic (acc's is: mean_stderr)
HF_BATCH = 8


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m engine.evaluate.benchmark_run")
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

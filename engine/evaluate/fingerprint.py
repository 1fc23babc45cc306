"""Evaluation fingerprints: what a result was measured with (data, split, template, lengths, device, versions)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine import machine, paths
from engine.data.benchmark_task import load_task_yaml, task_file
from engine.spec.evaluation import EvalConfig

BENCHMARK_VERSION_PACKAGES = ("lm_eval", "onnxruntime-genai-cuda", "onnxruntime-gpu", "torch", "transformers", "peft",
                              "datasets")
VERSION_PACKAGES = ("onnxruntime-genai-cuda", "onnxruntime-gpu", "torch", "transformers", "peft", "grove")
NO_DATASET = "none: benchmark tasks only"
# how TTFT and decode tok/s are taken from the timed repeats (engine.evaluate.evaluator._speed); figures taken another
# way (before 2026-12-07: decode tok/s as all repeats' tokens over their total time) are not compared with these
SPEED_ESTIMATOR = "median of repeats"
SPEED_PROMPTS = paths.DEMO_SAMPLE  # the fixed prompt set speed is timed on without a dataset (engine.evaluate.evaluator)


def fingerprint(cfg: EvalConfig) -> dict[str, Any]:
    """Everything that changes an evaluation's numbers: results are compared only when these match."""
    versions = machine.package_versions(VERSION_PACKAGES)
    held_out = bool(cfg.eval_path)
    fp = {
        # no dataset (benchmarks only): no held-out split, speed timed on the built-in prompt set (engine.evaluate.
        # evaluator.SPEED_PROMPTS), so these figures never compare with held-out ones
        "dataset": (cfg.data_key or _file_hash(cfg.eval_path)) if held_out else NO_DATASET,
        "split_seed": cfg.split_seed,
        "eval_rows": min(cfg.max_samples, _count_rows(cfg.eval_path)) if held_out else 0,
        "template": hashlib.sha256(f"{cfg.text_template}|{cfg.chat_template}|{cfg.system_prompt}".encode()).hexdigest()[:12],
        "answer_tokens": cfg.answer_tokens,
        "prompt_length": cfg.prompt_length,
        "generation_length": cfg.generation_length,
        "repeats": cfg.repeats,
        "speed_estimator": SPEED_ESTIMATOR,
        "device": cfg.device,
        "execution_provider": cfg.execution_provider,
        "versions": versions,
    }
    if not held_out:
        fp["speed_prompts"] = f"built-in {_file_hash(str(SPEED_PROMPTS))}"
    if cfg.benchmarks:  # only when asked, so fingerprints without benchmarks stay what they were
        fp["benchmarks"] = fingerprints(cfg)
    return fp


def fingerprint_id(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fields in which two fingerprints differ ('' when comparable)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _file_hash(p: str) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _count_rows(p: str) -> int:
    with open(p, encoding="utf-8") as f:
        return sum(1 for ln in f if ln.strip())


# -- benchmark tasks (engine.evaluate.benchmarks): the task, its limit, its files' hashes, its version ----------------
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
        "versions": machine.package_versions(BENCHMARK_VERSION_PACKAGES),
    }


def fingerprints(cfg: EvalConfig) -> list[dict[str, Any]]:
    """The fingerprint of each benchmark task of ``cfg`` (part of the candidate's evaluation fingerprint)."""
    return [task_fingerprint(b, cfg) for b in (cfg.benchmarks or ())]

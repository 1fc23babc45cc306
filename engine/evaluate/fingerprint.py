"""Evaluation fingerprints: what a result was measured with (data, split, template, lengths, device, versions)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine import machine
from engine.spec.evaluation import EvalConfig

VERSION_PACKAGES = ("onnxruntime-genai-cuda", "onnxruntime-gpu", "torch", "transformers", "peft", "grove")


def fingerprint(cfg: EvalConfig) -> dict[str, Any]:
    """Everything that changes an evaluation's numbers: results are compared only when these match."""
    versions = machine.package_versions(VERSION_PACKAGES)
    fp = {
        "dataset": cfg.data_key or _file_hash(cfg.eval_path),
        "split_seed": cfg.split_seed,
        "eval_rows": min(cfg.max_samples, _count_rows(cfg.eval_path)),
        "template": hashlib.sha256(f"{cfg.text_template}|{cfg.chat_template}|{cfg.system_prompt}".encode()).hexdigest()[:12],
        "answer_tokens": cfg.answer_tokens,
        "prompt_length": cfg.prompt_length,
        "generation_length": cfg.generation_length,
        "repeats": cfg.repeats,
        "device": cfg.device,
        "execution_provider": cfg.execution_provider,
        "versions": versions,
    }
    if cfg.benchmarks:  # only when asked, so fingerprints without benchmarks stay what they were
        from engine.evaluate.benchmarks import fingerprints

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

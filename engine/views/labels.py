"""How a candidate is named wherever it is listed (Chat's pickers, the blind A/B reveal, Compare's table, pickers and
leaderboard, the HTML report, ``grove show``): its build in words (``int4 + adapter``, ``int4, adapter off``,
``merged int4``, ``PyTorch + LoRA``, ``base PyTorch``…), then its run (the run's name and a short unique id: the
random end of the run id, since the start of every id is its date), then its number.

And which candidate a page opens on: the best measured one (Olive's best, else the Pareto point, with the best
quality), with the reason in words. Pure functions over registry rows; nothing heavy imported."""

from __future__ import annotations

import json
import math
from typing import Any

from engine.spec.metrics import METRICS, QUALITY, is_quality

NO_ADAPTER_SUFFIX = "-no-adapter"  # engine.evaluate.candidates: the adapter-off measurement of an ONNX build
TUNING = (("qlora", "QLoRA"), ("loha", "LoHa"), ("lokr", "LoKr"), ("dora", "DoRA"), ("lora", "LoRA"))
QUANTIZERS = (("awq", "AWQ"), ("gptq", "GPTQ"), ("rtn", "RTN"), ("hqq", "HQQ"), ("bnb", "bnb 4-bit"))
LOW_BITS = ("int4", "uint4", "int8", "uint8", "q4", "q8")


def short_id(run_id: str) -> str:
    """The part of a run id that tells two runs apart (``r20261206-172400-3f2a9c1d`` -> ``3f2a9c1d``)."""
    return str(run_id).rsplit("-", 1)[-1][-8:] or str(run_id)


def run_label(name: str | None, run_id: str) -> str:
    """A run as the pages name it: ``demo: travel LoRA -> int4 ONNX · 3f2a9c1d``."""
    return f"{name or 'run'} · {short_id(run_id)}"


def _precision(params: Any) -> str | None:
    """The ONNX build's precision from the candidate's pass parameters (ModelBuilder's ``precision``), if stated."""
    if isinstance(params, str):
        return params or None
    for p in (params or {}).values() if isinstance(params, dict) else ():
        if isinstance(p, dict) and isinstance(p.get("precision"), str):
            return p["precision"].lower()
    return None


def build(cand: dict[str, Any]) -> str:
    """The candidate's build in words, from its pass chain, model type, adapter and parameters."""
    chain = [str(p).lower() for p in cand.get("pass_chain") or []]
    off = str(cand.get("model_id") or "").endswith(NO_ADAPTER_SUFFIX) or (chain[-1:] == ["adapter off"])
    chain = [p for p in chain if p != "adapter off"]
    tuned = next((word for key, word in TUNING if any(key in p for p in chain)), None)
    merged = any("merge" in p for p in chain)
    quant = next((word for key, word in QUANTIZERS if any(key in p for p in chain)), None)
    mtype = str(cand.get("model_type") or "").lower()
    adapter = str(cand.get("adapter_path") or "")
    pytorch = mtype.startswith(("hf", "pytorch")) if mtype else not (adapter.endswith(".onnx_adapter") or any(
        "builder" in p or "onnx" in p or "extractadapters" in p for p in chain))
    if pytorch:
        base = f"{quant} 4-bit PyTorch" if quant and quant != "bnb 4-bit" else "PyTorch"
        if not chain:
            return "base PyTorch"
        if merged:
            return f"merged {base}"
        if adapter or tuned:
            return f"{base} + {tuned or 'adapter'}"
        return base
    prec = _precision(cand.get("precision") or cand.get("pass_params"))
    word = prec if prec in LOW_BITS else f"ONNX {prec}" if prec else "ONNX"
    if off:
        return f"{word}, adapter off"
    if adapter.endswith(".onnx_adapter") or any("extractadapters" in p for p in chain):
        return f"{word} + adapter"
    if tuned and merged:
        return f"merged {word}"
    if tuned:
        return f"{word} + {tuned} (built in)"
    return word


def label(cand: dict[str, Any], run_name: str | None = None) -> str:
    """``int4 + adapter · demo: travel LoRA -> int4 ONNX · 3f2a9c1d #4``: build, run, candidate number."""
    name = run_name if run_name is not None else cand.get("run_name")
    return f"{build(cand)} · {run_label(name, cand['run_id'])} #{cand.get('id')}"


# -- which candidate to open ----------------------------------------------------------------------------------------
def _measured(c: dict[str, Any], metric: str) -> float | None:
    v = (c.get("metrics") or {}).get(metric)
    if metric in (c.get("failed") or {}) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return None
    return float(v)


def quality_metric(cands: list[dict[str, Any]], specs: dict[str, str] | None = None) -> str | None:
    """The quality metric to rank by: the one the runs rank by (the quality metric of highest priority in their specs'
    evaluation, most runs' choice), else the first of QUALITY (ROUGE-L, exact match, loss…) that was measured."""
    votes: dict[str, int] = {}
    for text in (specs or {}).values():
        try:
            ms = (json.loads(text or "{}").get("evaluation") or {}).get("metrics") or []
        except ValueError:
            continue
        ranked = sorted((m for m in ms if isinstance(m, dict) and is_quality(str(m.get("name")))),
                        key=lambda m: m.get("priority") or 99)
        if ranked:
            votes[ranked[0]["name"]] = votes.get(ranked[0]["name"], 0) + 1
    for m in sorted(votes, key=lambda m: -votes[m]) + list(QUALITY):
        if any(_measured(c, m) is not None for c in cands):
            return m
    return None


def best(cands: list[dict[str, Any]], specs: dict[str, str] | None = None) -> tuple[int | None, str]:
    """(index in ``cands`` of the candidate to open, why in words): Olive's best (the output of its run) when one was
    measured, else a Pareto point, else any measured one, the one with the best quality among them (quality_metric;
    ``specs``: the runs' spec JSON by run id); the first one when none was measured."""
    if not cands:
        return None, ""
    metric = quality_metric(cands, specs)
    if metric is None:
        return 0, "No candidate has been measured yet: the first one is open."
    sign = 1 if METRICS[metric]["higher_is_better"] else -1
    measured = [i for i, c in enumerate(cands) if _measured(c, metric) is not None]
    for why, pool in (("Olive's best of its run", [i for i in measured if cands[i].get("is_output")]),
                      ("on the Pareto front", [i for i in measured if cands[i].get("pareto")]),
                      ("measured", measured)):
        if pool:
            i = max(pool, key=lambda k: (sign * _measured(cands[k], metric), -k))
            value = _measured(cands[i], metric)
            among = f" of the {len(pool)} such candidates" if len(pool) > 1 else ""
            speed = _measured(cands[i], "decode_tps")
            return i, (f"Opened on the best measured candidate: {why}, with the best {metric} "
                       f"({fmt_metric(metric, value)}){among}"
                       + (f"; decodes {fmt_metric('decode_tps', speed)}" if speed is not None else "") + ".")
    return 0, ""


def fmt_metric(name: str, value: Any) -> str:
    from engine.views.format import metric

    return metric(name, value)

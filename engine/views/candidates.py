"""Read models of candidates for the pages: which ones chat can load (probed on disk), and the Compare page's
table rows, chart sample and side-by-side diff. Pure functions over registry rows; nothing heavy imported."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable


# -- chat ---------------------------------------------------------------------------------------------------------
def chat_ready(cands: list[dict[str, Any]], adapter_name: Callable[[str], str]) -> list[dict[str, Any]]:
    """Candidates chat can load: ONNX outputs (onnxruntime-genai folders) and LoRA candidates (HF + PEFT), with
    ``kind``, ``label`` and the adapters expected (``"none"`` = the base model). ``adapter_name`` names an adapter
    file as chat lists it (engine.chat.models.adapter_name, passed in: views do not import chat)."""
    out = []
    for c in cands:
        p = Path(c.get("path") or "")
        p = p.parent if p.is_file() else p
        if c.get("failed") or not p.is_dir():
            continue
        if c.get("is_output") and (p / "genai_config.json").is_file():
            kind = "ONNX"
        elif c.get("adapter_path") and (p / "config.json").is_file():
            kind = "LoRA"
        else:
            continue
        names = sorted(x.name for x in p.glob("*.onnx_adapter")) if kind == "ONNX" else ["adapter"]
        adapters = ["none", *[adapter_name(n) for n in names]]
        if kind == "ONNX" and c.get("adapter_path") and str(c["adapter_path"]).endswith(".onnx_adapter"):
            adapters = list(dict.fromkeys([*adapters, adapter_name(c["adapter_path"])]))
        chain = " > ".join(c.get("pass_chain") or [])
        out.append({**c, "kind": kind, "adapters": adapters, "label": f"{kind} · {chain} · run {c['run_id'][:8]} #{c['id']}"})
    return out


# -- compare ------------------------------------------------------------------------------------------------------
def metric_choices(names: list[str], preferred: tuple[str, ...]) -> list[str]:
    """The preferred metrics that were measured, in the preferred order; every measured one when none was."""
    return [m for m in preferred if m in names] or names


def compare_rows(cands: list[dict[str, Any]], metric_names: list[str], front: set[int]) -> list[dict[str, Any]]:
    """One table row per candidate (same order as ``cands``): run, pass chain, adapter, metrics, size, flags."""
    rows = []
    for i, c in enumerate(cands):
        m = c.get("metrics") or {}
        rows.append(
            {
                "id": c["id"],
                "run": c["run_name"],
                "pass chain": " > ".join(c.get("pass_chain") or []) or "(input)",
                "adapter": Path(c["adapter_path"]).name if c.get("adapter_path") else "—",
                **{k: m.get(k) for k in metric_names},
                "size_mb": m.get("size_mb", (c.get("size_bytes") or 0) / 1e6),
                "goals met": bool(c.get("goals_met")),
                "Pareto": i in front,
                "output": bool(c.get("is_output")),
            }
        )
    return rows


def chart_points(cands: list[dict[str, Any]], x: str, y: str, front: set[int], max_points: int) -> tuple[list[int], bool]:
    """Indices to plot (candidates with both numbers) and whether they were sampled: past ``max_points``, the
    frontier always, then a fixed-seed sample of the rest."""
    pts = [
        i
        for i, c in enumerate(cands)
        if isinstance((c.get("metrics") or {}).get(x), (int, float))
        and isinstance((c.get("metrics") or {}).get(y), (int, float))
    ]
    sampled = len(pts) > max_points
    if sampled:
        rest = [i for i in pts if i not in front]
        pts = sorted(front | set(random.Random(0).sample(rest, max(0, max_points - len(front)))))
    return pts, sampled


def side_by_side(cand: dict[str, Any]) -> dict[str, Any]:
    """A candidate flattened for the diff: ``metric: name`` -> value, ``pass.param`` -> value, the pass chain."""
    flat = {f"metric: {k}": v for k, v in (cand.get("metrics") or {}).items()}
    for p, params in (cand.get("pass_params") or {}).items():
        for k, v in params.items() if isinstance(params, dict) else [("", params)]:
            flat[f"{p}.{k}".rstrip(".")] = json.dumps(v, default=str) if isinstance(v, (dict, list)) else v
    flat["pass chain"] = " > ".join(cand.get("pass_chain") or [])
    return flat

"""Olive's footprint -> Grove's candidates: every model a workflow produced, with its pass chain, parameters, metrics
and files; and the files a workflow promises in its output folder (Olive often exits 0 when a pass failed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine import machine

ADAPTER_FILE = "adapter_weights.onnx_adapter"  # what ExtractAdapters writes beside an ONNX model


def evaluation_adapter(model_type: str | None, folder: str | Path, adapter_path: str | None) -> str | None:
    """The adapter an evaluation of a candidate is keyed with (as ``engine.evaluate.olive_metric.locate`` keys what
    Olive hands it): a PyTorch model's PEFT folder; for an ONNX folder, ``adapter_weights`` when its adapter file is
    there; else None."""
    if (model_type or "").lower().startswith(("hf", "pytorch")):
        return adapter_path or None
    return "adapter_weights" if Path(folder, ADAPTER_FILE).is_file() else None


def _metric_values(node: dict[str, Any]) -> tuple[dict[str, float], bool | None]:
    """Grove metric values of a footprint node (Olive names them 'grove-<metric>'), and whether goals were met."""
    m = node.get("metrics") or {}
    values = {}
    for k, v in (m.get("value") or {}).items():
        name = k.split("-", 1)[1] if k.startswith("grove-") else k
        values[name] = v.get("value") if isinstance(v, dict) else v
    return values, (m.get("if_goals_met") if m else None)


def candidates_from_footprint(fp: dict[str, Any], output_dir: Path, best_ids: set[str],
                              input_model: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every model the workflow produced (and the input model when it was evaluated), with its pass chain.
    ``input_model`` (``config.input_model``) describes the input model, which Olive's footprint leaves blank."""
    out = []
    for mid, node in fp.items():
        mc = node.get("model_config_data") or ((input_model or {}) if not node.get("from_pass") else {})
        if mc.get("is_pruned"):
            continue
        metrics, goals_met = _metric_values(node)
        if not node.get("from_pass") and not metrics:
            continue  # the input model, not evaluated
        chain, cur = [], node
        while cur and cur.get("from_pass"):
            chain.append(cur["from_pass"])
            cur = fp.get(cur.get("parent_model_id") or "")
        chain.reverse()
        path = eval_path = (mc.get("config") or {}).get("model_path")
        cfg = mc.get("config") or {}
        is_output = mid in best_ids
        if is_output and (output_dir / "model.onnx").exists():
            path = str(output_dir)
        size = 0
        for key in ("model_path", "adapter_path"):
            if cfg.get(key) and Path(cfg[key]).exists():
                size += machine.dir_size(Path(cfg[key]))
        out.append(
            {
                "model_id": mid,
                "adapter_path": cfg.get("adapter_path") or _onnx_adapter(path),
                "parent_model_id": node.get("parent_model_id"),
                "from_pass": node.get("from_pass") or "input",
                "pass_chain": chain,
                "pass_params": node.get("pass_run_config") or {},
                "path": path,
                "model_type": mc.get("type"),
                "size_bytes": size,
                "metrics": metrics,
                "goals_met": None if goals_met is None or not metrics else int(bool(goals_met)),
                "is_output": int(is_output),
                "pareto": int(bool(node.get("is_pareto_frontier"))),
                "_eval_path": eval_path,  # the folder Olive evaluated (its cache copy), not the output copy
            }
        )
    return out


INPUT_METRICS = "input_model_metrics.json"  # where Olive writes the input model's evaluation (engine.py)


def baseline_candidates(output_dir: Path, input_model: dict[str, Any]) -> list[dict[str, Any]]:
    """The one candidate of a workflow with no passes: the input model, measured. Olive evaluates it, writes
    ``input_model_metrics.json`` and returns before it saves a footprint; [] when that file is not there."""
    p = output_dir / INPUT_METRICS
    if not p.is_file():
        return []
    node = {"metrics": {"value": json.loads(p.read_text())}}
    path = (input_model.get("config") or {}).get("model_path")
    metrics, _ = _metric_values(node)
    size = machine.dir_size(Path(path)) if path and Path(path).is_dir() else 0
    return [{
        "model_id": "input", "adapter_path": None, "parent_model_id": None, "from_pass": "input", "pass_chain": [],
        "pass_params": {}, "path": path, "model_type": input_model.get("type"), "size_bytes": size,
        "metrics": metrics, "goals_met": None, "is_output": 1, "pareto": 1, "_eval_path": path,
    }]


def _onnx_adapter(path: str | None) -> str | None:
    if path and Path(path, ADAPTER_FILE).is_file():
        return str(Path(path, ADAPTER_FILE))
    return None


def expected_files(config: dict[str, Any]) -> list[str]:
    """Files the workflow promises in its output folder, from its last pass."""
    passes = list(config.get("passes", {}).values())
    if not passes:
        return []
    last = passes[-1]
    last = last[0] if isinstance(last, list) else last
    types = [(p[0] if isinstance(p, list) else p)["type"] for p in passes]
    want = []
    if last["type"] in ("ModelBuilder", "ExtractAdapters") or ("ModelBuilder" in types):
        want += ["model.onnx", "genai_config.json"]
    if last["type"] == "ExtractAdapters":
        want.append("adapter_weights.onnx_adapter")
    if last["type"] == "OpenVINOEncapsulation":  # the EPContext model's name follows the IR's (openvino_model[_dy])
        want.append("genai_config.json")
    return want


def final_model_ids(out_fp_path: Path) -> set[str]:
    """Models Olive reports as outputs that no other output model was built from (the ends of the chains)."""
    if not out_fp_path.exists():
        return set()
    nodes = json.loads(out_fp_path.read_text())
    parents = {n.get("parent_model_id") for n in nodes.values()}
    return {mid for mid, n in nodes.items() if n.get("from_pass") and mid not in parents}

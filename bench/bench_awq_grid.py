"""Benchmark: what ModelBuilder's int4 does to an AWQ model's weights, on SmolLM2-135M-Instruct's real weights (CPU).

The lab's order ends AWQ -> AwqDequantize -> (LoRA) -> ModelBuilder int4: ModelBuilder re-quantizes weights that
already lie on AWQ's int4 grid. With its own settings (RTN, symmetric, blocks of 32) it rounds them onto a second
grid; Grove (``engine.olive.config.awq_int4_grid``) gives it asymmetric blocks of AWQ's group size, which find
AWQ's grid again. This script measures both on the same held-out rows, through Grove's engine (service.submit ->
worker -> runner -> Olive), every candidate by Grove's evaluator:

  base                   the fp32 model (PyTorch)
  AWQ grid (PyTorch)     the AWQ checkpoint's own weights, dequantized (AwqDequantize's output)
  int4, Grove            AWQ checkpoint -> AwqDequantize -> ModelBuilder int4, Grove's config (the grid kept)
  int4, builder defaults the same with ModelBuilder's own int4 settings (block 32, symmetric): the second rounding
  int4, Grove, lm_head   the same as "int4, Grove" with the output projection kept out of int4
                         (``int4_nodes_to_exclude``): what ModelBuilder's int4 lm_head costs (AWQ leaves it 16-bit)
  int4 RTN of the base   the fp32 model -> ModelBuilder int4 (no AWQ), for scale; and the same with the lm_head kept
                         out of int4

The AWQ checkpoint is made on the CPU by AutoAWQ's own quantizer and packing (bench/_awq.py): AWQ's format and grid
(asymmetric, group 64: SmolLM2's 576-wide layers take no 128), not AWQ's activation-aware search, which needs CUDA.
So the figures say what the re-quantization costs, not what AWQ gains. Also reports each int4 model's weight error
against the AWQ weights (relative Frobenius norm over every quantized projection).

With ``--lora`` it also runs the lab's whole order on the CPU (AWQ checkpoint -> AwqDequantize -> the demo's LoRA ->
ModelBuilder int4 -> ExtractAdapters), with Grove's config and with ModelBuilder's own int4 settings, and measures the
int4 candidate with its adapter: what the grid means for the candidate a user of the lab's recipe gets.

Usage: python bench/bench_awq_grid.py [--group 64] [--eval 40] [--lora] [--out bench/results/awq_grid.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _awq import int4_weights, make_awq_checkpoint, onnx_name  # bench/ is sys.path[0] when a benchmark runs as a script
from _results import write_json
from bench_smollm_demo import run_spec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def spec(name: str, model: str, passes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"name": model},
        "dataset": {"path": str(REPO / "engine/assets/travel_sample.jsonl"), "chat_template": True, "eval_split": 0.1,
                    "max_seq_len": 128},
        "passes": passes,
        "target": {"device": "cpu", "execution_provider": "CPUExecutionProvider", "precision": "int4"},
    }


def weight_error(onnx_dir: str, fake: dict[str, Any]) -> dict[str, float]:
    """Relative error of the int4 model's dequantized weights against the AWQ weights, over every projection."""
    import torch

    got = int4_weights(Path(onnx_dir))
    num = den = 0.0
    worst = 0.0
    for node, w_onnx in got.items():
        refs = [w for name, w in fake.items() if onnx_name(name) in node]
        if not refs and "/qkv_proj/" in node:  # q, k and v packed into one MatMul by the builder
            refs = [w for p in ("q_proj", "k_proj", "v_proj") for name, w in fake.items()
                    if onnx_name(name) in node.replace("qkv_proj", p)]
        if not refs:
            continue
        ref = torch.cat([r.float() for r in refs], 0)
        if ref.shape != w_onnx.shape:
            continue
        d, n = float((w_onnx - ref).norm() ** 2), float(ref.norm() ** 2)
        num, den, worst = num + d, den + n, max(worst, (d / n) ** 0.5)
    return {"rel_error": (num / den) ** 0.5 if den else float("nan"), "worst_projection": worst}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", type=int, default=64, help="AWQ group size (SmolLM2: 64; 576 is no multiple of 128)")
    ap.add_argument("--eval", type=int, default=40, help="held-out rows per candidate")
    ap.add_argument("--lora", action="store_true", help="also the lab's order with the demo's LoRA (adapter on)")
    ap.add_argument("--out", default=str(REPO / "bench/results/awq_grid.json"))
    a = ap.parse_args()

    from engine import paths
    from engine.evaluate.evaluator import evaluate_in_subprocess
    from engine.models import smollm
    from engine.spec.evaluation import EvalConfig

    t0 = time.perf_counter()
    base = str(smollm.ensure_model())
    awq_dir = paths.home() / "bench-awq-grid" / f"smollm2-awq-g{a.group}"  # under GROVE_HOME: submit accepts it
    fake = make_awq_checkpoint(Path(base), awq_dir, a.group)
    print(f"AWQ-format checkpoint (group {a.group}, {len(fake)} projections): {awq_dir} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    deq = {"type": "AwqDequantize", "params": {"torch_dtype": "float32"}}
    int4 = {"type": "ModelBuilder", "params": {"precision": "int4", "int4_accuracy_level": 4}}
    own = {"type": "ModelBuilder", "params": {"precision": "int4", "int4_accuracy_level": 4, "int4_block_size": 32,
                                              "int4_is_symmetric": True}}  # ModelBuilder's own int4 settings

    def keep_head(mb: dict[str, Any]) -> dict[str, Any]:  # the same build with the lm_head kept out of int4
        return {**mb, "params": {**mb["params"], "int4_nodes_to_exclude": ["/lm_head/MatMul"]}}

    head = keep_head(int4)
    runs = {
        "grove": run_spec(spec("AWQ -> int4, Grove's config", str(awq_dir), [deq, int4])),
        "head": run_spec(spec("AWQ -> int4, Grove's config, lm_head not int4", str(awq_dir), [deq, head])),
        "defaults": run_spec(spec("AWQ -> int4, ModelBuilder's defaults", str(awq_dir), [deq, own])),
        "rtn": run_spec(spec("base -> int4 RTN", base, [own])),
        "rtn_head": run_spec(spec("base -> int4 RTN, lm_head not int4", base, [keep_head(own)])),
    }
    if a.lora:
        from engine.spec import recipes

        lora = next(p for p in recipes.real_demo_recipes(base, "d")[0]["passes"] if p["type"] == "LoRA")
        extract = {"type": "ExtractAdapters"}
        runs["lab"] = run_spec(spec("AWQ -> LoRA -> int4 + adapter, Grove's config", str(awq_dir), [deq, lora, int4, extract]))
        runs["lab_defaults"] = run_spec(spec("AWQ -> LoRA -> int4 + adapter, ModelBuilder's defaults", str(awq_dir),
                                             [deq, lora, own, extract]))
    grove, head, defaults, rtn, rtn_head = (runs[k]["candidates"] for k in ("grove", "head", "defaults", "rtn", "rtn_head"))
    data_dir = Path(runs["grove"]["data_dir"])
    todo = [
        ("base (fp32, PyTorch)", base, None),
        ("AWQ grid, dequantized (PyTorch)", grove["awqdequantize"]["path"], None),
        ("int4, Grove (AWQ's grid kept: asymmetric, block = group)", grove["awqdequantize > modelbuilder"]["path"], fake),
        ("int4, Grove, lm_head kept out of int4", head["awqdequantize > modelbuilder"]["path"], fake),
        ("int4, ModelBuilder's defaults (symmetric, block 32)", defaults["awqdequantize > modelbuilder"]["path"], fake),
        ("int4 RTN of the base (no AWQ; symmetric, block 32)", rtn["modelbuilder"]["path"], None),
        ("int4 RTN of the base, lm_head kept out of int4", rtn_head["modelbuilder"]["path"], None),
    ]
    adapters: dict[str, str | None] = {}
    if a.lora:
        chain = "awqdequantize > lora > modelbuilder > extractadapters"
        ft = runs["lab"]["candidates"]["awqdequantize > lora"]
        todo.append(("AWQ -> LoRA (PyTorch + PEFT)", ft["path"], None))
        adapters["AWQ -> LoRA (PyTorch + PEFT)"] = ft.get("adapter_path")
        for key, label in (("lab", "Grove (AWQ's grid kept)"), ("lab_defaults", "ModelBuilder's defaults")):
            name = f"AWQ -> LoRA -> int4 + adapter, {label}"
            todo.append((name, runs[key]["candidates"][chain]["path"], fake))
            adapters[name] = "adapter_weights"
    rows = []
    for name, path, ref in todo:
        cfg = EvalConfig(eval_path=str(data_dir / "eval.jsonl"), chat_template=True, data_key=data_dir.name,
                         max_samples=a.eval, generation_length=32, repeats=1)
        t = time.perf_counter()
        r = evaluate_in_subprocess(path, cfg, adapter=adapters.get(name))
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and ".onnx" in f.name) / 1e6
        row = {"candidate": name, "path": path, "eval_s": round(time.perf_counter() - t, 1), "onnx_mb": size or None,
               "loss": r.metrics.get("loss"), "rouge_l": r.metrics.get("rouge_l"), "failed": r.failed}
        if ref is not None:
            row.update(weight_error(path, ref))
        rows.append(row)
        print(f"{name}: loss {row['loss']}", flush=True)
    base_loss = rows[0]["loss"]
    print(f"\nSmolLM2-135M-Instruct, AWQ-format group {a.group}, {a.eval} held-out rows, "
          f"{platform.machine()} {os.cpu_count()} cores\n")
    print("| candidate | held-out loss | vs base | ROUGE-L | weight error vs AWQ's | ONNX MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        err = f"{r['rel_error']:.4f}" if "rel_error" in r else ""
        mb = f"{r['onnx_mb']:.1f}" if r["onnx_mb"] else ""
        print(f"| {r['candidate']} | {r['loss']:.3f} | {r['loss'] - base_loss:+.3f} | {r['rouge_l']:.3f} | {err} | {mb} |")
    write_json(a.out, {"group": a.group, "eval_rows": a.eval, "machine": platform.node(), "cores": os.cpu_count(),
                       "runs": {k: {x: v[x] for x in ("id", "wall_s", "passes_s")} for k, v in runs.items()},
                       "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The lab's order on Grove's real default model, on CUDA, through the worker, with the runner's own evaluation.

SmolLM2-135M-Instruct: AWQ -> AwqDequantize -> LoRA -> ModelBuilder int4 for CUDA -> ExtractAdapters
(engine.spec.recipes.real_demo_gpu_recipes, the demo's recipe moved to the GPU), every candidate measured by Grove's
evaluator on CUDA on the demo's held-out rows. bench/gpu_lab.py --model smollm runs it beside QLoRA, GPTQ and RTN."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from engine import paths
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .conftest import run_log, run_on_gpus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _awq import int4_weights, onnx_name  # noqa: E402  (bench/_awq.py: MatMulNBits weights, dequantized)


def test_lab_order_on_smollm2_measured_on_cuda(smollm_model):
    spec = recipes.real_demo_gpu_recipes(smollm_model, str(paths.DEMO_SAMPLE), eval_samples=8)["lab"]
    spec["evaluation"] = {**spec["evaluation"], "evaluate_input_model": True}
    run = service.submit(parse_spec(spec), gpus_available=1)
    (done,) = run_on_gpus([run["id"]], timeout=1200)
    assert done["status"] == "succeeded", f"{done['error_message']}\n{run_log(done)}"
    reg = Registry()
    cands = reg.candidates(done["id"])
    final = next(c for c in cands if c["is_output"])
    assert final["pass_chain"] == ["autoawqquantizer", "awqdequantize", "lora", "modelbuilder", "extractadapters"]
    gcfg = json.loads(Path(final["path"], "genai_config.json").read_text())
    assert "cuda" in json.dumps(gcfg["model"]["decoder"]["session_options"]).lower()
    # the int4 candidate as Compare shows it: measured with its adapter, and again with the adapter off
    (off,) = [c for c in cands if c["pass_chain"][-1:] == ["adapter off"] and c["path"] == final["path"]]
    for c in (final, off):
        m = c["metrics"]
        assert math.isfinite(m.get("loss", math.nan)) and 0 < m["loss"] < 20, c
        assert m.get("decode_tps", 0) > 0, f"speed not measured (or pending): {c}"
    # the fine-tune, trained on AWQ-dequantized weights and carried as an adapter of the int4 model, helps on held-out
    assert final["metrics"]["loss"] < off["metrics"]["loss"] - 0.1, (final["metrics"], off["metrics"])
    (ev,) = reg.candidate_evaluations([final["id"]]).values()
    assert "CUDA" in json.dumps(ev["fingerprint"]), ev["fingerprint"]
    # ModelBuilder re-quantized AWQ's weights on AWQ's own grid (engine.olive.config.awq_int4_grid): the int4
    # model holds the AWQ model's weights, not a second rounding of them (which would be ~6 % off)
    import torch
    from safetensors.torch import load_file

    (deq,) = [c for c in cands if c["pass_chain"] == ["autoawqquantizer", "awqdequantize"]]
    sd = {}
    for f in Path(deq["path"]).glob("*.safetensors"):
        sd.update(load_file(str(f)))
    got = int4_weights(Path(final["path"]))
    for name in ("model.layers.0.self_attn.o_proj", "model.layers.7.mlp.down_proj"):
        w = sd[name + ".weight"].float()
        (q,) = [v for k, v in got.items() if onnx_name(name) in k]
        rel = float(torch.linalg.norm(q - w) / torch.linalg.norm(w))
        assert rel < 5e-3, f"{name}: the int4 weights are {rel:.4f} away from AWQ's"

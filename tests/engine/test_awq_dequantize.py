"""The lab's order (AWQ 4-bit, then LoRA on the quantized model, then ONNX) on the CPU, from an AWQ checkpoint.

AutoAWQ's calibration needs CUDA, so the AWQ checkpoint here is packed by AutoAWQ's own code (its round-to-nearest
quantizer and ``WQLinear_GEMM.from_linear``, the same packing its CUDA path writes; bench/_awq.py) from the demo model; the GPU run
of the whole chain is in tests/gpu and docs/gpu.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.olive import catalog
from engine.runs import submit as service
from engine.runs.registry import Registry
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .helpers import generate, run_to_end

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _awq import (  # noqa: E402  (bench/_awq.py: the checkpoint AutoAWQ writes, made on the CPU)
    int4_weights,
    make_awq_checkpoint,
    onnx_name,
)

GROUP = 128
LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


@pytest.fixture(scope="module")
def awq_model(demo):
    from engine import paths

    dst = paths.home() / "awq-test" / "demo-awq"  # inside GROVE_HOME: submit accepts models under the allowed roots
    fake = make_awq_checkpoint(Path(demo["model"]), dst, GROUP, LINEARS)
    return dst, fake


def test_dequantized_weights_are_exactly_the_awq_weights(awq_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    from engine.olive.passes import dequantize_awq_folder

    src, fake = awq_model
    done = dequantize_awq_folder(src, tmp_path / "out", "float16", device="cpu")
    assert done["layers"] == len(fake) == 4 * 4
    sd = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert not any(k.endswith((".qweight", ".qzeros", ".scales")) for k in sd)
    for name, w in fake.items():
        # the AWQ model's own (q - zero) * fp16 scale; the reference was rounded to fp16 from fp32, hence the 1e-3
        torch.testing.assert_close(sd[name + ".weight"], w, rtol=1e-3, atol=1e-4, msg=name)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["torch_dtype"] == "float16"
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_not_an_awq_checkpoint_is_refused_with_the_file_named(demo, tmp_path):
    from engine.olive.passes import dequantize_awq_folder

    with pytest.raises(ValueError, match=r"config.json: quantization_config.quant_method is None, not 'awq'"):
        dequantize_awq_folder(Path(demo["model"]), tmp_path / "out")


def test_grove_pass_is_in_the_catalog():
    entry = catalog.load()["passes"]["AwqDequantize"]
    assert entry["grove"] and entry["import_error"] is None and "torch_dtype" in entry["params"]


@pytest.mark.slow
def test_lab_order_awq_then_lora_then_onnx_runs_through_grove(awq_model, demo):
    src, fake = awq_model
    spec = parse_spec({
        "name": "lab order from an AWQ checkpoint",
        "model": {"name": str(src)},
        "dataset": {"path": demo["dataset"], "text_template": recipes.LAB_TEXT_TEMPLATE,
                    "max_seq_len": 128, "eval_split": 0.1},
        "passes": [
            {"type": "AwqDequantize", "params": {"torch_dtype": "float32"}},
            {"type": "LoRA", "params": {"r": 8, "alpha": 16, "torch_dtype": "float32",
                                        "training_args": {"max_steps": 6, "per_device_train_batch_size": 8,
                                                          "learning_rate": 2e-3, "logging_steps": 2}}},
            {"type": "ModelBuilder", "params": {"precision": "int4"}},
            {"type": "ExtractAdapters"},
        ],
    })
    run = run_to_end(service.submit(spec)["id"])
    assert run["status"] == "succeeded", run["error_message"]
    cands = Registry().candidates(run["id"])
    assert sorted(" > ".join(c["pass_chain"]) for c in cands)[-1] == "awqdequantize > lora > modelbuilder > extractadapters"
    final = next(c for c in cands if c["is_output"])
    assert generate(final["path"], "travel").strip()
    # the int4 ONNX model holds the AWQ model's weights: ModelBuilder re-quantized on AWQ's own grid (asymmetric
    # blocks of its group size, engine.olive.config.awq_int4_grid) instead of rounding them onto a second grid
    onnx_weights = int4_weights(Path(final["path"]))
    for name in ("model.layers.0.self_attn.o_proj", "model.layers.3.mlp.down_proj"):
        w = fake[name].float()
        got = next(v for k, v in onnx_weights.items() if onnx_name(name) in k)
        assert got.shape == w.shape, name
        rel = float((got - w).norm() / w.norm())
        assert rel < 2e-3, f"{name}: the int4 model's weights are {rel:.4f} away from AWQ's (a second rounding)"

"""Ready-made workflows. The first is the lab's: LoRA fine-tune -> ONNX int4 for onnxruntime-genai with the
adapter extracted, ready for chat with the adapter on or off.

On a GPU the lab starts with AWQ 4-bit quantization (AutoAWQ needs CUDA) and fine-tunes the quantized model:
``AutoAWQQuantizer -> AwqDequantize -> LoRA -> ModelBuilder int4 -> ExtractAdapters``. ``AwqDequantize``
(``engine.olive.passes``) writes the AWQ model's weights back in 16 bits - exactly the values the AWQ model computes
with - because transformers 5 loads AWQ checkpoints only through gptqmodel, which the pinned stack cannot install;
LoRA then trains against the quantized base as in the lab. On the CPU, AWQ cannot run, so the recipe fine-tunes the
full-precision model and quantizes in the ONNX builder (int4 base, LoRA path kept in fp32).

GPU alternatives: QLoRA (bitsandbytes 4-bit base during training) and GPTQ (Olive's own ``Gptq`` pass).
"""

from __future__ import annotations

from typing import Any

from engine import paths
from engine.spec.schema import RunSpec, parse_spec
from engine.spec.templates import PHI3_TEXT_TEMPLATE

LAB_TEXT_TEMPLATE = PHI3_TEXT_TEMPLATE


def lab_recipe(
    model: str,
    dataset: str,
    *,
    device: str = "cpu",
    name: str = "lab: LoRA -> ONNX int4 + adapter",
    max_steps: int = 60,
    max_seq_len: int = 128,
    text_template: str = LAB_TEXT_TEMPLATE,
    lora_r: int = 16,
) -> dict[str, Any]:
    gpu = device == "gpu"
    training_args = {
        "max_steps": max_steps,
        "per_device_train_batch_size": 8 if not gpu else 4,
        "learning_rate": 2e-3 if not gpu else 2e-4,
        "logging_steps": 5,
        "gradient_checkpointing": False,
    }
    passes: list[dict[str, Any]] = []
    if gpu:
        passes.append({"type": "AutoAWQQuantizer", "params": {"bits": 4}})
        passes.append({"type": "AwqDequantize", "params": {"torch_dtype": "float16"}})
    passes += [
        {
            "type": "LoRA",
            "params": {
                "r": lora_r,
                "alpha": 2 * lora_r,
                "torch_dtype": "float32" if not gpu else "bfloat16",
                "training_args": training_args,
            },
        },
        {"type": "ModelBuilder", "params": {"precision": "int4"}},
        {"type": "ExtractAdapters"},
    ]
    return {
        "name": name,
        "model": {"name": model},
        "dataset": {"path": dataset, "text_template": text_template, "max_seq_len": max_seq_len, "eval_split": 0.1},
        "passes": passes,
        "target": {
            "device": device,
            "execution_provider": "CUDAExecutionProvider" if gpu else "CPUExecutionProvider",
            "precision": "int4",
        },
        "resources": {"gpus": 1 if gpu else 0},
    }


def demo_spec(**kw: Any) -> RunSpec:
    """The lab recipe on the embedded demo model and the project's own travel sample (build the model first:
    engine.models.tiny.build_demo)."""
    d = paths.demo_dir()
    return parse_spec(lab_recipe(str(d / "model"), str(d / "travel_sample.jsonl"), name="demo: travel LoRA -> int4 ONNX", **kw))


def finetune_only(device: str) -> dict[str, Any]:
    r = lab_recipe("m", "d", device=device)
    r["passes"] = [p for p in r["passes"] if p["type"] == "LoRA"]
    r["target"]["precision"] = "fp32" if device == "cpu" else "bf16"
    return r


def cuda_int4(device: str = "gpu") -> dict[str, Any]:
    r = lab_recipe("m", "d", device="gpu")
    r["passes"] = [
        {"type": "AutoAWQQuantizer", "params": {"bits": 4}},
        {"type": "ModelBuilder", "params": {"precision": "int4"}},
    ]
    return r


def qlora(device: str = "gpu") -> dict[str, Any]:
    """QLoRA: the base loaded in 4-bit NF4 (bitsandbytes, CUDA only) while the adapter trains, then ONNX int4."""
    r = lab_recipe("m", "d", device="gpu", name="QLoRA (4-bit base) -> ONNX int4 + adapter")
    lora = next(p for p in r["passes"] if p["type"] == "LoRA")
    r["passes"] = [{"type": "QLoRA", "params": {**lora["params"], "compute_dtype": "bfloat16"}}] + r["passes"][-2:]
    return r


def gptq(device: str = "gpu") -> dict[str, Any]:
    """GPTQ 4-bit with Olive's own Gptq pass, calibrated on the run's data (a PyTorch checkpoint, quant_method olive)."""
    r = lab_recipe("m", "d", device="gpu", name="GPTQ 4-bit (Olive Gptq)")
    r["passes"] = [{"type": "Gptq", "params": {"bits": 4, "group_size": 128}}]
    r["target"]["precision"] = "int4"
    return r


# key -> (label, build(device) -> spec dict with placeholder model "m" and dataset "d")
PRESETS = {
    "lab": (
        "The lab: LoRA fine-tune -> ONNX int4 with the adapter extracted (on a GPU: AWQ 4-bit first, LoRA on it)",
        lambda device: lab_recipe("m", "d", device=device),
    ),
    "finetune": ("Fine-tune only: a LoRA adapter on the input model", finetune_only),
    "cuda_int4": ("Quantize for CUDA int4: AutoAWQ 4-bit -> ONNX int4 for onnxruntime-genai on a GPU", cuda_int4),
    "qlora": ("QLoRA on a GPU: 4-bit NF4 base (bitsandbytes) while training -> ONNX int4 + adapter", qlora),
    "gptq": ("GPTQ 4-bit on a GPU: Olive's Gptq pass calibrated on your data", gptq),
}

"""Ready-made workflows. The first is the lab's: LoRA fine-tune -> ONNX int4 for onnxruntime-genai with the
adapter extracted, ready for chat with the adapter on or off.

On a GPU the lab starts with AWQ 4-bit quantization (AutoAWQ needs CUDA). On the CPU that step cannot run, so the
recipe fine-tunes the full-precision model and quantizes in the ONNX builder (int4 base, LoRA path kept in fp32).
"""

from __future__ import annotations

from typing import Any

from engine import demo, paths
from engine.spec import RunSpec, parse_spec

LAB_TEXT_TEMPLATE = demo.PHI3_TEXT_TEMPLATE


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
    """The lab recipe on the embedded demo model and the project's own travel sample (builds the demo first)."""
    demo.build_demo()
    d = paths.demo_dir()
    return parse_spec(lab_recipe(str(d / "model"), str(d / "travel_sample.jsonl"), name="demo: travel LoRA -> int4 ONNX", **kw))


RECIPES = {
    "lab": "LoRA fine-tune -> ONNX int4 with the adapter extracted (AWQ first on a GPU)",
}

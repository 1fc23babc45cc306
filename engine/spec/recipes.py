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


# Grove's AWQ preset: AutoAWQ's clip search off (P9's ``apply_clip``). Measured on an H100 (docs/benchmarks.md, "AWQ at
# full depth"): at Phi-3-mini depth AutoAWQQuantizer took 98 s without it (the <= 2 min stage target; 280 s with
# AutoAWQ's defaults before P12), and on SmolLM2's real weights the held-out loss was lower without it (4.510 against
# 4.628, fp16 4.354). A user who wants AutoAWQ's clip search sets apply_clip back on in the pass editor.
AWQ_PRESET: dict[str, Any] = {"bits": 4, "apply_clip": False}


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
        passes.append({"type": "AutoAWQQuantizer", "params": dict(AWQ_PRESET)})
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
        {"type": "AutoAWQQuantizer", "params": dict(AWQ_PRESET)},
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


def baseline(device: str = "cpu") -> dict[str, Any]:
    """No passes: the input model measured as it is (quality and speed), the yardstick for every other run."""
    r = lab_recipe("m", "d", device=device, name="baseline: the model as it is")
    r["passes"] = []
    r["search"] = None
    r["evaluation"] = {"enabled": True, "evaluate_input_model": True, "metrics": [
        {"name": "perplexity", "priority": 1}, {"name": "rouge_l", "priority": 2}, {"name": "decode_tps", "priority": 3}]}
    return r


# Olive's OpenVINO path as microsoft/olive-recipes runs it (its *_ov_config.json): the Hugging Face model converted by
# optimum-intel with int4 weight compression (NNCF), its inputs made dynamic, and the IR encapsulated in an ONNX
# EPContext model with a genai_config.json for onnxruntime-genai's OpenVINO provider. Group size 64 divides the
# hidden sizes of SmolLM2-135M (576, 1536) and of the tiny model (256, 640); ratio 1.0: every MatMul in int4 (NNCF
# keeps the embeddings and the head in int8), as ModelBuilder's int4 does.
OV_INT4 = {"weight_format": "int4", "group_size": 64, "ratio": 1.0}


def openvino_passes(device: str = "cpu") -> list[dict[str, Any]]:
    return [
        {"type": "OpenVINOOptimumConversion",
         "params": {"extra_args": {"device": device, "task": "text-generation-with-past"}, "ov_quant_config": dict(OV_INT4)}},
        {"type": "OpenVINOIoUpdate", "params": {"static": False, "reuse_cache": True}},
        {"type": "OpenVINOEncapsulation", "params": {"target_device": device, "keep_ov_dynamic_dims": True, "reuse_cache": True}},
    ]  # fmt: skip


def openvino_int4(device: str = "cpu", lora: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenVINO target (engine.targets: its own environment): a LoRA fine-tune merged into the weights, as the
    CPU recipe trains it, then Olive's OpenVINO passes to an int4 OpenVINO model; measured by Grove's evaluator in the
    OpenVINO environment. OpenVINO runs on this host's CPU (device 'cpu')."""
    r = lab_recipe("m", "d", device="cpu", name="OpenVINO: LoRA merged -> int4 OpenVINO")
    train = lora or next(p for p in r["passes"] if p["type"] == "LoRA")
    r["passes"] = [train, {"type": "MergeAdapterWeights"}, *openvino_passes("cpu")]
    r["target"] = {"device": "cpu", "execution_provider": "OpenVINOExecutionProvider", "precision": "int4"}
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
    "baseline": ("Baseline: no passes, the model measured as it is (the yardstick for the other runs)", baseline),
    "openvino": ("OpenVINO int4: LoRA fine-tune merged -> Olive's OpenVINO conversion (int4) and encapsulation, "
                 "run and measured in the OpenVINO target environment", openvino_int4),
}


# -- the demo on the real model (SmolLM2-135M-Instruct, engine.models.smollm) -----------------------------------------
# Chosen on 2 cores (bench/bench_smollm_demo.py): LoRA on every linear layer at rank 16, lr 2e-3, moves the held-out
# response loss from 4.02 to 3.33 in 16 steps of 8 examples at sequence 128 (3.29 in 20 at lr 1e-3); 16 keeps the
# whole demo near 5 minutes on 2 cores. The ChatML chat template is the tokenizer's.
REAL_DEMO_STEPS = 16
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def real_demo_recipes(model: str, dataset: str, *, max_steps: int = REAL_DEMO_STEPS, eval_samples: int = 20) -> list[dict[str, Any]]:
    """The two runs of the demo: LoRA -> int4 ONNX with the adapter extracted (candidates: the base model, the
    fine-tune, int4 with the adapter on and off), and LoRA -> MergeAdapterWeights -> int4 ONNX (Olive's JSON
    workflow path), which reuses the first run's LoRA from Olive's cache. Every candidate is evaluated on the same
    held-out split."""
    lora = {
        "type": "LoRA",
        "params": {
            "r": 16, "alpha": 32, "lora_dropout": 0.05, "target_modules": LLAMA_LINEAR, "torch_dtype": "float32",
            "training_args": {"max_steps": max_steps, "per_device_train_batch_size": 8, "learning_rate": 2e-3,
                              "logging_steps": 2, "gradient_checkpointing": False, "seed": 0},
        },
    }  # fmt: skip
    int4 = {"type": "ModelBuilder", "params": {"precision": "int4", "int4_accuracy_level": 4}}
    common = {
        "model": {"name": model},
        "dataset": {"path": dataset, "chat_template": True, "max_seq_len": 128, "eval_split": 0.1},
        "target": {"device": "cpu", "execution_provider": "CPUExecutionProvider", "precision": "int4"},
        "evaluation": {
            "enabled": True, "max_eval_samples": eval_samples, "prompt_length": 64, "generation_length": 32, "repeats": 5,
            "metrics": [{"name": "loss", "priority": 1}, {"name": "decode_tps", "priority": 2}],
        },
        "resources": {"gpus": 0},
    }  # fmt: skip
    return [
        {"name": "demo: travel LoRA -> int4 ONNX + adapter", "passes": [lora, int4, {"type": "ExtractAdapters"}], **common},
        # its LoRA and input model are the first run's (measured there); the merged PyTorch model scores as the LoRA
        {"name": "demo: travel LoRA merged -> int4 ONNX", "passes": [lora, {"type": "MergeAdapterWeights"}, int4],
         **{**common, "evaluation": {**common["evaluation"], "evaluate_input_model": False,
                                     "evaluate_intermediate_models": False}}},
    ]


def real_demo_gpu_recipes(model: str, dataset: str, *, max_steps: int = REAL_DEMO_STEPS, eval_samples: int = 20) -> dict[str, dict[str, Any]]:
    """The demo's two recipes moved to CUDA (same LoRA, same int4 settings, same held-out rows as on the CPU), with the
    GPU quantizers beside them: the lab's order (AWQ -> AwqDequantize -> LoRA -> int4 + adapter), QLoRA and GPTQ.
    Group size 64 for AWQ and GPTQ: SmolLM2's 576-wide layers are not a multiple of their default 128. The input model
    is measured once, in the first ("rtn") run."""
    rtn, merged = real_demo_recipes(model, dataset, max_steps=max_steps, eval_samples=eval_samples)
    gpu = {"target": {"device": "gpu", "execution_provider": "CUDAExecutionProvider", "precision": "int4"},
           "resources": {"gpus": 1}}
    lora, int4, extract = rtn["passes"]
    later = {**rtn["evaluation"], "evaluate_input_model": False}
    awq = [{"type": "AutoAWQQuantizer", "params": {**AWQ_PRESET, "q_group_size": 64}},
           {"type": "AwqDequantize", "params": {"torch_dtype": "float16"}}]
    qlora = {"type": "QLoRA", "params": {**lora["params"], "compute_dtype": "bfloat16", "torch_dtype": "bfloat16"}}
    return {
        "rtn": {**rtn, **gpu, "name": "GPU: LoRA -> int4 (ModelBuilder RTN) + adapter"},
        "merged": {**merged, **gpu, "name": "GPU: LoRA merged -> int4 (RTN)"},
        "lab": {**rtn, **gpu, "name": "GPU: AWQ -> AwqDequantize -> LoRA -> int4 + adapter (the lab's order)",
                "passes": awq + [lora, int4, extract], "evaluation": later},
        "qlora": {**rtn, **gpu, "name": "GPU: QLoRA (NF4 base) -> int4 + adapter", "passes": [qlora, int4, extract],
                  "evaluation": later},
        "gptq": {**rtn, **gpu, "name": "GPU: GPTQ 4-bit (Olive Gptq) -> int4", "evaluation": later,
                 "passes": [{"type": "Gptq", "params": {"bits": 4, "group_size": 64}}, int4]},
    }


def real_demo_specs(model: str, dataset: str | None = None, **kw: Any) -> list[RunSpec]:
    return [parse_spec(r) for r in real_demo_recipes(model, str(dataset or paths.DEMO_SAMPLE), **kw)]

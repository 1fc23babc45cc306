"""Grove's own facts about Olive pass types, in one table.

Olive's metadata (engine.olive.catalog) says which parameters a pass takes and which devices it supports; this table
says what Grove needs beyond that: which passes train an adapter, which calibrate on data (and so get the run's own
data, never a hub download), which quantize PyTorch weights, which produce an ONNX model, which only run on CUDA and
why. Every module that asks such a question reads the sets derived here.
"""

from __future__ import annotations

from typing import Any

# kind: "adapter" (trains a PEFT adapter), "pt_quantizer" (changes PyTorch weights' precision), "onnx" (writes an
# ONNX model), "extract" (moves adapter weights out of an ONNX model), "merge" (folds an adapter into the weights).
# calibrated: takes a calibration data set. gpu_only: why it cannot run on a CPU target.
PASS_FACTS: dict[str, dict[str, Any]] = {
    "LoRA": {"kind": "adapter"},
    "QLoRA": {"kind": "adapter", "gpu_only": "bitsandbytes 4-bit training needs CUDA"},
    "LoftQ": {"kind": "adapter", "gpu_only": "bitsandbytes needs CUDA"},
    "DoRA": {"kind": "adapter"},
    "LoHa": {"kind": "adapter"},
    "LoKr": {"kind": "adapter"},
    "SDLoRA": {"gpu_only": "runs on a GPU only"},
    "AutoAWQQuantizer": {"kind": "pt_quantizer", "calibrated": True, "gpu_only": "AutoAWQ quantizes on CUDA only"},
    "GptqQuantizer": {"kind": "pt_quantizer", "calibrated": True, "gpu_only": "auto-gptq quantizes on CUDA only"},
    "Gptq": {"kind": "pt_quantizer", "calibrated": True},
    "GptqModel": {"kind": "pt_quantizer", "calibrated": True},
    "Rtn": {"kind": "pt_quantizer"},
    "QuaRot": {"kind": "pt_quantizer"},
    "SpinQuant": {"kind": "pt_quantizer"},
    "KQuant": {"kind": "pt_quantizer"},
    "SelectiveMixedPrecision": {"kind": "pt_quantizer"},
    "AutoClip": {"kind": "pt_quantizer"},
    "SparseGPT": {"kind": "pt_quantizer"},
    "SliceGPT": {"kind": "pt_quantizer"},
    "QuarkQuantization": {"kind": "pt_quantizer"},
    "NVModelOptQuantization": {"gpu_only": "NVIDIA ModelOpt runs on CUDA only"},
    "OrtMixedPrecision": {"gpu_only": "fp16 mixed precision runs on a GPU"},
    "ModelBuilder": {"kind": "onnx"},
    "OnnxConversion": {"kind": "onnx"},
    "OptimumConversion": {"kind": "onnx"},
    "MobiusBuilder": {"kind": "onnx"},
    "ExtractAdapters": {"kind": "extract"},
    "MergeAdapterWeights": {"kind": "merge"},
}


def _kind(kind: str) -> frozenset[str]:
    return frozenset(t for t, f in PASS_FACTS.items() if f.get("kind") == kind)


ADAPTER_PASSES = _kind("adapter")
PT_QUANTIZERS = _kind("pt_quantizer")
ONNX_PRODUCERS = _kind("onnx")
CALIBRATED_PASSES = frozenset(t for t, f in PASS_FACTS.items() if f.get("calibrated"))
GPU_ONLY = {t: f["gpu_only"] for t, f in PASS_FACTS.items() if f.get("gpu_only")}
# Parameters Grove fills with the run's dataset (engine.olive.config): adapter passes' training data, and the
# calibration data of the quantizers that calibrate. A user never sets these by hand.
GROVE_FILLED = {"train_data_config": ADAPTER_PASSES, "data_config": CALIBRATED_PASSES}

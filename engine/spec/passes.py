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


# -- pass types as Olive reads them ---------------------------------------------------------------------------------
# Olive 0.13 resolves a pass type case-insensitively (olive/package_config.py: OlivePackageConfig keys its passes in
# lower case and ``get_pass_module_config`` lowers the type; a dotted type is read by its last part). Grove reads the
# same names from Olive's own olive_config.json (a data file: Olive is not imported) plus Grove's passes, and stores
# every pass type in the one spelling the catalog shows, so every check and table here sees one name per pass.
GROVE_PASSES = ("AwqDequantize",)  # registered into Olive by engine.olive.compat


def _olive_config_names() -> list[str]:
    import json
    from importlib.util import find_spec
    from pathlib import Path

    try:
        spec = find_spec("olive")  # finds the package without importing it
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "olive_config.json"
        if p.is_file():
            data = json.loads(p.read_text(encoding="utf-8"))
            return [str(m.get("module_path", k)).rsplit(".", 1)[-1] for k, m in (data.get("passes") or {}).items()]
    return []


_NAMES: dict[str, str] = {}


def pass_names() -> dict[str, str]:
    """{lower-case name: the class name} of every pass this Olive knows, and Grove's own."""
    if not _NAMES:
        for n in [*PASS_FACTS, *GROVE_PASSES, *_olive_config_names()]:
            _NAMES.setdefault(n.lower(), n)
    return _NAMES


def canonical_pass_type(ptype: str, known: dict[str, Any] | None = None) -> str:
    """``ptype`` as Olive resolves it: the part after the last '.', matched without regard to case against
    ``known`` (a catalog: {class name: ...}) or this Olive's passes; unchanged when nothing matches."""
    t = str(ptype).strip()
    short = t.rsplit(".", 1)[-1] if "." in t else t
    if known is not None:
        if short in known:
            return short
        by_lower = {k.lower(): k for k in known}
        if short.lower() in by_lower:
            return by_lower[short.lower()]
    return pass_names().get(short.lower(), t)


# -- targets --------------------------------------------------------------------------------------------------------
# What this Grove runs: onnxruntime-genai's CPU and CUDA builds on Linux (engine.spec.schema.TargetSpec).
GROVE_PROVIDERS = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "gpu", "TensorrtExecutionProvider": "gpu"}
GROVE_TARGETS_TEXT = "CPU (CPUExecutionProvider) and NVIDIA GPUs (CUDAExecutionProvider, TensorrtExecutionProvider)"
# Passes that only make sense for another execution provider or device: dropped when a config for such a target is
# imported as a CPU or CUDA version of it.
TARGET_SPECIFIC_PREFIXES = ("QNN", "Qairt", "OpenVINO", "Vitis", "Ryzen", "NVModelOptGraphSurgery")
TARGET_SPECIFIC = frozenset({"EPContextBinaryGenerator", "StaticLLM", "MatMulNBitsToQDQ", "SplitModel",
                             "MixedPrecisionOverrides", "AimetQuantization", "QuarkQuantizationVitisAI",
                             "DynamicToFixedShape"})


def target_specific(ptype: str) -> bool:
    return ptype in TARGET_SPECIFIC or ptype.startswith(TARGET_SPECIFIC_PREFIXES)

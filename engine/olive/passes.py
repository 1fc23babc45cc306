"""Olive passes Grove adds to Olive's catalog (registered by ``engine.olive.compat``, so ``olive run`` knows them too).

``AwqDequantize`` makes the lab's order (AWQ 4-bit, then LoRA on the quantized model, then ONNX) run with the pinned
stack. transformers 5 loads AWQ checkpoints only through ``gptqmodel`` (a compiled CUDA package whose current
releases need torch >= 2.14 and transformers >= 5.20; PyPI has no wheels), and peft cannot wrap AutoAWQ's
``WQLinear`` without it. This pass writes the AWQ model's weights back as 16-bit tensors, *exactly* the values the
AWQ model computes with (``(q - zero) * scale`` per group), so LoRA then trains against the quantized base - what the
lab's order is for - and ModelBuilder re-quantizes those grid values to int4. It does not quantize anything itself.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olive.passes import Pass
from olive.passes.pass_config import PassConfigParam

if TYPE_CHECKING:
    from olive.hardware.accelerator import AcceleratorSpec
    from olive.model import HfModelHandler
    from olive.passes.pass_config import BasePassConfig

logger = logging.getLogger(__name__)

DTYPES = ("float16", "bfloat16", "float32")


def dequantize_awq_folder(src: Path, dst: Path, dtype: str = "float16", device: str | None = None) -> dict[str, Any]:
    """Write ``src`` (an AutoAWQ GEMM checkpoint) to ``dst`` as a plain ``dtype`` checkpoint. Returns what it did."""
    import torch
    from awq.utils.packing_utils import dequantize_gemm
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{src}: no config.json; AwqDequantize needs a model folder written by AutoAWQQuantizer")
    cfg = json.loads(cfg_path.read_text())
    q = cfg.get("quantization_config") or {}
    if q.get("quant_method") != "awq":
        raise ValueError(f"{cfg_path}: quantization_config.quant_method is {q.get('quant_method')!r}, not 'awq'")
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise ValueError(f"{cfg_path}: AWQ version {version!r}; only 'gemm' (AutoAWQQuantizer's default) is supported")
    if not q.get("zero_point", True):
        raise ValueError(f"{cfg_path}: AWQ without zero points is not supported")
    bits, group = int(q.get("bits", 4)), int(q.get("group_size", 128))
    if dtype not in DTYPES:
        raise ValueError(f"torch_dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    out_dtype = getattr(torch, dtype)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{src}: no .safetensors files")
    dst.mkdir(parents=True, exist_ok=True)
    n_layers = 0
    weight_map: dict[str, str] = {}
    for f in files:
        tensors: dict[str, Any] = {}
        with safe_open(str(f), framework="pt") as fh:
            names = list(fh.keys())
            prefixes = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
            for p in prefixes:
                for part in (".qzeros", ".scales"):
                    if p + part not in names:
                        raise ValueError(f"{f.name}: {p}.qweight has no {p}{part} (AWQ tensors split across files?)")
                w = dequantize_gemm(
                    fh.get_tensor(p + ".qweight").to(dev),
                    fh.get_tensor(p + ".qzeros").to(dev),
                    fh.get_tensor(p + ".scales").to(dev),
                    bits,
                    group,
                )
                tensors[p + ".weight"] = w.t().contiguous().to(out_dtype).cpu()  # [in, out] -> nn.Linear's [out, in]
                n_layers += 1
            skip = {p + s for p in prefixes for s in (".qweight", ".qzeros", ".scales")}
            for n in names:
                if n not in skip:
                    t = fh.get_tensor(n)
                    tensors[n] = t.to(out_dtype) if t.is_floating_point() else t
        save_file(tensors, str(dst / f.name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, f.name))
    if len(files) > 1:
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    for extra in src.iterdir():
        if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(extra, dst / extra.name)
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = dtype
    cfg["dtype"] = dtype
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return {"layers": n_layers, "bits": bits, "group_size": group, "dtype": dtype}


class AwqDequantize(Pass):
    """AWQ checkpoint -> 16-bit checkpoint holding the exact dequantized AWQ weights (for LoRA after AWQ)."""

    @classmethod
    def _default_config(cls, accelerator_spec: AcceleratorSpec) -> dict[str, PassConfigParam]:
        return {
            "torch_dtype": PassConfigParam(
                type_=str, default_value="float16", description="dtype of the written weights: float16, bfloat16 or float32."
            ),
        }

    def _run_for_config(
        self, model: HfModelHandler, config: type[BasePassConfig], output_model_path: str
    ) -> HfModelHandler:
        from olive.passes.pytorch.common import inherit_hf_from_hf

        src = Path(model.model_path)
        done = dequantize_awq_folder(src, Path(output_model_path), config.torch_dtype)
        logger.info("AwqDequantize: %d AWQ layers written as %s", done["layers"], config.torch_dtype)
        return inherit_hf_from_hf(model, output_model_path, adapter_path=model.adapter_path)


# name -> Olive's package-config entry; engine.olive.compat adds these to Olive's catalog
GROVE_PASSES: dict[str, dict[str, Any]] = {
    "AwqDequantize": {
        "module_path": "engine.olive.passes.AwqDequantize",
        "supported_providers": ["*"],
        "supported_accelerators": ["*"],
        "supported_precisions": ["*"],
        "extra_dependencies": ["autoawq"],
    },
}

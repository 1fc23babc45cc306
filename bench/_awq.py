"""An AutoAWQ GEMM 4-bit checkpoint made on the CPU, for the AWQ paths that need no CUDA (AwqDequantize, ModelBuilder).

AutoAWQ's calibration (its activation-aware scale and clip search) needs CUDA; its round-to-nearest quantizer
(``AwqQuantizer.pseudo_quantize_tensor``) and its GEMM packing (``WQLinear_GEMM.from_linear``) do not. The checkpoint
written here is what AutoAWQ writes, on the grid AutoAWQ would use for the same scales: asymmetric, ``group`` input
channels per scale and zero point. It is not AWQ's search, so it says nothing of AWQ's quality, only of what later
passes do to an AWQ model's weights. Used by tests/engine/test_awq_dequantize.py and bench/bench_awq_grid.py."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path
from typing import Any


def make_awq_checkpoint(src: Path, dst: Path, group: int = 128, linears: tuple[str, ...] | None = None,
                        fast_pack: bool = True) -> dict[str, Any]:
    """``src`` (a 16-bit HF folder) written to ``dst`` as an AutoAWQ GEMM 4-bit checkpoint; returns the fake-quant
    fp16 weights by module name. ``linears``: the module names' last parts to quantize (default: every Linear but
    the output head). ``fast_pack``: pack with Grove's P12 (engine.olive.compat, bit-identical), else with AutoAWQ's
    own column-by-column ``from_linear``."""
    import torch
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.quantize.quantizer import AwqQuantizer
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from engine.olive import compat

    compat._p12_fast_pack()
    patched = WQLinear_GEMM.from_linear.__func__
    pack = patched if fast_pack else getattr(patched, "_grove_original", patched)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16)
    q = types.SimpleNamespace(group_size=group, zero_point=True, w_bit=4)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    fake = {}
    for name, mod in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if not isinstance(mod, torch.nn.Linear) or (linears and last not in linears) or (not linears and last == "lm_head"):
            continue
        w, scales, zeros = AwqQuantizer.pseudo_quantize_tensor(q, mod.weight.data.float())
        mod.weight.data = w.half()
        fake[name] = w.half()
        ql = pack(WQLinear_GEMM, mod, 4, group, False, scales.t().contiguous(), zeros.t().contiguous())
        del sd[name + ".weight"]
        sd[name + ".qweight"], sd[name + ".qzeros"], sd[name + ".scales"] = ql.qweight, ql.qzeros, ql.scales
    if "lm_head.weight" in sd and getattr(model.config, "tie_word_embeddings", False):
        del sd["lm_head.weight"]  # tied: safetensors refuses shared tensors; transformers re-ties on load
    dst.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                                  "version": "gemm", "modules_to_not_convert": None}
    cfg["torch_dtype"] = "float16"
    (dst / "config.json").write_text(json.dumps(cfg))
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy2(f, dst / f.name)
    return fake


def onnx_name(hf: str) -> str:
    """``model.layers.3.mlp.down_proj`` -> ``/model/layers.3/mlp/down_proj/`` (ModelBuilder's node names)."""
    parts = hf.split(".")
    return f"/model/layers.{parts[2]}/{'attn' if parts[3] == 'self_attn' else parts[3]}/{parts[4]}/"


def int4_weights(folder: Path) -> dict:
    """Every MatMulNBits weight of an ONNX folder, dequantized, as torch [out, in] tensors keyed by node name."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper

    path = next(folder.rglob("*.onnx"))
    model = onnx.load(str(path), load_external_data=True)
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k, n, block, bits = attrs["K"], attrs["N"], attrs["block_size"], attrs.get("bits", 4)
        assert bits == 4, node.name
        packed = numpy_helper.to_array(inits[node.input[1]])
        kb = (k + block - 1) // block
        q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(n, kb, block).astype(np.float32)
        scales = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(n, kb)
        if len(node.input) > 3 and node.input[3]:
            zp = numpy_helper.to_array(inits[node.input[3]]).reshape(n, -1)
            zero = np.stack([zp & 0x0F, zp >> 4], -1).reshape(n, -1)[:, :kb].astype(np.float32)
        else:
            zero = np.full((n, kb), 8.0, np.float32)
        w = ((q - zero[..., None]) * scales[..., None]).reshape(n, kb * block)[:, :k]
        out[node.name] = torch.from_numpy(w)
    return out

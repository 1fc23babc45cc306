"""Grove's int4 CUDA builds on the GPU set (onnxruntime-genai 0.18): the fused qkv projection with LoRA
(engine.olive.compat G2) computes what PEFT computes, adapter on and off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.olive import compat as olive_compat
from engine.olive import config as olive_config


def _random_adapter(model_dir: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    pm = get_peft_model(m, LoraConfig(r=8, lora_alpha=16, target_modules=["qkv_proj", "o_proj"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pm.save_pretrained(str(out))
    return out


def _hf_logits(model_dir: str, adapter: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).cuda().eval()
    x = torch.tensor([ids], device="cuda")
    with torch.no_grad():
        base = m(x).logits[0, -1].float().cpu().numpy()
        lora = PeftModel.from_pretrained(m, str(adapter)).eval()(x).logits[0, -1].float().cpu().numpy()
    return base, lora


def _genai_logits(folder: Path, ids: list[int], adapter: bool) -> np.ndarray:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    p = og.GeneratorParams(model)
    p.set_search_options(max_length=len(ids) + 4)
    g = og.Generator(model, p)
    ads = None
    if adapter:
        ads = og.Adapters(model)
        ads.load(str(folder / "adapter_weights.onnx_adapter"), "a")
        g.set_active_adapter(ads, "a")
    g.append_tokens(ids)
    out = np.asarray(g.get_output("logits"), dtype=np.float32)[0, -1]
    del g, p, ads, model
    return out


def test_fused_qkv_lora_matches_peft_on_cuda(demo, tmp_path):
    olive_compat.apply()
    import onnxruntime_genai as og
    from onnxruntime_genai.models import builder

    if not all(hasattr(getattr(builder, "Model", None), m)
               for m in ("make_attention_input_proj", "is_packed_matmul_supported", "make_matmul_lora")):
        # G2 patches the builder layout of genai 0.16 and later; 0.15.2 (the GPU set's choice, docs/gpu.md) builds
        # LoRA on qkv split into three projections, which bench/gpu_adapters.py measures
        pytest.skip(f"onnxruntime-genai {og.__version__}'s builder has no fused-qkv LoRA path for G2 to patch")
    assert getattr(builder.Model, "_grove_g2", False), "G2 did not apply to this onnxruntime-genai (engine.olive.compat)"
    adapter = _random_adapter(demo["model"], tmp_path / "adapter")
    import olive.workflows.run.run  # noqa: F401
    from olive.workflows import run

    out = tmp_path / "out"
    run({
        "input_model": {"type": "HfModel", "model_path": demo["model"], "adapter_path": str(adapter)},
        "systems": {"s": {"type": "LocalSystem", "accelerators": [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}},
        "passes": {"mb": {"type": "ModelBuilder", "precision": "fp16", "extra_options": {olive_config.FUSE_LORA_QKV: True}},
                   "ex": {"type": "ExtractAdapters"}},
        "host": "s", "target": "s", "cache_dir": str(tmp_path / "cache"), "output_dir": str(out),
        "evaluate_input_model": False, "log_severity_level": 3,
    })
    import onnx

    g = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    names = [n.name for n in g.node]
    assert any("/attn/qkv_proj/lora_A/MatMul" in n for n in names) and not any("/attn/q_proj/" in n for n in names)
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert gqa and all(n.input[1] == "" and n.input[2] == "" for n in gqa)  # packed Q/K/V input
    ids = [5, 100, 200, 300, 400, 17, 33, 250]
    base, lora = _hf_logits(demo["model"], adapter, ids)
    assert np.linalg.norm(lora - base) / np.linalg.norm(base) > 0.02  # the adapter changes the output
    on, off = _genai_logits(out, ids, True), _genai_logits(out, ids, False)
    assert np.linalg.norm(on - lora) / np.linalg.norm(lora) < 1e-2
    assert np.linalg.norm(off - base) / np.linalg.norm(base) < 1e-2


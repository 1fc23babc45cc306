"""Shared by the CPU and the GPU test of G2 (engine.olive.compat): build the demo model with a random LoRA adapter
through Olive's ModelBuilder -> ExtractAdapters with ``grove_fuse_lora_qkv``, then check the graph keeps the fused
qkv projection and that onnxruntime-genai's logits match PEFT's, adapter on and off."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.olive import compat as olive_compat
from engine.olive import config as olive_config

IDS = [5, 100, 200, 300, 400, 17, 33, 250]


def random_adapter(model_dir: str, out: Path) -> Path:
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


def hf_logits(model_dir: str, adapter: Path, ids: list[int], device: str) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        base = m(x).logits[0, -1].float().cpu().numpy()
        lora = PeftModel.from_pretrained(m, str(adapter)).eval()(x).logits[0, -1].float().cpu().numpy()
    return base, lora


def genai_logits(folder: Path, ids: list[int], adapter: bool) -> np.ndarray:
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


def check_fused_qkv_lora(model_dir: str, tmp_path: Path, device: str) -> None:
    """``device``: "cpu" (fp32 build, CPU provider) or "cuda" (fp16 build, CUDA provider)."""
    olive_compat.apply()
    from onnxruntime_genai.models import builder

    assert getattr(builder.Model, "_grove_g2", False), (
        f"G2 did not apply to this onnxruntime-genai's builder (layout {olive_compat.g2_layout(builder.Model)})")
    adapter = random_adapter(model_dir, tmp_path / "adapter")
    import olive.workflows.run.run  # noqa: F401
    from olive.workflows import run

    gpu = device == "cuda"
    out = tmp_path / "out"
    run({
        "input_model": {"type": "HfModel", "model_path": model_dir, "adapter_path": str(adapter)},
        "systems": {"s": {"type": "LocalSystem", "accelerators": [
            {"device": "gpu" if gpu else "cpu",
             "execution_providers": ["CUDAExecutionProvider" if gpu else "CPUExecutionProvider"]}]}},
        "passes": {"mb": {"type": "ModelBuilder", "precision": "fp16" if gpu else "fp32",
                          "extra_options": {olive_config.FUSE_LORA_QKV: True}},
                   "ex": {"type": "ExtractAdapters"}},
        "host": "s", "target": "s", "cache_dir": str(tmp_path / "cache"), "output_dir": str(out),
        "evaluate_input_model": False, "log_severity_level": 3,
    })
    import onnx

    g = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    names = [n.name for n in g.node]
    assert any("/attn/qkv_proj/lora_A/MatMul" in n for n in names), "no LoRA on the fused qkv projection"
    assert not any("/attn/q_proj/" in n for n in names), "the qkv projection was split"
    gqa = [n for n in g.node if n.op_type == "GroupQueryAttention"]
    assert gqa and all(n.input[1] == "" and n.input[2] == "" for n in gqa), "GroupQueryAttention not fed packed Q/K/V"
    base, lora = hf_logits(model_dir, adapter, IDS, device)
    assert np.linalg.norm(lora - base) / np.linalg.norm(base) > 0.02  # the adapter changes the output
    on, off = genai_logits(out, IDS, True), genai_logits(out, IDS, False)
    tol = 1e-2 if gpu else 1e-3
    assert np.linalg.norm(on - lora) / np.linalg.norm(lora) < tol, "adapter on: not PEFT's logits"
    assert np.linalg.norm(off - base) / np.linalg.norm(base) < tol, "adapter off: not the base model's logits"

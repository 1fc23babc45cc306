"""Grove's CUDA builds on the GPU set: the fused qkv projection with LoRA (engine.olive.compat G2) computes what
PEFT computes on CUDA, adapter on and off (fp16). The same check on the CPU: tests/engine/test_g2_fused_lora.py."""

from __future__ import annotations

from tests.g2_check import check_fused_qkv_lora


def test_fused_qkv_lora_matches_peft_on_cuda(demo, tmp_path):
    check_fused_qkv_lora(demo["model"], tmp_path, "cuda")

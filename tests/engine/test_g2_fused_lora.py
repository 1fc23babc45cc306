"""G2 (engine.olive.compat) on the CPU set's onnxruntime-genai: an adapter build with ``grove_fuse_lora_qkv`` keeps
the fused qkv projection (one int4/fp MatMul, one LoRA A/B pair per layer) and still computes PEFT's logits, adapter
on and off. The CUDA check is tests/gpu/test_gpu_builds.py."""

from __future__ import annotations

from tests.g2_check import check_fused_qkv_lora


def test_fused_qkv_lora_matches_peft_on_cpu(demo, tmp_path):
    check_fused_qkv_lora(demo["model"], tmp_path, "cpu")

"""Grove's ModelBuilder defaults for int4 builds for CUDA (engine.olive.config.cuda_int4_builder_options): set for
CUDA targets, user values win, CPU targets unchanged; and AWQ's grid kept when ModelBuilder re-quantizes
AwqDequantize's weights (engine.olive.config.awq_int4_grid; the real build: tests/engine/test_awq_dequantize.py)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.olive import config as olive_config
from engine.spec import recipes
from engine.spec.schema import parse_spec


def _mb(tmp_path: Path, device: str, awq: bool = False, quant: dict | None = None, passes=None, **params) -> dict:
    """The int4 ModelBuilder pass of the lab recipe (``awq``: with its AWQ -> AwqDequantize head on the GPU)."""
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 2, **({"quantization_config": quant} if quant else {})}))
    r = recipes.lab_recipe(str(model), str(tmp_path / "d.jsonl"), device=device)
    if not awq:
        r["passes"] = [p for p in r["passes"] if p["type"] not in ("AutoAWQQuantizer", "AwqDequantize")]
    if passes:
        r["passes"] = passes(r["passes"])
    mb = next(p for p in r["passes"] if p["type"] == "ModelBuilder")
    mb["params"].update(params)
    cfg = olive_config.build(parse_spec(r), output_dir=tmp_path / "o", train_path=tmp_path / "t.jsonl")
    return cfg["passes"]["modelbuilder"]


def test_cuda_int4_build_gets_graphs_and_the_fused_qkv(tmp_path):
    mb = _mb(tmp_path, "gpu")
    assert mb["enable_cuda_graph"] is True
    assert mb["int4_block_size"] == 64  # the adapter build fits 2.3 GB at Phi-3-mini size (docs/benchmarks.md)
    assert mb["extra_options"] == {olive_config.FUSE_LORA_QKV: True}
    assert "/model/layers.1/attn/qkv_proj/lora_A/MatMul" in mb["int4_nodes_to_exclude"]


def test_user_values_win_and_cpu_is_unchanged(tmp_path):
    mb = _mb(tmp_path, "gpu", enable_cuda_graph=False, extra_options={olive_config.FUSE_LORA_QKV: False, "block_size": 128})
    assert mb["enable_cuda_graph"] is False
    assert mb["extra_options"] == {olive_config.FUSE_LORA_QKV: False, "block_size": 128}
    assert "int4_block_size" not in mb  # the block size the user gave the builder is the one it gets
    assert _mb(tmp_path, "gpu", int4_block_size=32)["int4_block_size"] == 32
    cpu = _mb(tmp_path, "cpu")
    assert "enable_cuda_graph" not in cpu and "extra_options" not in cpu and "int4_block_size" not in cpu


def test_the_lab_order_re_quantizes_on_awqs_own_grid(tmp_path):
    mb = _mb(tmp_path, "gpu", awq=True)  # AutoAWQQuantizer's defaults: group 128, zero point
    assert (mb["int4_block_size"], mb["int4_is_symmetric"]) == (128, False)
    assert mb["enable_cuda_graph"] is True  # the other CUDA defaults stay

    def group(g):
        return lambda ps: [{**p, "params": {**p["params"], "q_group_size": g}} if p["type"] == "AutoAWQQuantizer" else p
                           for p in ps]
    assert _mb(tmp_path, "gpu", awq=True, passes=group(64))["int4_block_size"] == 64
    # a grid ModelBuilder cannot take (per-channel) leaves Grove's CUDA default, symmetric
    per_channel = _mb(tmp_path, "gpu", awq=True, passes=group(-1))
    assert per_channel["int4_block_size"] == 64 and "int4_is_symmetric" not in per_channel


def test_awqs_grid_is_not_forced_where_it_is_gone_or_the_user_chose(tmp_path):
    def symmetric(ps):
        return [{**p, "params": {**p["params"], "zero_point": False}} if p["type"] == "AutoAWQQuantizer" else p for p in ps]

    def merged(ps):
        i = next(i for i, p in enumerate(ps) if p["type"] == "ModelBuilder")
        return [p for p in ps[:i] if p["type"] != "ExtractAdapters"] + [{"type": "MergeAdapterWeights"}, ps[i]]

    for kw in ({"passes": symmetric}, {"passes": merged}, {"int4_block_size": 32}, {"int4_is_symmetric": True},
               {"extra_options": {"int4_block_size": 32}}):
        mb = _mb(tmp_path, "gpu", awq=True, **kw)
        assert mb.get("int4_is_symmetric") is not False, kw
    assert _mb(tmp_path, "gpu", awq=True, int4_block_size=32)["int4_block_size"] == 32


def test_a_workflow_from_an_awq_checkpoint_reads_the_grid_from_the_model(tmp_path):
    def from_checkpoint(ps):  # AwqDequantize first: the input model is an AWQ checkpoint (the CPU lab order)
        return [{"type": "AwqDequantize", "params": {"torch_dtype": "float32"}}, *ps]

    awq = {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True}
    cpu = _mb(tmp_path, "cpu", quant=awq, passes=from_checkpoint)
    assert (cpu["int4_block_size"], cpu["int4_is_symmetric"]) == (64, False)
    gptq = _mb(tmp_path, "cpu", quant={**awq, "quant_method": "gptq"}, passes=from_checkpoint)
    assert "int4_block_size" not in gptq and "int4_is_symmetric" not in gptq


def test_the_users_own_int4_exclusions_join_the_lora_matmuls(tmp_path):
    mb = _mb(tmp_path, "cpu", int4_nodes_to_exclude=["/lm_head/MatMul"])  # the lm_head kept out of int4
    nodes = mb["int4_nodes_to_exclude"]
    assert nodes[0] == "/lm_head/MatMul"
    # the LoRA MatMuls stay out of int4 too: quantized, the model crashes in genai with no adapter active
    assert "/model/layers.1/attn/qkv_proj/lora_B/MatMul" in nodes and len(nodes) == len(set(nodes))

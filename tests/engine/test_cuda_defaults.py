"""Grove's ModelBuilder defaults for int4 builds for CUDA (engine.olive.config.cuda_int4_builder_options): set for
CUDA targets, user values win, CPU targets unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from engine.olive import config as olive_config
from engine.spec import recipes
from engine.spec.schema import parse_spec


def _mb(tmp_path: Path, device: str, **params) -> dict:
    model = tmp_path / "m"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    r = recipes.lab_recipe(str(model), str(tmp_path / "d.jsonl"), device=device)
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

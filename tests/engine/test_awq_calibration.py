"""P9 (engine.olive.compat): Olive 0.13's AutoAWQQuantizer hands AutoAWQ fewer calibration blocks than asked, and
its knobs (calibration size, clip search, grid) reach AutoAWQ once the patch is applied. CPU only: AutoAWQ imports
without CUDA; nothing here quantizes."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.models import tiny as demo
from engine.olive import compat as olive_compat

TEXTS = [demo.PHI3_TEXT_TEMPLATE.format(**r) for r in demo.read_sample()]


def test_autoawq_gets_fewer_blocks_than_asked_and_the_packing_gives_them():
    from awq.utils.calib_data import get_calib_dataset

    tok = demo._train_tokenizer(demo.read_sample())
    texts = TEXTS[:360]  # the demo recipe's train split size
    # what Olive 0.13 leads AutoAWQ to do: 128 texts concatenated, cut into 512-token blocks
    unpatched = get_calib_dataset(texts, tokenizer=tok, n_samples=128, max_seq_len=512)
    total = sum(len(tok.encode(t.strip())) for t in texts)
    assert len(unpatched) < 128 // 4, len(unpatched)  # 21 blocks here: a sixth of what was asked
    # the patch packs full blocks: as many as asked when the data holds them, else all it holds
    for asked in (16, 32, 128):
        blocks = olive_compat.awq_calib_blocks(texts, tok, asked, 512)
        assert len(blocks) == min(asked, total // 512)
        assert all(len(b) == 512 for b in blocks)
        # and AutoAWQ keeps every one of them
        kept = get_calib_dataset(blocks, tokenizer=tok, n_samples=asked, max_seq_len=512)
        assert len(kept) == len(blocks)


def test_knobs_are_pass_parameters_and_reach_autoawq(tmp_path):
    (tmp_path / "calib").mkdir()
    with open(tmp_path / "calib" / "train.jsonl", "w") as f:
        for t in TEXTS:
            f.write(json.dumps({"text": t}) + "\n")
    code = f"""
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_Hook']
from engine.models import tiny as demo
from engine.olive import compat as c
c.PATCHES["P9 AutoAWQ calibrates on the blocks asked; its knobs"][1]()
from olive.hardware.accelerator import AcceleratorSpec
from olive.passes.pytorch.autoawq import AutoAWQQuantizer
spec = AcceleratorSpec(accelerator_type="gpu", execution_provider="CUDAExecutionProvider")
cfg = AutoAWQQuantizer.generate_config(spec, {{"max_calib_samples": 8, "n_grid": 5, "apply_clip": False}})
seen = {{}}
from awq.models.base import BaseAWQForCausalLM
BaseAWQForCausalLM.quantize = lambda self, *a, **kw: seen.update(kw)  # what the patch calls through to
c._patch_autoawq()
tok = demo._train_tokenizer(demo.read_sample())
token = c._awq_var().set({{k: getattr(cfg, k) for k in c.AWQ_KNOBS}})
BaseAWQForCausalLM.quantize(object(), tok, quant_config={{}}, calib_data={str(tmp_path / "calib")!r}, split="train",
                            text_column="text")
from awq.quantize import quantizer as q
f = q.AwqQuantizer._compute_best_scale
print(json.dumps({{"blocks": len(seen["calib_data"]), "lens": sorted({{len(b) for b in seen["calib_data"]}}),
                  "max_calib_samples": seen["max_calib_samples"], "apply_clip": seen["apply_clip"],
                  "grid": getattr(f, "__wrapped__", f).__globals__["_grove_n_grid"]()}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"blocks": 8, "lens": [512], "max_calib_samples": 8, "apply_clip": False, "grid": 5}


def test_awq_on_a_chat_dataset_gets_calibration_text_olive_accepts(grove_home, tmp_path):
    """The lab's order on the demo's own data (conversations, the model's chat template): Olive refused the workflow
    ("calib_data not found", seen on an H100, 2026-12-07) because calibration text was prepared for text-template
    datasets only. Now every dataset gets its calib/ texts, and Olive's own RunConfig accepts the workflow."""
    from olive.workflows.run.config import RunConfig

    from engine import paths
    from engine.data import prepare
    from engine.olive import config as olive_config
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    spec = parse_spec(recipes.real_demo_gpu_recipes(str(model), str(paths.DEMO_SAMPLE))["lab"])
    assert spec.dataset.chat_template and spec.passes[0].type == "AutoAWQQuantizer"
    prep = prepare.prepare(spec.dataset)
    texts = [json.loads(x)["text"] for x in (prep.dir / "calib" / "train.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in prep.train_path.read_text().splitlines()]
    assert len(texts) == len(train) and all(texts)
    assert train[0]["messages"][-1]["content"] in texts[0]  # the conversation's words, answer included
    cfg = olive_config.build(spec, output_dir=tmp_path / "o", train_path=prep.train_path)
    awq = next(p for p in cfg["passes"].values() if p["type"] == "AutoAWQQuantizer")
    assert awq["data_config"] in {d["name"] for d in cfg["data_configs"]}
    RunConfig.parse_file_or_obj(cfg)  # raises as the runner's olive_run did
    # a dataset prepared by a Grove that wrote no calibration text for conversations gets it on the next prepare
    import shutil

    shutil.rmtree(prep.dir / "calib")
    assert (prepare.prepare(spec.dataset).dir / "calib" / "train.jsonl").read_text().splitlines() == \
        [json.dumps({"text": t}, ensure_ascii=False) for t in texts]


def test_p12_packs_exactly_as_autoawq_does():
    """P12 replaces AutoAWQ's column-by-column packing (tens of thousands of tensor operations a layer, each a kernel
    launch on a GPU) with whole-tensor operations: every packed tensor must be AutoAWQ's own, bit for bit."""
    import torch
    from awq.modules.linear.gemm import WQLinear_GEMM
    from awq.quantize.quantizer import AwqQuantizer

    olive_compat._p12_fast_pack()
    fast = WQLinear_GEMM.from_linear
    assert getattr(fast, "_grove_p12", False), "P12 did not apply to this AutoAWQ"
    original = fast.__func__._grove_original
    torch.manual_seed(0)
    for out_f, in_f, group, bias in [(192, 576, 64, False), (256, 512, 128, True), (64, 1536, 32, False)]:
        lin = torch.nn.Linear(in_f, out_f, bias=bias).half()
        lin.weight.data.normal_(0, 0.05)
        lin.weight.data[:, :8] *= 40  # a few large input channels, as activation-aware scaling leaves them
        quant = AwqQuantizer.__new__(AwqQuantizer)
        quant.group_size, quant.zero_point, quant.w_bit = group, True, 4
        w, scales, zeros = quant.pseudo_quantize_tensor(lin.weight.data)
        lin.weight.data = w
        scales, zeros = scales.t().contiguous(), zeros.t().contiguous()  # as AutoAWQ's _apply_quant hands them
        want = original(WQLinear_GEMM, lin, 4, group, False, scales, zeros)
        got = fast(lin, 4, group, scales=scales, zeros=zeros)
        for name in ("qweight", "qzeros", "scales") + (("bias",) if bias else ()):
            a, b = getattr(want, name), getattr(got, name)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (out_f, in_f, group, name)
        # and the packed layer computes what the pseudo-quantized one does (AutoAWQ's own dequantization)
        from awq.utils.packing_utils import dequantize_gemm

        deq = dequantize_gemm(got.qweight, got.qzeros, got.scales, 4, group)
        assert torch.allclose(deq.t().float(), w.float(), atol=2e-3), (out_f, in_f, group)

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

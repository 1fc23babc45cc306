"""Benchmark: AutoAWQ's 4-bit GEMM packing, as AutoAWQ does it and with Grove's P12, on SmolLM2's real weights (CPU).

AutoAWQ 0.2.9's ``WQLinear_GEMM.from_linear`` rounds a layer's weights one input column at a time and packs them one
output column at a time (Python loops of tiny tensor operations; on a GPU each one is a kernel launch). Grove's P12
(``engine/olive/compat.py``, applied whenever Olive's AutoAWQQuantizer runs) does the same arithmetic on whole
tensors. This script writes SmolLM2-135M-Instruct as an AutoAWQ GEMM checkpoint twice, the same process and the same
quantized values, once packed by AutoAWQ's own ``from_linear`` and once by P12 (``bench/_awq.py``), checks that the two
checkpoints are identical tensor for tensor, and prints the times: the packing's share of a layer's AWQ time is what
P12 removes from AutoAWQQuantizer on a GPU too (measured there by ``bench/gpu_awq.py``).

Usage: python bench/bench_awq_pack.py [--group 64] [--reps 1] [--out bench/results/awq_pack.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _awq import make_awq_checkpoint  # bench/ is sys.path[0] when a benchmark runs as a script
from _results import write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", type=int, default=64, help="AWQ group size (SmolLM2's 576-wide layers take no 128)")
    ap.add_argument("--reps", type=int, default=1, help="timed repeats of each packing (the median is reported)")
    ap.add_argument("--out", default=str(REPO / "bench/results/awq_pack.json"))
    a = ap.parse_args()

    import torch
    from safetensors.torch import load_file

    from engine.models import smollm

    src = smollm.ensure_model()
    work = Path(tempfile.mkdtemp(prefix="grove-awq-pack-"))
    times: dict[str, list[float]] = {"autoawq": [], "p12": []}
    try:
        for rep in range(a.reps):
            for name, fast in (("autoawq", False), ("p12", True)):
                t0 = time.perf_counter()
                make_awq_checkpoint(src, work / name, group=a.group, fast_pack=fast)
                times[name].append(time.perf_counter() - t0)
                print(f"rep {rep + 1}: {name} {times[name][-1]:.1f} s", flush=True)
        want, got = (load_file(str(work / n / "model.safetensors")) for n in ("autoawq", "p12"))
        same = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
        packed = sum(1 for k in want if k.endswith(".qweight"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    ratio = med["autoawq"] / med["p12"]
    print(f"\nSmolLM2-135M-Instruct, AWQ GEMM checkpoint, group {a.group}, {packed} linear layers, median of {a.reps}")
    print("| packing | checkpoint written in | vs AutoAWQ |\n|---|---:|---:|")
    print(f"| AutoAWQ's from_linear | {med['autoawq']:.1f} s | 1.00x |")
    print(f"| Grove's P12 | {med['p12']:.1f} s | {ratio:.1f}x faster |")
    print(f"checkpoints identical tensor for tensor: {same}")
    write_json(a.out, {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                   "torch": torch.__version__},
                       "group": a.group, "linear_layers": packed, "reps": a.reps, "times_s": times, "median_s": med,
                       "speedup": ratio, "identical": same})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

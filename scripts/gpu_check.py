"""Check, on a GPU host, that Grove's GPU set is installed and works (run by scripts/gpu_install.sh; exit 1 on any
failure, with one line per check).

    python3 scripts/gpu_check.py --manifest ~/.grove-gpu/wheels/MANIFEST.tsv --site ~/.grove-gpu/site

Checked: every wheel of the manifest is the distribution Python imports, at its version, from the site folder (not
an older copy on the host); torch sees a CUDA GPU; onnxruntime runs a graph on CUDAExecutionProvider (listing the
provider is not enough: a provider whose libraries fail to load falls back to the CPU with a warning); the
onnxruntime-genai CUDA build imports; Olive imports and Grove's compatibility patches apply; AutoAWQ and
bitsandbytes import.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
results: list[tuple[bool, str, str]] = []


def check(name: str):
    def wrap(fn):
        try:
            detail = fn() or ""
            results.append((True, name, str(detail)))
        except Exception as e:  # noqa: BLE001
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            results.append((False, name, last[:400]))
        return fn

    return wrap


def wheel_dists(manifest: Path) -> dict[str, str]:
    out = {}
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["kind"] in ("wheel", "whole"):
                name, version = row["wheel"].split("-")[:2]
                out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True, type=Path)
    ap.add_argument("--site", required=True, type=Path)
    a = ap.parse_args()
    site = a.site.resolve()
    if str(site) not in [str(Path(p).resolve()) for p in sys.path if p]:
        print(f"FAIL python path    {site} is not on sys.path (source scripts/gpu_env.sh first)")
        return 1

    @check("packages")
    def _packages():
        from importlib import metadata

        bad = []
        wanted = wheel_dists(a.manifest)
        for name, version in sorted(wanted.items()):
            try:
                d = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                bad.append(f"{name} missing")
                continue
            where = Path(str(d.locate_file(""))).resolve()
            if d.version != version or where != site:
                bad.append(f"{name} {d.version} from {where} (want {version} from {site})")
        if bad:
            raise RuntimeError("; ".join(bad))
        return f"{len(wanted)} distributions at their versions from {site}"

    @check("torch CUDA")
    def _torch():
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no CUDA GPU")
        return f"torch {torch.__version__}, {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"

    @check("onnxruntime CUDA provider")
    def _ort():
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        if not Path(ort.__file__).resolve().is_relative_to(site):
            raise RuntimeError(f"onnxruntime {ort.__version__} imported from {ort.__file__}, not from {site}")
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider: {ort.get_available_providers()}")
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
        g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        so = ort.SessionOptions()
        so.log_severity_level = 3
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CUDAExecutionProvider"])
        if s.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"the CUDA provider did not load (session runs on {s.get_providers()}): are the CUDA 13 "
                               f"libraries on LD_LIBRARY_PATH? (source scripts/gpu_env.sh)")
        out = s.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
        if out.tolist() != [0.0, 2.0, 4.0, 6.0]:
            raise RuntimeError(f"wrong result on CUDA: {out}")
        return f"onnxruntime {ort.__version__} ran a graph on CUDAExecutionProvider (onnx {onnx.__version__})"

    @check("onnxruntime-genai CUDA")
    def _genai():
        import onnxruntime_genai as og

        if not Path(og.__file__).resolve().is_relative_to(site):
            raise RuntimeError(f"onnxruntime_genai imported from {og.__file__}, not from {site}")
        cuda = getattr(og, "is_cuda_available", lambda: None)()
        if cuda is False:
            raise RuntimeError(f"onnxruntime-genai {og.__version__} is not the CUDA build")
        return f"onnxruntime-genai {og.__version__} (CUDA: {cuda})"

    @check("Olive + Grove's patches")
    def _olive():
        import olive
        import olive.workflows.run.run  # noqa: F401

        from engine.olive import compat as olive_compat

        applied = olive_compat.apply()
        left = [n for n, (needed, _) in olive_compat.PATCHES.items() if needed()]
        if left:
            raise RuntimeError(f"patches still needed after apply(): {left}")
        return f"olive-ai {olive.__version__}; applied: {', '.join(p.split(' ')[0] for p in applied) or 'none'}"

    @check("AutoAWQ")
    def _awq():
        import awq
        from awq import AutoAWQForCausalLM  # noqa: F401

        return f"autoawq {awq.__version__}"

    @check("bitsandbytes")
    def _bnb():
        import bitsandbytes as bnb
        import torch

        a = torch.randn(64, 64, device="cuda", dtype=torch.float16)
        q, state = bnb.functional.quantize_4bit(a, quant_type="nf4")
        back = bnb.functional.dequantize_4bit(q, state)
        err = ((back - a).norm() / a.norm()).item()
        if not err < 0.2:
            raise RuntimeError(f"nf4 round trip error {err:.3f}")
        return f"bitsandbytes {bnb.__version__}, nf4 round trip on CUDA (error {err:.3f})"

    width = max(len(n) for _, n, _ in results)
    for ok, name, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'} {name:<{width}}  {detail}")
    failed = [n for ok, n, _ in results if not ok]
    if failed:
        print(f"gpu_check: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())

"""AutoAWQ through Olive (with Grove's P9: calibration blocks as asked, knobs exposed): time and quality per setting.

    source scripts/gpu_env.sh && python3 bench/gpu_awq.py --out results/ [--layers 4] [--settings default,b32,b16g10,b16noclip]
    source scripts/gpu_env.sh && python3 bench/gpu_awq.py --out results/ --model smollm --settings default,noclip,b16g10noclip

A Phi-3-mini-geometry model cut to ``--layers`` decoder layers (AWQ works layer by layer, so its time per layer is
that of the full 32-layer model; the full time is extrapolated from two depths: time = a + b x layers), random fp16
weights, Grove's travel sample as calibration data (prepared as Grove prepares it: rendered texts in calib/). Each
setting runs Olive's AutoAWQQuantizer, then Grove's AwqDequantize, and the quantized model's logits on 16 held-out
texts are compared with the fp16 model's: relative error ||q - fp16|| / ||fp16||. Random weights make the error a
measure of how closely the 4-bit weights reproduce the layer, not of task quality. ``--model smollm`` quantizes
SmolLM2-135M-Instruct's real weights instead (all 30 layers, group 64: its 576-wide layers take no 128) and adds the
held-out texts' loss (mean token NLL) of the fp16 model and of each setting's: the quality side of each setting.
Writes OUT/gpu_awq.json (OUT/gpu_awq_smollm.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "default": {},  # AutoAWQ's: 128 blocks asked (P9 gives all the data holds if fewer), grid 20, clip on
    "b32": {"max_calib_samples": 32},
    "b16": {"max_calib_samples": 16},
    "b16g10": {"max_calib_samples": 16, "n_grid": 10},
    "b16noclip": {"max_calib_samples": 16, "apply_clip": False},
    "noclip": {"apply_clip": False},  # AutoAWQ's clip search: ~10 elementwise passes over each non-q/k weight
    "b16g10noclip": {"max_calib_samples": 16, "n_grid": 10, "apply_clip": False},
}


def make_model(root: Path, layers: int) -> str:
    from gpu_lab import build_model  # bench/ is sys.path[0] when a benchmark runs as a script

    return build_model(root, layers)["path"]


def calib_folder(root: Path) -> tuple[Path, list[str]]:
    from engine.models import tiny as demo

    rows = demo.read_sample()
    texts = [demo.PHI3_TEXT_TEMPLATE.format(**r) for r in rows]
    train, held = texts[:360], texts[360:376]
    d = root / "calib"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "train.jsonl", "w") as f:
        for t in train:
            f.write(json.dumps({"text": t}) + "\n")
    return d, held


def logits(model_dir: str, texts: list[str]) -> tuple[list, float]:
    """The fp16 model's logits on each text, and the texts' mean token NLL."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16).cuda().eval()
    outs, nll, n = [], 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t)[:256]], device="cuda")
            lg = m(ids).logits.float()
            nll += float(torch.nn.functional.cross_entropy(lg[0, :-1], ids[0, 1:], reduction="sum"))
            n += ids.shape[1] - 1
            outs.append(lg.cpu())
    del m
    torch.cuda.empty_cache()
    return outs, nll / max(n, 1)


def run_setting(model_dir: str, calib: Path, knobs: dict, work: Path, group: int = 128) -> dict:
    import olive.workflows.run.run  # noqa: F401

    from engine.olive import compat as olive_compat

    olive_compat.apply()
    from olive.workflows import run

    out = work / "out"
    shutil.rmtree(work, ignore_errors=True)
    cfg = {
        "input_model": {"type": "HfModel", "model_path": model_dir},
        "systems": {"s": {"type": "LocalSystem", "accelerators": [{"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}]}},
        "data_configs": [{"name": "calib", "type": "HuggingfaceContainer",
                          "load_dataset_config": {"data_name": str(calib), "split": "train"},
                          "pre_process_data_config": {"input_cols": "text"}}],
        "passes": {"awq": {"type": "AutoAWQQuantizer", "bits": 4, "q_group_size": group, "data_config": "calib", **knobs},
                   "deq": {"type": "AwqDequantize", "torch_dtype": "float16"}},
        "host": "s", "target": "s", "cache_dir": str(work / "cache"), "output_dir": str(out),
        "evaluate_input_model": False, "log_severity_level": 1,
    }
    t0 = time.perf_counter()
    run(cfg)
    wall = time.perf_counter() - t0
    stages = {}
    for f in out.glob("run_history*.txt"):
        for line in f.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and cells[2] and cells[3].replace(".", "", 1).isdigit():
                stages[cells[2]] = float(cells[3])
    model_out = next((p.parent for p in out.rglob("config.json")), out)
    return {"wall_s": wall, "stage_s": stages, "dir": str(model_out)}


def profiled(fn, path: Path, label: str):
    """fn() under cProfile; appends its 45 most expensive functions (cumulative time) to ``path``. The GPU work is
    asynchronous, so its time lands on the next synchronising call (AutoAWQ's ``.item()``/``.cpu()`` after each grid
    point and clip batch): the split between AutoAWQ's steps is right, the split inside one step is not."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        return fn()
    finally:
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
        with open(path, "a") as f:
            f.write(f"==== {label}\n{buf.getvalue()}\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", default="2,4", help="depths to time (two give the per-layer slope)")
    ap.add_argument("--settings", default="default,b32,b16g10,b16noclip")
    ap.add_argument("--work", default="")
    ap.add_argument("--profile", action="store_true",
                    help="run each setting under cProfile; write OUT/gpu_awq_profile.txt (where AutoAWQ's time goes)")
    ap.add_argument("--model", choices=["phi3", "smollm"], default="phi3",
                    help="phi3: random weights at Phi-3-mini geometry (time); smollm: SmolLM2's real weights (quality)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or Path(os.environ.get("GROVE_HOME", str(Path.home() / "grove"))) / "bench-awq")
    work.mkdir(parents=True, exist_ok=True)
    calib, held = calib_folder(work)
    smollm = a.model == "smollm"
    res: dict = {"model": a.model, "settings": {}, "layers": [30] if smollm else [int(x) for x in a.layers.split(",")]}

    def save() -> None:
        (out / ("gpu_awq_smollm.json" if smollm else "gpu_awq.json")).write_text(json.dumps(res, indent=1, default=str))

    for layers in res["layers"]:
        if smollm:
            from engine.models import smollm as sm

            model_dir = str(sm.ensure_model())
        else:
            model_dir = make_model(work, layers)
        ref = None
        if layers == max(res["layers"]):
            ref, res["fp16_nll"] = logits(model_dir, held)
        for name in a.settings.split(","):
            key = f"{name}@{layers}"
            try:
                job = partial(run_setting, model_dir, calib, SETTINGS[name], work / "run", group=64 if smollm else 128)
                r = profiled(job, out / "gpu_awq_profile.txt", key) if a.profile else job()
                if ref is not None:
                    import torch

                    q, r["nll"] = logits(r["dir"], held)
                    num = sum(float(torch.linalg.norm(x - y)) ** 2 for x, y in zip(q, ref, strict=True))
                    den = sum(float(torch.linalg.norm(y)) ** 2 for y in ref)
                    r["rel_logit_error"] = (num / den) ** 0.5
                res["settings"][key] = {"knobs": SETTINGS[name], **r}
            except Exception:
                res["settings"][key] = {"knobs": SETTINGS[name], "error": traceback.format_exc()[-3000:]}
            print(key, json.dumps({k: v for k, v in res["settings"][key].items() if k != "dir"})[:600], flush=True)
            save()
    lo, hi = min(res["layers"]), max(res["layers"])
    for name in a.settings.split(","):
        t = {n: res["settings"].get(f"{name}@{n}", {}).get("stage_s", {}).get("autoawqquantizer") for n in (lo, hi)}
        if all(t.values()) and hi > lo:
            slope = (t[hi] - t[lo]) / (hi - lo)
            res.setdefault("extrapolated_32_layers_s", {})[name] = t[lo] + slope * (32 - lo)
    save()
    print(json.dumps({"extrapolated_32_layers_s": res.get("extrapolated_32_layers_s"), "fp16_nll": res.get("fp16_nll"),
                      "settings": {k: {x: v.get(x) for x in ("stage_s", "rel_logit_error", "nll")}
                                   for k, v in res["settings"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

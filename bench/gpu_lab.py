"""The lab's workflow at Phi-3-mini geometry on a real GPU, through Grove's own engine (worker -> runner -> registry).

Run on a CUDA machine from the repository root (see docs/gpu.md for the install):
    python bench/gpu_lab.py --out results/ [--steps 100] [--skip-awq]

1. builds a Phi-3-mini-geometry model (``Phi3Config()`` defaults, 3.8 B parameters) with random fp16 weights and a
   32,064-token tokenizer (Grove's BPE trained on the travel sample, padded with unused tokens);
2. measures transformers ``generate`` on it (fp16, batch 1, prompt 128, 256 new tokens): what a user would run;
3. submits the lab recipe through ``engine.service`` with a worker on GPU 0: AWQ -> LoRA -> ONNX int4 + adapter;
   when AWQ cannot run, records why and runs the order that works (LoRA -> ONNX int4 + adapter);
4. evaluates the result with ``engine.evaluate`` on CUDA (same prompt/generation lengths) with the adapter on/off;
5. writes stage times, sizes, decode speed, the bandwidth bound and every error to ``OUT/gpu_lab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_model(root: Path) -> dict:
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from engine import demo

    out = root / "phi3-mini-random"
    if (out / "config.json").exists():
        return {"path": str(out), "built_s": 0.0}
    t0 = time.perf_counter()
    tok = demo._train_tokenizer(demo.read_sample())
    cfg = Phi3Config()
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
    from engine import service
    from engine.registry import Registry
    from engine.spec import parse_spec

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
    cands = reg.candidates(r["id"])
    from engine.worker import log_tail

    return {"run": r["id"], "status": r["status"], "wall_s": wall, "stage_s": stage_s, "error_type": r["error_type"],
            "error": r["error_message"], "candidates": [{k: c[k] for k in ("pass_chain", "path", "size_bytes", "is_output")} for c in cands],
            "log_tail": log_tail(Path(r["log_path"]), 60) if r["status"] != "succeeded" else ""}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--skip-awq", action="store_true")
    ap.add_argument("--skip-hf", action="store_true", help="skip the transformers generate baseline")
    ap.add_argument("--skip-no-awq", action="store_true", help="skip the LoRA -> int4 run (the order that works without AWQ)")
    ap.add_argument("--timeout", type=float, default=420)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ.setdefault("GROVE_HOME", "/root/grove"))
    os.environ.setdefault("GROVE_GPUS", "0")
    result: dict = {"gpu": os.popen("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader").read().strip()}

    def save() -> None:
        (out / "gpu_lab.json").write_text(json.dumps(result, indent=2, default=str))

    from engine import recipes
    from engine.registry import Registry
    from engine.worker import Worker

    model = build_model(home)
    result["model"] = model
    save()
    if not a.skip_hf:
        result["hf_generate"] = hf_generate(model["path"], 128, 256, 3)
        save()
    w = Worker(Registry())
    w.start()
    stop = threading.Event()
    threading.Thread(target=lambda: [w.tick() or time.sleep(0.3) for _ in iter(lambda: stop.is_set(), True)], daemon=True).start()
    sample = str(REPO / "engine" / "assets" / "travel_sample.jsonl")
    lab = recipes.lab_recipe(model["path"], sample, device="gpu", max_steps=a.steps, max_seq_len=512, lora_r=64)
    lab["passes"][1]["params"].update({"alpha": 64, "training_args": {"max_steps": a.steps, "per_device_train_batch_size": 1,
                                       "learning_rate": 2e-4, "logging_steps": 10, "gradient_checkpointing": False}})
    if not a.skip_awq:
        result["lab_order_awq_first"] = run_spec(lab, a.timeout)
        save()
    r = result.get("lab_order_awq_first", {})
    if not a.skip_no_awq:
        no_awq = {**lab, "name": "LoRA -> int4 ONNX + adapter (CUDA)", "passes": lab["passes"][1:]}
        result["lora_then_int4"] = r = run_spec(no_awq, a.timeout)
        save()
    stop.set()
    final = next((c for c in r.get("candidates", []) if c["is_output"]), None)
    if final:
        from engine.evaluate import EvalConfig, evaluate

        data_dir = next((home / "data").iterdir())
        cfg = EvalConfig(eval_path=str(data_dir / "eval.jsonl"), text_template=lab["dataset"]["text_template"], max_samples=10,
                         answer_tokens=16, prompt_length=128, generation_length=256, repeats=3, device="gpu",
                         execution_provider="CUDAExecutionProvider")
        for label, ad in (("adapter_on", "adapter_weights"), ("adapter_off", None)):
            try:
                ev = evaluate(final["path"], cfg, adapter=ad)
                result[f"genai_{label}"] = {"metrics": ev.metrics, "failed": ev.failed}
            except Exception:
                result[f"genai_{label}"] = {"error": traceback.format_exc()[-3000:]}
            save()
        weights = sum(f.stat().st_size for f in Path(final["path"]).glob("model.onnx*"))
        result["onnx_weights_bytes"] = weights
        result["size_on_disk_bytes"] = sum(f.stat().st_size for f in Path(final["path"]).rglob("*") if f.is_file())
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=1, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the demo recipe on SmolLM2-135M-Instruct (engine/models/smollm.py), stage by stage, every candidate
measured by Grove's evaluator (engine/evaluate/evaluator.py) on the same held-out split.

Two runs through the real engine (service.submit -> worker -> runner -> Olive), the second reusing the first's
LoRA from Olive's cache:
  A: LoRA -> ModelBuilder int4 (LoRA MatMuls kept out of int4) -> ExtractAdapters   (adapter on and off)
  B: LoRA -> MergeAdapterWeights -> ModelBuilder int4                               (Olive's JSON workflow path)
then the evaluator on: the base model (PyTorch), the LoRA (PyTorch + PEFT), A with the adapter on and off, B.
Each evaluation runs in its own interpreter (its peak memory is its own). Prints a table and the Lisbon answers,
writes JSON.

Usage: python bench/bench_smollm_demo.py [--steps 30] [--lr 1e-3] [--r 16] [--targets all|qkvo|qv] [--seq 128]
       [--batch 8] [--hf-eval 10] [--onnx-eval 40] [--out bench/results/smollm_demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = {
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qv": ["q_proj", "v_proj"],
}
QUESTIONS = ["What should I see in Lisbon?", "How do I get around Tokyo?"]


def recipe(model: str, a: argparse.Namespace, merged: bool) -> dict[str, Any]:
    lora = {
        "type": "LoRA",
        "params": {
            "r": a.r, "alpha": 2 * a.r, "lora_dropout": 0.05, "target_modules": TARGETS[a.targets],
            "torch_dtype": "float32",
            "training_args": {
                "max_steps": a.steps, "per_device_train_batch_size": a.batch, "learning_rate": a.lr,
                "logging_steps": 5, "gradient_checkpointing": False, "seed": 0,
            },
        },
    }  # fmt: skip
    mb = {
        "type": "ModelBuilder",
        "params": {"precision": "int4", "int4_accuracy_level": a.accuracy_level, "int4_block_size": a.block_size},
    }
    passes = [lora, {"type": "MergeAdapterWeights"}, mb] if merged else [lora, mb, {"type": "ExtractAdapters"}]
    return {
        "name": f"smollm demo: {'merged' if merged else 'adapter'} ({a.targets} r{a.r} {a.steps} steps lr {a.lr})",
        "model": {"name": model},
        "dataset": {
            "path": str(REPO / "engine/assets/travel_sample.jsonl"),
            "chat_template": True,
            "eval_split": 0.1,
            "max_seq_len": a.seq,
        },
        "passes": passes,
        "target": {"device": "cpu", "execution_provider": "CPUExecutionProvider", "precision": "int4"},
    }


def run_spec(spec_dict: dict[str, Any]) -> dict[str, Any]:
    from engine.runs import submit as service
    from engine.runs.executors import LocalExecutor
    from engine.runs.registry import Registry
    from engine.runs.worker import Slots, Worker
    from engine.spec.schema import parse_spec

    reg = Registry()
    run = service.submit(parse_spec(spec_dict))
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=1, gpus=[]))
    w.start()
    t0 = time.perf_counter()
    while reg.get_run(run["id"])["status"] not in ("succeeded", "failed", "cancelled"):
        w.tick()
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    done = reg.get_run(run["id"])
    if done["status"] != "succeeded":
        raise SystemExit(f"run {run['id']} {done['status']}: {done['error_message']}\n{done['log_path']}")
    passes = {e["data"].get("name"): e["data"].get("seconds") for e in reg.events(run["id"], kinds=["pass_finished"])}
    losses = [e["data"]["loss"] for e in reg.events(run["id"], kinds=["train_step"]) if "loss" in e["data"]]
    cands = {" > ".join(c["pass_chain"]): c for c in reg.candidates(run["id"])}
    return {
        "id": run["id"],
        "wall_s": round(wall, 1),
        "passes_s": passes,
        "train_loss": losses,
        "candidates": cands,
        "data_dir": done.get("data_dir"),
    }


def lisbon(folder: str, adapter: str | None) -> list[str]:
    import onnxruntime_genai as og

    model = og.Model(folder)
    tok = og.Tokenizer(model)
    ads = None
    if adapter:
        ads = og.Adapters(model)
        ads.load(str(Path(folder) / f"{adapter}.onnx_adapter"), adapter)
    out = []
    for q in QUESTIONS:
        p = og.GeneratorParams(model)
        p.set_search_options(max_length=256, do_sample=False)
        g = og.Generator(model, p)
        if ads:
            g.set_active_adapter(ads, adapter)
        prompt = tok.apply_chat_template(json.dumps([{"role": "user", "content": q}]), add_generation_prompt=True)
        g.append_tokens(tok.encode(prompt))
        ids: list[int] = []
        while not g.is_done() and len(ids) < 96:
            g.generate_next_token()
            ids.append(int(g.get_next_tokens()[0]))
        out.append(tok.decode(ids))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--targets", choices=sorted(TARGETS), default="all")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accuracy-level", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--hf-eval", type=int, default=10, help="held-out examples for PyTorch candidates")
    ap.add_argument("--onnx-eval", type=int, default=40, help="held-out examples for ONNX candidates")
    ap.add_argument("--skip-merged", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench/results/smollm_demo.json"))
    a = ap.parse_args()

    from engine.evaluate.evaluator import evaluate_in_subprocess
    from engine.models import smollm, tokens
    from engine.spec.evaluation import EvalConfig

    t0 = time.perf_counter()
    model = str(smollm.ensure_model())
    stages: dict[str, float] = {"model_ready_s": round(time.perf_counter() - t0, 1)}
    runs = {"adapter": run_spec(recipe(model, a, merged=False))}
    if not a.skip_merged:
        runs["merged"] = run_spec(recipe(model, a, merged=True))
    for k, r in runs.items():
        stages[f"run_{k}_s"] = r["wall_s"]
    A = runs["adapter"]["candidates"]
    lora = A["lora"]
    onnx_a = A["lora > modelbuilder > extractadapters"]["path"]
    todo = [
        ("base (PyTorch)", model, None, a.hf_eval),
        ("LoRA (PyTorch+PEFT)", lora["path"], lora.get("adapter_path"), a.hf_eval),
        ("int4 + adapter", onnx_a, "adapter_weights", a.onnx_eval),
        ("int4, adapter off", onnx_a, None, a.onnx_eval),
    ]
    if "merged" in runs:
        todo.append(
            (
                "merged -> int4",
                runs["merged"]["candidates"]["lora > mergeadapterweights > modelbuilder"]["path"],
                None,
                a.onnx_eval,
            )
        )
    checks = {name: tokens.check_tokens(path, reference=model).message() for name, path, _, _ in todo if "int4" in name}
    data_dir = Path(runs["adapter"]["data_dir"])
    results = []
    for name, path, adapter, n in todo:
        cfg = EvalConfig(
            eval_path=str(data_dir / "eval.jsonl"),
            chat_template=True,
            data_key=data_dir.name,
            max_samples=n,
            generation_length=64,
            repeats=2,
        )
        t = time.perf_counter()
        r = evaluate_in_subprocess(path, cfg, adapter=adapter)
        results.append(
            {
                "candidate": name,
                "eval_rows": n,
                "eval_s": round(time.perf_counter() - t, 1),
                "metrics": {k: round(v, 4) for k, v in r.metrics.items()},
                "failed": r.failed,
                "sample": r.samples[0] if r.samples else None,
            }
        )
    answers = {"int4 + adapter": lisbon(onnx_a, "adapter_weights"), "int4, adapter off": lisbon(onnx_a, None)}
    if "merged" in runs:
        answers["merged -> int4"] = lisbon(todo[-1][1], None)
    stages["total_s"] = round(time.perf_counter() - t0, 1)

    print(f"\nload {os.getloadavg()}, {os.cpu_count()} cores; recipe {vars(a)}")
    print(f"stages: {stages}")
    for k, r in runs.items():
        print(f"run {k}: passes {r['passes_s']}; train loss {r['train_loss'][:1]} -> {r['train_loss'][-1:]}")
    print(f"{'candidate':24} {'rows':>4} {'loss':>7} {'rougeL':>7} {'tok/s':>7} {'ttft ms':>8} {'MB':>7} {'eval s':>7}")
    for r in results:
        m = r["metrics"]
        print(
            f"{r['candidate']:24} {r['eval_rows']:4d} {m.get('loss', float('nan')):7.3f} {m.get('rouge_l', float('nan')):7.3f} "
            f"{m.get('decode_tps', float('nan')):7.1f} {m.get('ttft_ms', float('nan')):8.1f} {m.get('size_mb', float('nan')):7.1f} {r['eval_s']:7.1f}"
        )
    for k, v in checks.items():
        print(f"tokens {k}: {v}")
    for k, v in answers.items():
        for q, ans in zip(QUESTIONS, v, strict=True):
            print(f"[{k}] {q}\n    {ans!r}")
    write_json(
        a.out,
        {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_end": os.getloadavg()},
            "recipe": vars(a),
            "stages": stages,
            "runs": {k: {kk: vv for kk, vv in r.items() if kk != "candidates"} for k, r in runs.items()},
            "results": results,
            "token_checks": checks,
            "answers": answers,
        },
        default=str,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

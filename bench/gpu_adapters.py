"""LoRA adapter decode cost across onnxruntime-genai versions, on one CUDA GPU, in one run (issue 22).

On a CUDA host with Grove's GPU set installed (docs/gpu.md), from the repository root:

    source scripts/gpu_env.sh && python3 bench/gpu_adapters.py --out results/ --genai-wheels DIR

``DIR`` holds ``onnxruntime_genai_cuda-*.whl`` files (any versions built for the host's CUDA and Python; they must
run with the onnxruntime installed, e.g. 0.15.2, 0.16.0, 0.17.1, 0.18.0 with onnxruntime-gpu 1.31.1). Without
``--genai-wheels`` only the installed onnxruntime-genai is timed.

What it does, every figure from this one run on GPU 0 (so every ratio's two sides come from the same run):
1. the bandwidth bound: the GPU's device-to-device copy bandwidth (torch; bytes read + written) over the bytes of
   int4 weights the stock model reads per decoded token;
2. a Phi-3-mini-geometry model (``Phi3Config()`` defaults, 3.8 B parameters, random fp16 weights) and a random LoRA
   adapter on it (r 64, ``qkv_proj`` + ``o_proj``), as bench/gpu_decode.py builds them;
3. int4 ONNX builds, once, with the installed onnxruntime-genai's builder (the GPU set's): ``stock``
   (``python -m onnxruntime_genai.models.builder -p int4 -e cuda``), ``stock_b64`` (the same with Grove's CUDA int4
   block size, ``--extra_options int4_block_size=64``), ``grove_adapter`` (Grove's ModelBuilder config
   for CUDA -> ExtractAdapters, through Olive), ``grove_merged`` (MergeAdapterWeights -> the same ModelBuilder);
   with ``--own-builds``, also ``stock`` and ``grove_adapter`` with each other version's own builder (its graph);
4. installs each wheel into its own folder (``pip install --no-deps --target``) and times every build with each
   version in its own process (that folder first on ``PYTHONPATH``; the process reports the version and file it
   loaded): batch 1, a 128-token prompt, 256 new tokens, greedy, one warm-up then ``--reps`` timed generations,
   CUDA graphs on (Grove's CUDA default); the adapter build with its adapter active and with none;
5. reads in each version's library whether ``Adapters`` hands onnxruntime a device allocator when it loads an adapter
   (genai <= 0.15: ``Adapter(const char*, Ort::Allocator*)``, the weights copied to the GPU once) or not (0.16 and
   later: ``Adapter(const char*)``, the weights stay in host memory and are copied to the GPU at every step);
6. writes OUT/gpu_adapters.json (everything, errors included) and OUT/gpu_adapters.md, and prints the table.

Targets (issue 22), each a ratio to the best stock row of the run: adapter active >= 0.8x, no adapter >= 0.95x;
the best row >= 40 % of the bandwidth bound (the moonshot).

``--model tiny --ep cpu`` runs the whole pipeline on a 2-layer model on the CPU (a check of the script, no figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import gpu_decode as dec  # noqa: E402  (bench/gpu_decode.py: model, adapter, builds, timing, bandwidth)

KINDS = {"stock": "stock", "stock_b64": "stock", "grove_adapter": "grove_adapter", "grove_merged": "grove_merged"}
STOCK_EXTRA = {"stock_b64": "int4_block_size=64"}  # the stock builder at Grove's CUDA block size (a fair stock row)
DEVICE_ALLOC_SYMBOL = b"_ZN10Generators7AdapterC1EPKcPN3Ort9AllocatorE"  # Adapter(const char*, Ort::Allocator*)
HOST_ONLY_SYMBOL = b"_ZN10Generators7AdapterC1EPKc\x00"  # Adapter(const char*)
HOST_ONLY_SYMBOL_COLD = b"_ZN10Generators7AdapterC2EPKc.cold"


# -- runtimes -------------------------------------------------------------------------------------------------------
def wheel_version(whl: Path) -> str:
    return whl.name.split("-")[1]


def install_runtimes(wheels_dir: str, work: Path) -> dict[str, dict]:
    """Each onnxruntime-genai wheel into its own --target folder; returns version -> {path, ...}."""
    out: dict[str, dict] = {}
    for whl in sorted(Path(wheels_dir).glob("onnxruntime_genai*.whl"), key=lambda p: [int(x) if x.isdigit() else x
                                                                                      for x in wheel_version(p).split(".")]):
        v = wheel_version(whl)
        target = work / "runtimes" / v
        r: dict[str, Any] = {"version": v, "wheel": whl.name, "path": str(target)}
        if not (target / "onnxruntime_genai").is_dir():
            shutil.rmtree(target, ignore_errors=True)
            p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                                "--disable-pip-version-check", "--target", str(target), str(whl)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                r["error"] = f"pip install failed: {(p.stderr or p.stdout)[-1500:]}"
        out[v] = r
    return out


def adapter_placement(genai_dir: Path) -> str:
    """'device' when this onnxruntime-genai loads adapters with the model's device allocator, 'host' when without."""
    libs = sorted(genai_dir.glob("libonnxruntime-genai*.so")) + sorted(genai_dir.glob("onnxruntime_genai*.so"))
    for lib in libs:
        data = lib.read_bytes()
        if DEVICE_ALLOC_SYMBOL in data:
            return "device"
        if HOST_ONLY_SYMBOL in data or HOST_ONLY_SYMBOL_COLD in data:
            return "host"
    return "unknown"


def runtime_env(path: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if path:
        env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def probe_runtime(path: str | None) -> dict:
    """The onnxruntime-genai and onnxruntime a process with this folder first on the path really imports."""
    code = ("import json, onnxruntime as o, onnxruntime_genai as g; "
            "print(json.dumps({'genai': g.__version__, 'genai_file': g.__file__, 'onnxruntime': o.__version__, "
            "'onnxruntime_file': o.__file__, 'providers': o.get_available_providers()}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=runtime_env(path), timeout=300)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-1500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- builds ---------------------------------------------------------------------------------------------------------
def start_build(name: str, kind: str, model_dir: str, adapter_dir: str, ep: str, work: Path,
                genai_path: str | None) -> tuple[subprocess.Popen, Path]:
    """One build in a subprocess; ``genai_path`` first on PYTHONPATH selects the builder's version."""
    bdir = work / "builds" / name
    shutil.rmtree(bdir, ignore_errors=True)
    (bdir / "hf-cache").mkdir(parents=True)
    env = {**runtime_env(genai_path), "HF_HUB_CACHE": str(bdir / "hf-cache")}
    if kind == "stock":
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", model_dir, "-o", str(bdir / "out"),
               "-p", "int4", "-e", ep, "-c", str(bdir / "hf-cache")]
        base = name.split("@")[0]
        if base in STOCK_EXTRA:
            cmd += ["--extra_options", STOCK_EXTRA[base]]
    else:
        cfg = dec.olive_workflow(kind, model_dir, adapter_dir, ep, bdir)
        (bdir / "olive.json").write_text(json.dumps(cfg, indent=1))
        cmd = [sys.executable, str(REPO / "bench" / "gpu_decode.py"), "_olive", str(bdir / "olive.json")]
    (bdir / "cmd.txt").write_text(" ".join(cmd))
    log = open(bdir / "build.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(bdir)), bdir


def run_builds(plan: list[tuple[str, str, str | None]], model_dir: str, adapter_dir: str, ep: str, work: Path,
               parallel: int) -> dict[str, dict]:
    """``plan``: (name, kind, genai folder or None) -> results by name (as bench/gpu_decode.py records them)."""
    results: dict[str, dict] = {}
    pending = list(plan)
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            name, kind, path = pending.pop(0)
            done = work / "builds" / name / "done.json"
            if done.exists():
                results[name] = json.loads(done.read_text())
                continue
            p, bdir = start_build(name, kind, model_dir, adapter_dir, ep, work, path)
            running[name] = (p, bdir, time.perf_counter())
            print(f"build {name}: started", flush=True)
        time.sleep(1)
        for name, (p, bdir, t0) in list(running.items()):
            if p.poll() is None:
                continue
            del running[name]
            out = bdir / "out"
            r: dict[str, Any] = {"name": name, "wall_s": time.perf_counter() - t0, "rc": p.returncode, "dir": str(out)}
            if p.returncode != 0 or not (out / "model.onnx").exists():
                r["error"] = (bdir / "build.log").read_text()[-4000:]
                print(f"build {name}: FAILED rc={p.returncode}", flush=True)
            else:
                files = [f for f in out.rglob("*") if f.is_file()]
                r["size_bytes"] = sum(f.stat().st_size for f in files)
                r["adapter_bytes"] = sum(f.stat().st_size for f in out.glob("*.onnx_adapter"))
                r["stage_s"] = dec.olive_stage_seconds(bdir)
                r["graph"] = dec.graph_stats(out)
                (bdir / "done.json").write_text(json.dumps(r, indent=1))
                print(f"build {name}: {r['wall_s']:.1f} s, {r['size_bytes'] / 1e9:.2f} GB", flush=True)
            shutil.rmtree(bdir / "hf-cache", ignore_errors=True)
            shutil.rmtree(bdir / "olive-cache", ignore_errors=True)
            results[name] = r
    return results


# -- timing ---------------------------------------------------------------------------------------------------------
def measure_runtime(version: str, path: str | None, builds: dict[str, dict], work: Path,
                    a: argparse.Namespace, own_only: bool = False) -> list[dict]:
    """Every build this version is to time (``own_only``: only those by its own builder), in one process with this
    version's folder first on the path."""
    cuda = a.ep == "cuda"
    graph = True if cuda else None
    variants = []

    def add(build: str, label: str, adapter: bool) -> None:
        b = builds.get(build)
        if not b or "error" in b:
            return
        d = dec.variant_dir(Path(b["dir"]), work / "variants" / version / label, graph, {})
        variants.append({"label": label, "build": build, "dir": str(d), "graph": graph, "adapter": adapter,
                         "session": {}, "profile_tokens": 0})

    if not own_only:
        add("stock", "stock", False)
        add("stock_b64", "stock, block 64", False)
        add("grove_adapter", "adapter active", True)
        add("grove_adapter", "adapter build, no adapter", False)
        add("grove_merged", "merged", False)
    if f"stock@{version}" in builds:
        add(f"stock@{version}", "stock, own builder", False)
    if f"grove_adapter@{version}" in builds:
        add(f"grove_adapter@{version}", "adapter active, own builder", True)
        add(f"grove_adapter@{version}", "adapter build, own builder, no adapter", False)
    spec = {"prompt": a.prompt, "new": a.new, "reps": a.reps, "variants": variants}
    sp = work / "variants" / version / ("spec-own.json" if own_only else "spec.json")
    sp.parent.mkdir(parents=True, exist_ok=True)
    sp.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_decode.py"), "_measure", str(sp)],
                           capture_output=True, text=True, timeout=a.measure_timeout, env=runtime_env(path))
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = f"timed out after {a.measure_timeout} s", -1
    rows = [json.loads(line[len("MEASURED "):]) for line in out.splitlines() if line.startswith("MEASURED ")]
    by_label = {v["label"]: v for v in variants}
    for row in rows:
        row["runtime"], row["build"] = version, by_label[row["label"]]["build"]
    seen = {r["label"] for r in rows}
    for v in variants:
        if v["label"] not in seen:
            rows.append({"runtime": version, "build": v["build"], "label": v["label"], "adapter": v["adapter"],
                         "graph": v["graph"], "error": f"measurement process rc={rc}: {(err or out)[-2500:]}"})
    for row in rows:
        tps = f"{row['decode_tps']:.1f} tok/s" if "decode_tps" in row else "ERROR " + row.get("error", "")[-300:]
        print(f"  genai {version} | {row['label']}: {tps}", flush=True)
    print(f"measured genai {version} in {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


# -- report ---------------------------------------------------------------------------------------------------------
def ratios(res: dict) -> dict:
    rows = [r for r in res.get("decode", []) if "decode_tps" in r]
    stock = [r for r in rows if r["build"].startswith("stock")]
    best = max(stock, key=lambda r: r["decode_tps"]) if stock else None
    bound = res.get("bound_tps")
    for r in rows:
        own = next((s for s in stock if s["runtime"] == r["runtime"] and s["build"] == "stock"), None)
        r["vs_best_stock"] = r["decode_tps"] / best["decode_tps"] if best else None
        r["vs_own_stock"] = r["decode_tps"] / own["decode_tps"] if own else None
        r["pct_of_bound"] = 100 * r["decode_tps"] / bound if bound else None
    out: dict[str, Any] = {"best_stock": {k: best[k] for k in ("runtime", "label", "decode_tps")} if best else None}
    if best:
        per: dict[str, dict] = {}
        for r in rows:
            t = per.setdefault(r["runtime"], {})
            if r["label"] == "adapter active":
                t["adapter_active"] = r["vs_best_stock"]
            elif r["label"] == "adapter build, no adapter":
                t["no_adapter"] = r["vs_best_stock"]
            elif r["label"] == "merged":
                t["merged"] = r["vs_best_stock"]
        for t in per.values():
            t["adapter_active_met"] = t.get("adapter_active", 0) >= 0.8
            t["no_adapter_met"] = t.get("no_adapter", 0) >= 0.95
        out["targets_by_runtime"] = per
    if bound and rows:
        top = max(rows, key=lambda r: r["decode_tps"])
        out["moonshot"] = {"row": f"genai {top['runtime']} {top['label']}", "pct_of_bound": 100 * top["decode_tps"] / bound,
                           "met": top["decode_tps"] >= 0.4 * bound}
    return out


def table(res: dict) -> str:
    rt = res.get("runtimes", {})
    sm = res.get("summary", {})
    bw = res.get("bandwidth", {})
    lines = [f"GPU: {res.get('gpu')}; onnxruntime {res.get('onnxruntime')}; builds by onnxruntime-genai "
             f"{res.get('builder_genai')}; prompt {res['args']['prompt']}, {res['args']['new']} new tokens, batch 1, "
             f"CUDA graphs {'on' if res['args']['ep'] == 'cuda' else '-'}, median of {res['args']['reps']} runs; "
             f"{res.get('started')}",
             f"copy bandwidth {bw.get('tb_per_s', 0):.2f} TB/s; stock int4 weights read per token "
             f"{res.get('stock_bytes_per_token', 0) / 1e9:.3f} GB; bandwidth bound {res.get('bound_tps') or 0:.0f} tok/s",
             "adapter weights (read in each version's library): " + ", ".join(
                 f"{v} {r.get('adapter_weights', '?')}" for v, r in rt.items()),
             "",
             "| genai | build | decode tok/s | p50 ms/token | TTFT ms | vs best stock | vs same version's stock | % of bound |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in res.get("decode", []):
        if "decode_tps" not in r:
            lines.append(f"| {r['runtime']} | {r['label']} | error | | | | | |")
            continue
        f = lambda x, fmt: "" if x is None else fmt.format(x)  # noqa: E731
        lines.append(f"| {r['runtime']} | {r['label']} | {r['decode_tps']:.1f} | {r['p50_ms']:.2f} | {r['ttft_ms']:.1f} | "
                     f"{f(r.get('vs_best_stock'), '{:.2f}x')} | {f(r.get('vs_own_stock'), '{:.2f}x')} | "
                     f"{f(r.get('pct_of_bound'), '{:.0f} %')} |")
    if sm.get("best_stock"):
        b = sm["best_stock"]
        lines += ["", f"best stock: genai {b['runtime']} {b['label']}, {b['decode_tps']:.1f} tok/s"]
        for v, t in sm.get("targets_by_runtime", {}).items():
            lines.append(f"genai {v}: adapter active {t.get('adapter_active', 0):.2f}x (target 0.8x: "
                         f"{'met' if t['adapter_active_met'] else 'missed'}), no adapter {t.get('no_adapter', 0):.2f}x "
                         f"(target 0.95x: {'met' if t['no_adapter_met'] else 'missed'}), merged {t.get('merged', 0):.2f}x")
    if sm.get("moonshot"):
        m = sm["moonshot"]
        lines.append(f"moonshot: best row ({m['row']}) {m['pct_of_bound']:.0f} % of the bound (target 40 %: "
                     f"{'met' if m['met'] else 'missed'})")
    lines += ["", "| build | builder | wall s | alone | size GB | adapter MB | MatMulNBits / MatMul | graph inputs |",
              "|---|---|---:|---|---:|---:|---|---:|"]
    for n, b in res.get("builds", {}).items():
        if "error" in b:
            lines.append(f"| {n} | | failed: {b['error'][-200:]!r} | | | | | |")
            continue
        g = b["graph"]
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in (b.get("stage_s") or {}).items())
        lines.append(f"| {n} | {b.get('builder', '')} | {b['wall_s']:.1f}{f' ({stages})' if stages else ''} | "
                     f"{'yes' if b.get('alone') else 'no'} | {b['size_bytes'] / 1e9:.2f} | "
                     f"{b.get('adapter_bytes', 0) / 1e6:.1f} | {g['MatMulNBits']} / {g['MatMul']} | {g['inputs']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Figures and how they were measured: docs/benchmarks.md, 'LoRA adapters across "
                                        "onnxruntime-genai versions'.")
    ap.add_argument("--out", required=True, help="folder for gpu_adapters.json and gpu_adapters.md")
    ap.add_argument("--genai-wheels", default="", help="folder of onnxruntime_genai_cuda-*.whl files, one per version "
                    "to time (default: only the installed onnxruntime-genai)")
    ap.add_argument("--own-builds", default="", help="comma-separated versions whose own builder also builds stock "
                    "and the adapter build (default: every build by the installed builder only)")
    ap.add_argument("--work", default="", help="models and builds (default: $GROVE_HOME/bench-adapters)")
    ap.add_argument("--model", choices=["phi3", "tiny"], default="phi3")
    ap.add_argument("--ep", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--builds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)}")
    ap.add_argument("--alone", default="grove_adapter", help="builds made first, one at a time on an otherwise idle "
                    "machine (their wall time is the stage figure), before the others")
    ap.add_argument("--parallel", type=int, default=3, help="builds at once (each takes ~20 GB of RAM at Phi-3-mini size)")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--measure-timeout", type=float, default=420, help="seconds for one version's timings")
    ap.add_argument("--keep", action="store_true", help="keep models and builds (default: builds deleted at the end)")
    a = ap.parse_args()
    if unknown := [k for k in a.builds.split(",") if k and k not in KINDS]:
        ap.error(f"--builds: unknown build {', '.join(unknown)} (known: {', '.join(KINDS)})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work or Path(os.environ.get("GROVE_HOME", str(Path.home() / "grove"))) / "bench-adapters")
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"args": vars(a), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def save() -> None:
        res["summary"] = ratios(res)
        (out / "gpu_adapters.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "gpu_adapters.md").write_text(table(res) + "\n")

    import onnxruntime as ort
    import onnxruntime_genai as og

    res["onnxruntime"] = ort.__version__
    res["builder_genai"] = og.__version__
    res["gpu"] = (subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True).stdout.strip().splitlines() or ["?"])[0] \
        if shutil.which("nvidia-smi") else "none"
    # the installed version, then each wheel's
    runtimes: dict[str, dict] = {og.__version__: {"version": og.__version__, "path": None, "installed": True}}
    if a.genai_wheels:
        for v, r in install_runtimes(a.genai_wheels, work).items():
            runtimes[v] = r
    for v, r in runtimes.items():
        if "error" in r:
            continue
        r["probe"] = probe_runtime(r["path"])
        if "error" not in r["probe"]:
            if r["probe"]["genai"] != v:
                r["error"] = f"asked for genai {v}, the process imported {r['probe']['genai']} ({r['probe']['genai_file']})"
            r["adapter_weights"] = adapter_placement(Path(r["probe"]["genai_file"]).parent)
        else:
            r["error"] = r["probe"]["error"]
    res["runtimes"] = runtimes
    print("runtimes: " + ", ".join(f"{v} ({r.get('adapter_weights', r.get('error', '?')[:80])})"
                                   for v, r in runtimes.items()), flush=True)
    t0 = time.perf_counter()
    res["bandwidth"] = dec.copy_bandwidth() if a.ep == "cuda" else {}
    res["model"] = dec.build_model(work, a.model)
    res["adapter"] = dec.build_adapter(work, res["model"]["path"])
    res["setup_s"] = time.perf_counter() - t0
    save()
    plan: list[tuple[str, str, str | None]] = [(k, KINDS[k], None) for k in a.builds.split(",") if k]
    own: list[tuple[str, str, str | None]] = []
    for v in [x for x in a.own_builds.split(",") if x]:
        r = runtimes.get(v)
        if r and "error" not in r and r["path"]:
            own += [(f"stock@{v}", "stock", r["path"]), (f"grove_adapter@{v}", "grove_adapter", r["path"])]
    t0 = time.perf_counter()
    first = [x for x in plan if x[0] in a.alone.split(",")]  # built one at a time, nothing else beside them
    res["builds"] = run_builds(first, res["model"]["path"], res["adapter"]["path"], a.ep, work, 1) if first else {}
    for b in res["builds"].values():
        b["alone"] = True
    res["builds"].update(run_builds([x for x in plan if x not in first], res["model"]["path"], res["adapter"]["path"],
                                    a.ep, work, a.parallel))
    for b in res["builds"].values():
        b["builder"] = og.__version__
    res["builds_wall_s"] = time.perf_counter() - t0
    # the bound counts the int4 weights of the stock build (genai's default block size; else the block-64 one)
    ref = next((k for k in ("stock", "stock_b64") if "error" not in res["builds"].get(k, {"error": 1})), None)
    if ref:
        res["bound_build"] = ref
        res["stock_bytes_per_token"] = dec.weights_read_per_token(Path(res["builds"][ref]["dir"]))
        if res["bandwidth"].get("tb_per_s"):
            res["bound_tps"] = res["bandwidth"]["tb_per_s"] * 1e12 / res["stock_bytes_per_token"]
    save()
    res["decode"] = []
    for v, r in runtimes.items():
        if "error" in r:
            continue
        try:
            res["decode"] += measure_runtime(v, r["path"], res["builds"], work, a)
        except Exception:
            r["measure_error"] = traceback.format_exc()[-2000:]
        save()
    if own:  # each version's own builder last: the table above is complete without them
        built = run_builds(own, res["model"]["path"], res["adapter"]["path"], a.ep, work, a.parallel)
        for name, b in built.items():
            b["builder"] = name.split("@")[1]
        res["builds"].update(built)
        save()
        for v in sorted({n.split("@")[1] for n, _, _ in own}):
            try:
                res["decode"] += measure_runtime(v, runtimes[v]["path"], res["builds"], work, a, own_only=True)
            except Exception:
                runtimes[v]["measure_error"] = traceback.format_exc()[-2000:]
            save()
    if not a.keep:
        shutil.rmtree(work / "builds", ignore_errors=True)
        shutil.rmtree(work / "variants", ignore_errors=True)
    save()
    print(table(res))
    print(f"\nwritten: {out / 'gpu_adapters.json'}, {out / 'gpu_adapters.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

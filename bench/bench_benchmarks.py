"""Benchmark: the local travel multiple-choice task (lm-evaluation-harness) on every candidate of the demo, and the same
number from lm-eval's own command line for one candidate.

Candidates (the two demo runs on SmolLM2-135M-Instruct in GROVE_HOME): the base model (PyTorch), the LoRA fine-tune
(PyTorch + PEFT), int4 ONNX with the adapter on and off (onnxruntime-genai), the merged int4 ONNX. When GROVE_HOME
has no successful demo runs, the bench first does what `grove demo` + `grove worker --until-idle` do: sets the
default model up, queues the demo's two runs and runs them through Grove's real worker (Olive trains the LoRA with
the demo's recipe), timing them.
Each is measured by Grove (engine.evaluate.benchmark_run.measure in its own interpreter: lm-eval's simple_evaluate on HFLM or on lm-eval's
onnxruntime-genai model loaded by Grove's backend) in a fresh interpreter; then `lm_eval --model hf` (its own CLI,
--include_path the task's folder) on one candidate, to show the two agree. Prints a table (accuracy ± standard
error, seconds per 100 examples) with the load average, and writes JSON.

Usage: python bench/bench_benchmarks.py --home GROVE_HOME [--limit 100] [--cli-candidate "base (PyTorch)"]
       [--only "base (PyTorch),LoRA (PyTorch + PEFT)"] [--demo-evaluation]
On a shared, oversubscribed machine run it with OMP_NUM_THREADS=1 (PyTorch's threads spin at barriers otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def candidates(reg, base_model: str) -> dict[str, tuple[str, str | None]]:
    """{label: (folder, adapter)} of the demo runs' candidates (the base model and int4 with its adapter off are the
    input model and the int4 + adapter folder, whether or not the runs evaluated them)."""
    out: dict[str, tuple[str, str | None]] = {"base (PyTorch)": (base_model, None)}
    for r in reg.list_runs():
        for c in reg.candidates(r["id"]):
            chain = c.get("pass_chain") or []
            path, kind = c.get("path") or "", (c.get("model_type") or "").lower()
            if not path or not Path(path).exists():
                continue
            if not chain:
                continue
            if kind.startswith(("hf", "pytorch")) and c.get("adapter_path") and "merge" not in " ".join(chain).lower():
                out.setdefault("LoRA (PyTorch + PEFT)", (path, c["adapter_path"]))
            elif Path(path, "genai_config.json").is_file():
                if c["model_id"].endswith("-no-adapter"):
                    out.setdefault("int4 ONNX, adapter off", (path, None))
                elif Path(path, "adapter_weights.onnx_adapter").is_file():
                    out.setdefault("int4 ONNX + adapter", (path, "adapter"))
                    out.setdefault("int4 ONNX, adapter off", (path, None))
                else:
                    out.setdefault("merged int4 ONNX", (path, None))
    return out


def ensure_demo_runs(reg, evaluate: bool) -> dict | None:
    """Run the demo (both runs, through the real worker) unless both already succeeded in this GROVE_HOME. Its
    passes are the demo's own (the LoRA trained by Olive with the demo's recipe); with ``evaluate`` False its held-out
    evaluation is switched off (this bench measures the candidates itself; on a loaded machine the held-out evaluation
    of the PyTorch models takes longer than the training)."""
    from engine.cli import ensure_default_model
    from engine.runs import demo, submit
    from engine.runs.worker import Worker

    ensure_default_model(demo.report)
    specs = demo.specs()
    if not evaluate:
        specs = [s.model_copy(update={"evaluation": s.evaluation.model_copy(update={"enabled": False})}) for s in specs]
    done = {r["name"] for r in reg.list_runs() if r["status"] == "succeeded"}
    if {s.name for s in specs} <= done:
        return None
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    runs = [submit.submit(s, reg=reg) for s in specs]
    print(f"demo: queued {[r['id'] for r in runs]} (held-out evaluation {'on' if evaluate else 'off'}); running them "
          "through Grove's worker", flush=True)
    Worker(reg).serve(until_idle=True)
    out = {"wall_s": time.perf_counter() - t0, "load_before": load0, "load_after": os.getloadavg()[0],
           "evaluation": evaluate, "runs": {r["id"]: reg.get_run(r["id"])["status"] for r in runs},
           "threads": os.environ.get("OMP_NUM_THREADS")}
    print(json.dumps({"demo": out}), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True, help="GROVE_HOME where `grove demo` ran")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--cli-candidate", default="base (PyTorch)", help="'' for none")
    ap.add_argument("--only", default="", help="comma-separated candidate labels to measure (default: all five)")
    ap.add_argument("--demo-evaluation", action="store_true",
                    help="run the demo with its held-out evaluation on (off: only its passes, which is all this needs)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "benchmarks.json"))
    a = ap.parse_args()
    os.environ["GROVE_HOME"] = a.home
    from engine.data.benchmark_task import TRAVEL_TASK, build_travel_mc
    from engine.evaluate import benchmark_run, benchmarks
    from engine.runs.registry import Registry
    from engine.spec.evaluation import EvalConfig

    task_dir = build_travel_mc().parent
    entry = {"task": TRAVEL_TASK, "limit": a.limit, "num_fewshot": 0, "include_path": str(task_dir)}
    cfg = EvalConfig(eval_path="", benchmarks=[entry])
    reg = Registry()
    demo_run = ensure_demo_runs(reg, a.demo_evaluation)
    from engine.models import default

    cands = candidates(reg, str(default.current()))
    order = ["base (PyTorch)", "LoRA (PyTorch + PEFT)", "int4 ONNX + adapter", "int4 ONNX, adapter off", "merged int4 ONNX"]
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    cands = {k: cands[k] for k in order if k in cands and (not only or k in only)}
    print(f"candidates: {json.dumps(cands)}", flush=True)
    rows = []
    for label, (path, adapter) in cands.items():
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = benchmarks.measure_in_subprocess(path, adapter, cfg, [entry])[TRAVEL_TASK]
        wall = time.perf_counter() - t0
        row = {"candidate": label, "path": path, "adapter": adapter, "wall_s": wall, "load_before": load0,
               "load_after": os.getloadavg()[0], **r}
        if "error" not in r:
            row["s_per_100"] = 100 * r["seconds"] / r["examples"]
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
        write_json(a.out, {"limit": a.limit, "cores": os.cpu_count(), "demo_run": demo_run, "rows": rows,
                           "partial": True}, default=str)  # what is measured so far survives an interruption
    cli = None
    if a.cli_candidate in cands and cands[a.cli_candidate][1] is None:
        path = cands[a.cli_candidate][0]
        with tempfile.TemporaryDirectory() as d:
            args = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
                    f"pretrained={path},dtype=float32", "--tasks", TRAVEL_TASK, "--include_path", str(task_dir),
                    "--limit", str(a.limit), "--batch_size", str(benchmark_run.HF_BATCH), "--device", "cpu",
                    "--output_path", d, "--seed", "0"]
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            p = subprocess.run(args, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            found = sorted(Path(d).rglob("results_*.json"))
            if p.returncode == 0 and found:
                res = json.loads(found[-1].read_text())["results"][TRAVEL_TASK]
                cli = {"candidate": a.cli_candidate, "command": " ".join(args[:-4]), "acc": res["acc,none"],
                       "acc_stderr": res["acc_stderr,none"], "wall_s": wall, "load_before": load0,
                       "load_after": os.getloadavg()[0]}
            else:
                cli = {"candidate": a.cli_candidate, "error": (p.stderr or p.stdout)[-2000:]}
        print(json.dumps(cli, default=str), flush=True)
    print(f"\ntravel_mc (lm-eval {__import__('engine.machine').machine.package_versions(('lm_eval',)).get('lm_eval')}), limit {a.limit}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'candidate':28} {'acc':>6} {'± se':>6} {'s/100 ex':>9} {'load':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['candidate']:28} failed: {r['error'][:200]}")
            continue
        print(f"{r['candidate']:28} {r['acc']:6.3f} {r['acc_stderr']:6.3f} {r['s_per_100']:9.1f} "
              f"{r['load_before']:4.1f}-{r['load_after']:4.1f}")
    if cli and "error" not in cli:
        print(f"{'lm_eval CLI: ' + cli['candidate']:28} {cli['acc']:6.3f} {cli['acc_stderr']:6.3f} "
              f"{'(wall ' + format(cli['wall_s'], '.0f') + ' s)':>9} {cli['load_before']:4.1f}-{cli['load_after']:4.1f}")
    write_json(a.out, {"limit": a.limit, "cores": os.cpu_count(), "demo_run": demo_run, "rows": rows, "cli": cli},
               default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

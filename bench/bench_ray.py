"""Benchmark: the demo recipe through the Ray executor vs the local executor, on the same machine (issue 15).

Each measurement is one child process with a GROVE_HOME of its own (the demo model hard-linked in, an empty
registry and a cold Olive cache: the same cache state on both sides), a worker already running (as under
`grove up`, default poll interval), timed from submit to `succeeded`. The Ray side uses a local head started once
(`ray start --head --block`, 127.0.0.1, no dashboard), as `grove up --ray` does; its start-up is not counted, as
the worker's is not. Order alternates (local, ray, ray, local, ...) against drift. Target: ray <= local x 1.05 + 5 s.

--two-gpus (needs a host with 2 GPUs; not run on the CPU-only CI machine): two GPU runs (LoRA bf16 on the demo
model, resources.gpus=1) submitted at once through Ray on a head with 2 GPUs; prints each run's GPU, its
CUDA_VISIBLE_DEVICES and wall time, and the wall time of both.

Usage: python bench/bench_ray.py [--reps 1] [--steps 60] [--out bench/results/ray.json]
       python bench/bench_ray.py --two-gpus [--out bench/results/ray_2gpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(executor: str, home: Path, steps: int, gpus: int = 0, n: int = 1) -> dict:
    """In a child process: submit ``n`` runs with a worker already running; wall time of each and of all."""
    os.environ["GROVE_HOME"] = str(home)
    os.environ["GROVE_EXECUTOR"] = executor
    from engine.runs import submit as service
    from engine.runs.registry import Registry
    from engine.runs.worker import POLL_S, Worker
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    reg = Registry()
    w = Worker(reg)
    w.start()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            w.tick()
            time.sleep(POLL_S)

    threading.Thread(target=loop, daemon=True).start()
    if gpus:
        d = recipes.lab_recipe(str(home / "demo" / "model"), str(home / "demo" / "travel_sample.jsonl"), device="gpu", max_steps=steps)
        d["passes"] = [p for p in d["passes"] if p["type"] == "LoRA"]
        d["target"]["precision"] = "bf16"
        d["resources"] = {"gpus": gpus}
        specs = [parse_spec({**d, "name": f"2-gpu bench {i}"}) for i in range(n)]
    else:
        specs = [recipes.demo_spec(max_steps=steps)]
    t0 = time.perf_counter()
    runs = [service.submit(s) for s in specs]
    while any(reg.get_run(r["id"])["status"] in ("queued", "running") for r in runs):
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    stop.set()
    out = []
    for r in runs:
        r = reg.get_run(r["id"])
        placed = [e["data"] for e in reg.events(r["id"], kinds=["placed"])]
        log = Path(r["log_path"]).read_text(errors="replace") if Path(r["log_path"]).exists() else ""
        out.append({"id": r["id"], "status": r["status"], "error": r["error_message"],
                    "run_s": round((r["finished_at"] or 0) - (r["started_at"] or 0), 2), "gpus": r["gpus"],
                    "placed": placed[-1] if placed else None, "log_has_cuda": "CUDA" in log})
    w.reg.worker_stopped(w.id)
    return {"executor": executor, "wall_s": round(wall, 2), "runs": out}


def fresh_home(base: Path, demo_src: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix="grove-bench-ray-", dir=base))
    shutil.copytree(demo_src, home / "demo", copy_function=os.link)
    return home


def child(executor: str, home: Path, steps: int, env: dict, gpus: int = 0, n: int = 1) -> dict:
    args = [sys.executable, __file__, "--one", executor, "--home", str(home), "--steps", str(steps), "--gpus", str(gpus), "--n", str(n)]
    p = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"measurement failed ({executor}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--two-gpus", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--base", default=None, help="folder for the per-measurement GROVE_HOMEs (default: a temp folder)")
    ap.add_argument("--one", choices=["local", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--gpus", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.home), args.steps, args.gpus, args.n)))
        return 0

    base = Path(args.base or tempfile.mkdtemp(prefix="grove-bench-ray-"))
    os.environ["GROVE_HOME"] = str(base / "build")
    from engine.models import tiny as demo
    from engine.runs import ray_executor as rx

    demo.build_demo()
    demo_src = base / "build" / "demo"
    port = free_port()
    head = rx.start_node(head=True, port=port, num_gpus=2 if args.two_gpus else 0)
    env = dict(os.environ, GROVE_RAY_ADDRESS=f"127.0.0.1:{port}", PYTHONPATH=str(REPO), GROVE_GPUS="0,1" if args.two_gpus else "")
    results: list[dict] = []
    try:
        if args.two_gpus:
            r = child("ray", fresh_home(base, demo_src), args.steps, env, gpus=1, n=2)
            results.append(r)
            print(f"two GPU runs through Ray: {r['wall_s']:.1f}s for both")
            for x in r["runs"]:
                print(f"  {x['id']}  {x['status']:9}  gpu {x['placed'] and x['placed']['gpus']}  run {x['run_s']:.1f}s")
        else:
            order = [("local", "ray") if i % 2 == 0 else ("ray", "local") for i in range(args.reps)]
            for pair in order:
                for ex in pair:
                    r = child(ex, fresh_home(base, demo_src), args.steps, env)
                    assert r["runs"][0]["status"] == "succeeded", r
                    results.append(r)
                    print(f"{ex:6} {r['wall_s']:7.1f}s  (run {r['runs'][0]['run_s']:.1f}s)", flush=True)
    finally:
        rx.stop_node(head)
    load = os.getloadavg()
    summary: dict = {"load_avg": [round(x, 2) for x in load], "cpus": os.cpu_count(), "steps": args.steps, "results": results}
    if not args.two_gpus:
        loc = [r["wall_s"] for r in results if r["executor"] == "local"]
        ray_ = [r["wall_s"] for r in results if r["executor"] == "ray"]
        ml, mr = statistics.median(loc), statistics.median(ray_)
        summary.update(local_median_s=ml, ray_median_s=mr, overhead_s=round(mr - ml, 2),
                       overhead_pct=round(100 * (mr - ml) / ml, 1), target_s=round(ml * 0.05 + 5, 2),
                       within_target=mr - ml <= ml * 0.05 + 5)
        print(f"\nlocal {ml:.1f}s  ray {mr:.1f}s  overhead {mr - ml:+.1f}s ({summary['overhead_pct']:+.1f} %), "
              f"target <= {summary['target_s']:.1f}s: {'met' if summary['within_target'] else 'NOT met'}; load average {load[0]:.1f}")
    write_json(args.out or REPO / "bench" / "results" / ("ray_2gpu.json" if args.two_gpus else "ray.json"), summary)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

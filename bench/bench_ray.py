"""Benchmark: the demo recipe through the Ray executor vs the local executor, on the same machine (issue 15).

Each measurement is one child process with a GROVE_HOME of its own (the demo model hard-linked in, an empty
registry and a cold Olive cache: the same cache state on both sides), a worker already running (as under
`grove up`, default poll interval), timed from submit to `succeeded`. The Ray side uses a local head started once
(`ray start --head --block`, 127.0.0.1, no dashboard), as `grove up --ray` does; its start-up is not counted, as
the worker's is not. Order alternates (local, ray, ray, local, ...) against drift. Target: ray <= local x 1.05 + 5 s.

--two-gpus (needs a host with 2 GPUs; not run on the CPU-only CI machine): two GPU runs (LoRA bf16 on the demo
model, resources.gpus=1) submitted at once through Ray on a head with 2 GPUs, then one such run alone on the same
head (each measurement with a fresh GROVE_HOME); prints each run's CUDA_VISIBLE_DEVICES (Ray's assignment), the
physical GPU nvidia-smi saw its runner process on (sampled every 0.5 s, with its peak memory) and its wall time,
and the wall time of both together against one alone.

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
from _worker import ticking_worker

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
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    reg = Registry()
    w, stop = ticking_worker(reg)
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
    # A run is `succeeded` once its runner's last transition is relayed; the runner exits, and its Ray actor (and
    # the GPUs it holds) is released, at the worker's next polls. Keep polling until then, or the next measurement
    # finds both GPUs still held by detached actors whose runners wait for a worker that has gone.
    deadline = time.monotonic() + 120
    while w.active and time.monotonic() < deadline:
        time.sleep(0.1)
    released = time.perf_counter() - t0
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
    return {"executor": executor, "wall_s": round(wall, 2), "released_s": round(released, 2),
            "unreleased": sorted(w.active), "runs": out}


class GpuSampler:
    """Which physical GPU each process uses, from ``nvidia-smi`` every ``period`` seconds (a thread); nothing where
    there is no nvidia-smi."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.seen = period, {}  # pid -> {gpu index: peak MiB}
        self.gpus = self._query(["--query-gpu=index,uuid,name,memory.total"])
        self.index = {row[1]: int(row[0]) for row in self.gpus}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _query(args: list[str]) -> list[list[str]]:
        try:
            p = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                               timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [[c.strip() for c in line.split(",")] for line in p.stdout.splitlines() if line.strip()] if p.returncode == 0 else []

    def _loop(self) -> None:
        while not self._stop.is_set():
            for row in self._query(["--query-compute-apps=pid,gpu_uuid,used_memory"]):
                try:
                    pid, gpu, mib = int(row[0]), self.index.get(row[1], -1), int(float(row[2]))
                except (ValueError, IndexError):
                    continue
                d = self.seen.setdefault(pid, {})
                d[gpu] = max(d.get(gpu, 0), mib)
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        if self.gpus:
            self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._t.is_alive():
            self._t.join()

    def annotate(self, r: dict) -> dict:
        """Add to each run of a measurement the GPUs its runner process was seen on (index -> peak MiB)."""
        for x in r["runs"]:
            pid = x["placed"] and x["placed"].get("pid")
            x["nvidia_smi_gpus"] = {str(k): v for k, v in self.seen.get(pid, {}).items()} if pid else {}
        r["nvidia_smi_pids"] = {str(k): {str(g): m for g, m in v.items()} for k, v in self.seen.items()}
        return r


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
    from engine.runs import ray_cluster as rc

    demo.build_demo()
    demo_src = base / "build" / "demo"
    port = free_port()
    head = rc.start_node(head=True, port=port, num_gpus=2 if args.two_gpus else 0)
    # the repository first, then whatever the caller had on the path (an offline GPU host's carried packages)
    pypath = os.pathsep.join([str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env = dict(os.environ, GROVE_RAY_ADDRESS=f"127.0.0.1:{port}", PYTHONPATH=pypath, GROVE_GPUS="0,1" if args.two_gpus else "")
    results: list[dict] = []
    out = args.out or REPO / "bench" / "results" / ("ray_2gpu.json" if args.two_gpus else "ray.json")
    gpu_rows: list[list[str]] = []
    try:
        if args.two_gpus:
            for label, n in (("two GPU runs at once", 2), ("one GPU run alone", 1)):
                with GpuSampler() as smi:
                    r = smi.annotate(child("ray", fresh_home(base, demo_src), args.steps, env, gpus=1, n=n))
                gpu_rows = smi.gpus or gpu_rows
                r["label"] = label
                results.append(r)
                print(f"{label} through Ray: {r['wall_s']:.1f}s from submit to the last run's end "
                      f"(runners exited and Ray actors released at {r['released_s']:.1f}s)", flush=True)
                for x in r["runs"]:
                    print(f"  {x['id']}  {x['status']:9}  CUDA_VISIBLE_DEVICES={','.join(x['placed']['gpus']) if x['placed'] else '?'}"
                          f"  nvidia-smi saw its runner on GPU {x['nvidia_smi_gpus'] or '?'} (index: peak MiB)"
                          f"  run {x['run_s']:.1f}s  CUDA in log: {x['log_has_cuda']}", flush=True)
                write_json(out, {"partial": True, "results": results})
        else:
            order = [("local", "ray") if i % 2 == 0 else ("ray", "local") for i in range(args.reps)]
            for pair in order:
                for ex in pair:
                    r = child(ex, fresh_home(base, demo_src), args.steps, env)
                    assert r["runs"][0]["status"] == "succeeded", r
                    results.append(r)
                    print(f"{ex:6} {r['wall_s']:7.1f}s  (run {r['runs'][0]['run_s']:.1f}s)", flush=True)
    finally:
        rc.stop_node(head)
    load = os.getloadavg()
    summary: dict = {"load_avg": [round(x, 2) for x in load], "cpus": os.cpu_count(), "steps": args.steps, "results": results}
    if args.two_gpus:
        summary["gpus"] = [{"index": int(g[0]), "name": g[2], "memory_mib": int(float(g[3]))} for g in gpu_rows if len(g) >= 4]
        both, alone = results[0], results[1]
        summary.update(both_wall_s=both["wall_s"], alone_wall_s=alone["wall_s"],
                       both_over_alone=round(both["wall_s"] / alone["wall_s"], 2),
                       distinct_gpus=len({tuple(x["placed"]["gpus"]) for x in both["runs"] if x["placed"]}) == 2)
        print(f"\nboth at once {both['wall_s']:.1f}s, one alone {alone['wall_s']:.1f}s "
              f"(x{summary['both_over_alone']:.2f}); each on its own GPU: {summary['distinct_gpus']}")
    else:
        loc = [r["wall_s"] for r in results if r["executor"] == "local"]
        ray_ = [r["wall_s"] for r in results if r["executor"] == "ray"]
        ml, mr = statistics.median(loc), statistics.median(ray_)
        summary.update(local_median_s=ml, ray_median_s=mr, overhead_s=round(mr - ml, 2),
                       overhead_pct=round(100 * (mr - ml) / ml, 1), target_s=round(ml * 0.05 + 5, 2),
                       within_target=mr - ml <= ml * 0.05 + 5)
        print(f"\nlocal {ml:.1f}s  ray {mr:.1f}s  overhead {mr - ml:+.1f}s ({summary['overhead_pct']:+.1f} %), "
              f"target <= {summary['target_s']:.1f}s: {'met' if summary['within_target'] else 'NOT met'}; load average {load[0]:.1f}")
    write_json(out, summary)
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

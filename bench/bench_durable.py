"""Benchmark: durable runs (issue 13).

  1. worker death -> working worker again: `kill -9` of the worker under the supervisor `grove up` uses, until a new
     worker heart-beats (and has adopted the live run);
  2. runner death -> ended run: `kill -9` of a runner its worker watches, until the run is failed;
     runner and worker death -> swept run: both killed, until a second, live worker has re-queued the run;
  3. (with --olive) the cache lock's own cost on the demo recipe: the seconds each pass spent in the lock and the
     atomic cache writes (`cache_lock` events), against the run's wall time.
Work lost on resume is measured by tests/engine/test_durable_olive.py (it prints the steps).

Usage: python bench/bench_durable.py [--reps 3] [--olive] [--out bench/results/durable.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parents[1]


def wait(pred, timeout: float, step: float = 0.02) -> float:  # noqa: ANN001
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise TimeoutError


def fake(reg, mode: str) -> dict:  # noqa: ANN001
    return reg.create_run(spec_json="{}", spec_hash=f"fake-{time.time_ns()}", name=f"fake:{mode}",
                          olive_config=json.dumps({"passes": {}, "output_dir": "/nonexistent"}), gpus_wanted=0)


def worker_restart(reg) -> float:  # noqa: ANN001
    from engine.runs.supervisor import Supervisor, worker_command

    sup = Supervisor(worker_command(), None, dict(os.environ), say=lambda m: None)
    sup.start()
    try:
        r = fake(reg, "sleep")
        wait(lambda: reg.get_run(r["id"])["pid"], 60)
        old = sup.worker.pid
        wait(lambda: any(w["pid"] == old for w in reg.live_workers(3)), 30)
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while time.monotonic() - t0 < 60:
            sup.step()
            ws = [w for w in reg.live_workers(3) if w["pid"] != old]
            if ws and reg.get_run(r["id"])["worker_id"] == ws[0]["id"]:
                break
            time.sleep(0.02)
        took = time.monotonic() - t0
        reg.request_cancel(r["id"])
        wait(lambda: reg.get_run(r["id"])["status"] == "cancelled", 30, 0.1)
        return took
    finally:
        sup.shutdown()


def runner_death(reg) -> tuple[float, float]:  # noqa: ANN001
    from engine.runs.executors import LocalExecutor
    from engine.runs.registry import Registry
    from engine.runs.worker import Slots, Worker

    w = Worker(Registry(), LocalExecutor(), Slots(cpu=1), worker_id=f"bench-{time.time_ns()}")
    w.start()
    r = fake(reg, "sleep")
    while not reg.get_run(r["id"])["pid"]:
        w.tick()
    time.sleep(1)
    os.killpg(reg.get_run(r["id"])["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    while reg.get_run(r["id"])["status"] != "failed":
        w.tick()
        time.sleep(0.02)
    watched = time.monotonic() - t0
    # both gone: the worker stops ticking (as if killed) and its runner dies; a second worker is already running
    r = fake(reg, "sleep")
    while not reg.get_run(r["id"])["pid"]:
        w.tick()
    time.sleep(1)
    other = Worker(Registry(), LocalExecutor(), Slots(cpu=1), worker_id=f"bench-other-{time.time_ns()}")
    other.start()
    os.killpg(reg.get_run(r["id"])["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    while not reg.events(r["id"], kinds=["recovered"]):
        other.tick()
        time.sleep(0.02)
    swept = time.monotonic() - t0
    reg.request_cancel(r["id"])
    for _ in range(200):
        other.tick()
        if reg.get_run(r["id"])["status"] == "cancelled":
            break
        time.sleep(0.05)
    return watched, swept


def cache_lock_overhead(reg) -> dict:  # noqa: ANN001
    from engine.models import tiny
    from engine.runs import submit as service
    from engine.runs.executors import LocalExecutor
    from engine.runs.worker import Slots, Worker
    from engine.spec import recipes

    tiny.build_demo()
    os.environ.pop("GROVE_RUNNER_MODULE", None)
    r = service.submit(recipes.demo_spec(max_steps=60))
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=1))
    w.start()
    while reg.get_run(r["id"])["status"] not in ("succeeded", "failed", "cancelled"):
        w.tick()
        time.sleep(0.2)
    run = reg.get_run(r["id"])
    spent = sum(e["data"]["overhead_s"] for e in reg.events(r["id"], kinds=["cache_lock"]))
    wall = run["finished_at"] - run["started_at"]
    return {"status": run["status"], "wall_s": round(wall, 2), "lock_s": round(spent, 4), "percent": round(100 * spent / wall, 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--olive", action="store_true", help="also run the demo recipe for the cache-lock overhead")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "durable.json"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="grove-bench-durable-"))
    os.environ.update(GROVE_HOME=str(home), GROVE_GPUS="", GROVE_POLL_S="0.1", GROVE_WORKER_BEAT_S="1",
                      GROVE_RUNNER_MODULE="tests.engine.fake_runner", PYTHONPATH=str(REPO))
    sys.path.insert(0, str(REPO))
    from engine.runs.registry import Registry

    reg = Registry()
    restarts, watched, swept = [], [], []
    for _ in range(args.reps):
        restarts.append(worker_restart(reg))
        a, b = runner_death(reg)
        watched.append(a)
        swept.append(b)
    result = {
        "load_average_1m": os.getloadavg()[0],
        "worker_death_to_working_worker_s": {"median": statistics.median(restarts), "all": restarts},
        "runner_death_to_failed_s": {"median": statistics.median(watched), "all": watched},
        "runner_and_worker_death_to_swept_s": {"median": statistics.median(swept), "all": swept},
    }
    if args.olive:
        result["cache_lock_demo_recipe"] = cache_lock_overhead(reg)
    for k, v in result.items():
        print(f"{k:40} {v}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

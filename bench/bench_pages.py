"""Server-side render time of the Home, Runs and Workflow pages with 1,000 runs and 10,000 candidates.

    python bench/bench_pages.py [--runs 1000] [--candidates 10000] [--repeats 15] [--only compare] [--home DIR]
    python bench/bench_pages.py --quick   (seconds: a small registry, to check that it works)

Compare opens on every measured run at once (all candidates in its table, Pareto sweep, chart sample). Its cold
render clears cache_data and cache_resource; Plotly's first figure in a process (its validators, ~0.2-0.3 s) is
timed on its own: a server pays it once, in the background when it starts (app.services.warm_up), and the bench
waits for that warm-up as a user reading Home would. ``--home DIR`` keeps the registry in DIR and reuses it when it is
already there (100,000 candidates take minutes to write).

Builds a registry in a temporary GROVE_HOME through engine.runs.registry.Registry (synthetic runs with events and
candidates; a few running and queued), then renders each page through the router with Streamlit's AppTest
(the same script run the server does, without a browser): one cold render (caches cleared) and ``--repeats``
warm ones (Grove's ttl caches as a user clicking around would find them). Target: <= 300 ms per page.
Prints a table and writes bench/results/pages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json  # bench/ is sys.path[0] when a benchmark runs as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGET_MS = 300.0


def build_registry(home: Path, n_runs: int, n_cands: int) -> dict[str, str]:
    from engine.olive import config as olive_config
    from engine.runs.registry import Registry
    from engine.spec.recipes import lab_recipe
    from engine.spec.schema import parse_spec

    reg = Registry()
    spec = parse_spec(lab_recipe(str(home / "demo" / "model"), str(home / "demo" / "travel_sample.jsonl")))
    cfg = olive_config.dumps(olive_config.build(spec, output_dir=home / "out", train_path=home / "train.jsonl"))
    statuses = ["succeeded"] * 8 + ["failed", "cancelled"]
    t0 = time.time() - n_runs * 60
    picked: dict[str, str] = {}
    with_cands = n_runs - 15  # queued runs have none
    per_run, extra = divmod(n_cands, with_cands)
    for i in range(n_runs):
        rid = f"r-bench-{i:04d}"
        reg.create_run(
            spec_json=spec.model_dump_json(),
            spec_hash=f"bench-{i}",
            name=f"bench run {i:04d}",
            olive_config=cfg,
            gpus_wanted=0,
            run_id=rid,
        )
        reg.update_run(rid, created_at=t0 + 60 * i)
        if i >= n_runs - 15:
            continue  # the newest 15 stay queued
        reg.claim("w-bench", lambda r, rid=rid: [] if r["id"] == rid else None)
        reg.update_run(rid, started_at=t0 + 60 * i)
        ts = t0 + 60 * i
        events = [(ts, "pass_started", {"name": "lora", "type": "LoRA"})]
        events += [
            (ts + s, "train_step", {"step": s * 5, "max_steps": 60, "loss": 5 - s * 0.1, "learning_rate": 2e-3})
            for s in range(1, 13)
        ]
        events += [
            (ts + 20, "pass_finished", {"name": "lora", "type": "LoRA", "seconds": 20.0}),
            (ts + 21, "pass_started", {"name": "modelbuilder", "type": "ModelBuilder"}),
            (ts + 22, "pass_cached", {"name": "modelbuilder", "model_id": f"m{i}"}),
        ]
        reg.add_events(rid, events)
        k = per_run + (1 if i < extra else 0)
        reg.upsert_candidates(
            rid,
            [
                {
                    "model_id": f"{i:04d}-{c}",
                    "pass_chain": ["lora", "modelbuilder"][: 1 + c % 2],
                    "pass_params": {"r": 16, "c": c},
                    "path": f"/tmp/bench/{i}/{c}",
                    "size_bytes": 4_900_000 + c,
                    "metrics": {"perplexity": 30 + c, "decode_tps": 900 - c},
                    "is_output": int(c == k - 1),
                }
                for c in range(k)
            ],
        )
        if i >= n_runs - 20:
            reg.update_run(rid, stage="pass lora", progress=0.5)
            picked.setdefault("running", rid)
            continue  # 5 running
        status = statuses[i % len(statuses)]
        if status == "succeeded":
            reg.transition(rid, "succeeded", expect=("running",), progress=1.0, exit_code=0)
            picked["succeeded"] = rid
        elif status == "failed":
            reg.transition(rid, "failed", expect=("running",), error_type="out_of_memory", error_message="bench")
        else:
            reg.transition(rid, "cancelled", expect=("running",))
    reg.worker_beat("w-bench", {"cpu": 1, "cpu_used": 1, "per_gpu": 1, "gpus": [], "gpu_used": {}})
    return picked


def render(page: str, query: dict[str, str], setup, repeats: int) -> dict[str, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    from app import services

    services.warm_up().wait(60)  # started by the router's first run; a user reads Home meanwhile
    if setup:
        setup(at)
    st.cache_data.clear()
    if page == "compare":  # Compare keeps its rows in cache_resource: its first render starts from nothing
        st.cache_resource.clear()
    t = time.perf_counter()
    at.switch_page(f"../pages/{page}.py").run()
    cold = (time.perf_counter() - t) * 1000
    assert not at.exception, [e.value for e in at.exception]
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        at.run()
        warm.append((time.perf_counter() - t) * 1000)
    assert not at.exception, [e.value for e in at.exception]
    warm.sort()
    return {
        "cold_ms": round(cold, 1),
        "warm_median_ms": round(statistics.median(warm), 1),
        "warm_p90_ms": round(warm[int(0.9 * (len(warm) - 1))], 1),
        "warm_max_ms": round(warm[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--candidates", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--only", nargs="*", help="pages to time (home, runs, workflow, compare); default: all")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "pages.json"))
    ap.add_argument("--home", help="GROVE_HOME to build the registry in and keep (reused when it has one)")
    ap.add_argument("--quick", action="store_true",
                    help="a check that the benchmark works, in seconds: 30 runs, 300 candidates, 2 warm renders of "
                         "Home, Runs and Compare (the Workflow page needs Olive's catalog: about 10 s more)")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.candidates, args.repeats = 30, 300, 2
        args.only = args.only or ["home", "runs", "compare"]

    from engine.views import charts

    t = time.perf_counter()
    charts.warm()  # nothing has drawn a figure in this process yet
    plotly_first_ms = (time.perf_counter() - t) * 1000
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="grove-bench-"))
    reuse = bool(args.home) and (home / "grove.db").is_file()
    os.environ["GROVE_HOME"] = str(home)
    os.environ.setdefault("GROVE_GPUS", "")
    try:
        from engine.olive import catalog
        from tests.app.conftest import _fake_demo

        if not args.only or "workflow" in args.only:
            catalog.load()  # Olive's catalog for the Workflow page (a child process; ~10 s)
        t = time.perf_counter()
        if reuse:
            picked = json.loads((home / "bench-picked.json").read_text())
        else:
            _fake_demo(home)
            picked = build_registry(home, args.runs, args.candidates)
            (home / "bench-picked.json").write_text(json.dumps(picked))
        build_s = time.perf_counter() - t
        from engine.runs.registry import Registry

        reg = Registry()
        n_runs, n_cands = sum(reg.count_runs().values()), reg.count_candidates()

        def lab_draft(at) -> None:
            at.switch_page("../pages/model_data.py").run()
            next(s for s in at.selectbox if s.label.startswith("Dataset file")).set_value(
                str(home / "demo" / "travel_sample.jsonl")
            ).run()
            at.switch_page("../pages/workflow.py").run()
            next(b for b in at.button if b.label == "Apply recipe").click().run()

        pages = {
            "home": lambda: render("home", {}, None, args.repeats),
            "runs (a finished run open)": lambda: render("runs", {"run": picked["succeeded"]}, None, args.repeats),
            "runs (a running run open)": lambda: render("runs", {"run": picked["running"]}, None, args.repeats),
            "workflow (lab recipe)": lambda: render("workflow", {}, lab_draft, args.repeats),
            f"compare (every run, {n_cands:,} candidates)": lambda: render("compare", {}, None, args.repeats),
        }
        results = {k: f() for k, f in pages.items() if not args.only or k.split()[0] in args.only}
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)

    built = "reused" if reuse else f"built in {build_s:.1f}s"
    load = os.getloadavg()
    print(f"\nregistry: {n_runs} runs, {n_cands} candidates ({built}); target <= {TARGET_MS:.0f} ms; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"Plotly's first figure in this process: {plotly_first_ms:.0f} ms (once per server process, in the background)\n")
    print(f"{'page':30} {'cold ms':>9} {'warm median':>12} {'warm p90':>9} {'warm max':>9}  target")
    for page, r in results.items():
        ok = "ok" if r["warm_p90_ms"] <= TARGET_MS and r["cold_ms"] <= TARGET_MS else "MISSED"
        print(
            f"{page:30} {r['cold_ms']:>9.1f} {r['warm_median_ms']:>12.1f} {r['warm_p90_ms']:>9.1f} {r['warm_max_ms']:>9.1f}  {ok}"
        )
    write_json(
        args.out,
        {
            "benchmark": "page render time (server side, AppTest script run)",
            "target_ms": TARGET_MS,
            "runs": n_runs,
            "candidates": n_cands,
            "repeats": args.repeats,
            "plotly_first_figure_ms": round(plotly_first_ms, 1),
            "load_average": list(load),
            "results": results,
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

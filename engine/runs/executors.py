"""How a run is started, watched and stopped: the executor seam. The local executor starts each run as a fresh
interpreter (``python -m engine.runs.runner RUN_ID``) in its own process group - Grove's own interpreter, or the
target environment's for a run whose target has one (engine.targets: OpenVINO runs its passes and Grove's evaluator
there); other executors (a cluster) can replace it behind the same three calls."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine import machine, paths
from engine.targets.env import python_for_run


class Executor(Protocol):
    """How a run is started and stopped. The local executor starts processes; others may start remote jobs."""

    def launch(self, run: dict[str, Any], gpus: list[int]) -> Any: ...
    def poll(self, handle: Any) -> int | None: ...
    def signal(self, handle: Any, sig: int) -> None: ...


@dataclass
class LocalHandle:
    run_id: str
    pid: int
    popen: subprocess.Popen | None = None  # None for a runner adopted after a worker restart


class LocalExecutor:
    def __init__(self, module: str | None = None) -> None:
        # GROVE_RUNNER_MODULE lets the fault tests start a stand-in runner through the real worker
        self.module = module or os.environ.get("GROVE_RUNNER_MODULE", "engine.runs.runner")

    def launch(self, run: dict[str, Any], gpus: list[int]) -> LocalHandle:
        rdir = Path(run["run_dir"])
        rdir.mkdir(parents=True, exist_ok=True)
        tmp = rdir / "tmp"
        python = python_for_run(run)  # before anything is written: a target with no environment fails the launch
        env = paths.olive_env(tmp=tmp)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus) if gpus else ""
        if python != sys.executable:
            from engine.targets.env import run_env

            env = run_env(env)  # Grove's code imports from the repository in the target's interpreter
        logf = open(rdir / "run.log", "ab", buffering=0)  # noqa: SIM115 - the child owns it
        try:
            p = subprocess.Popen(
                [python, "-m", self.module, run["id"]],
                cwd=rdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel signals the whole group
                close_fds=True,
            )
        finally:
            logf.close()
        return LocalHandle(run["id"], p.pid, p)

    def poll(self, h: LocalHandle) -> int | None:
        if h.popen is not None:
            return h.popen.poll()
        return None if pid_is_runner(h.pid, h.run_id) else -1

    def signal(self, h: LocalHandle, sig: int) -> None:
        try:
            os.killpg(h.pid, sig)
        except ProcessLookupError:
            pass


def pid_is_runner(pid: int | None, run_id: str) -> bool:
    cmd = machine.cmdline(pid)
    # a runner is started as `python -m <runner module> RUN_ID`: the run id as the last argument identifies it
    return cmd is not None and len(cmd) >= 2 and run_id.encode() in cmd[-2:] and b"-m" in cmd


def from_env() -> Executor:
    """The executor ``GROVE_EXECUTOR`` names: ``local`` (default) or ``ray`` (engine/runs/ray_executor.py)."""
    kind = os.environ.get("GROVE_EXECUTOR", "local").strip().lower() or "local"
    if kind == "ray":
        from engine.runs.ray_executor import RayExecutor

        return RayExecutor()
    if kind != "local":
        raise ValueError(f"GROVE_EXECUTOR={kind!r}: use 'local' or 'ray'")
    return LocalExecutor()

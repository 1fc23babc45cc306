"""Durable runs (issue 13), fast part: real workers and real subprocesses; the stand-in runner for hang/crash cases.
The real-Olive cases (shared pass, killed mid-pass, LoRA resume, disk full, a failing run) are in test_durable_olive.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from engine.runs import submit as service
from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.supervisor import backoff
from engine.runs.worker import Slots, Worker

from .helpers import fake_run, pid_alive, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(fresh_home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("GROVE_RUNNER_MODULE", "tests.engine.fake_runner")
    monkeypatch.setenv("GROVE_CANCEL_GRACE_S", "1")
    monkeypatch.setenv("GROVE_WORKER_BEAT_S", "0.5")
    return fresh_home


def worker(gpus=(), cpu=1, wid=None) -> Worker:
    return Worker(Registry(), LocalExecutor(), Slots(cpu=cpu, gpus=list(gpus)), worker_id=wid)


def _started(reg: Registry, r: dict) -> bool:
    return bool(reg.get_run(r["id"])["pid"]) and "fake runner pid=" in (Path(reg.get_run(r["id"])["log_path"]).read_text()
                                                                         if Path(reg.get_run(r["id"])["log_path"]).exists() else "")


def test_hung_runner_is_killed_and_failed(env, monkeypatch):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "hang")
    wait_for(lambda: _started(reg, r), 120, w.tick)
    # a short limit only once the runner is up (its start on a busy machine can take longer than 2 s)
    monkeypatch.setenv("GROVE_HUNG_TIMEOUT_S", "2")
    pid = reg.get_run(r["id"])["pid"]
    wait_for(lambda: reg.get_run(r["id"])["status"] == "failed", 60, w.tick)
    run = reg.get_run(r["id"])
    assert run["error_type"] == "hung" and "no heartbeat" in run["error_message"]
    assert not pid_alive(pid)
    assert not (Path(run["run_dir"]) / "tmp").exists()


def test_cancel_with_no_worker_ends_cancelled(env):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "ignore-term")
    wait_for(lambda: _started(reg, r), 120, w.tick)
    pid = reg.get_run(r["id"])["pid"]
    # the worker is gone (no more ticks, stopped heart-beating); the user cancels; the runner then dies
    reg.worker_stopped(w.id)
    service.cancel(r["id"])
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 60)
    w2 = worker(wid="w-second")
    w2.start()
    run = reg.get_run(r["id"])
    assert run["status"] == "cancelled", run
    assert not run["error_type"]
    assert not (Path(run["run_dir"]) / "tmp").exists()


def test_live_worker_sweeps_a_run_whose_worker_died_within_three_beats(env):
    """A second worker, already running, notices the first one stopped heart-beating and recovers its run."""
    reg = Registry()
    a, b = worker(wid="w-a"), worker(wid="w-b")
    a.start()
    b.start()
    r = fake_run(reg, "sleep")
    wait_for(lambda: _started(reg, r), 120, a.tick)
    pid = reg.get_run(r["id"])["pid"]
    assert reg.get_run(r["id"])["worker_id"] == "w-a"
    os.killpg(pid, signal.SIGKILL)  # the runner dies, and worker a with it (it never ticks again)
    wait_for(lambda: not pid_alive(pid), 60)
    t0 = time.monotonic()
    wait_for(lambda: reg.get_run(r["id"])["worker_id"] == "w-b" or reg.get_run(r["id"])["status"] == "queued", 60, b.tick, 0.05)
    took = time.monotonic() - t0
    assert took <= 3 * 0.5 + 1.0, f"swept after {took:.1f} s"  # three worker beats (plus one tick of slack on a loaded machine)
    assert any(e["data"].get("requeued") for e in reg.events(r["id"], kinds=["recovered"]))
    assert reg.notices(kinds=["swept"])
    service.cancel(r["id"])
    wait_for(lambda: reg.get_run(r["id"])["status"] == "cancelled", 60, b.tick)


def test_run_of_a_dead_worker_on_another_host_waits_for_its_heartbeat(env):
    reg = Registry()
    r = fake_run(reg, "sleep")
    reg.transition(r["id"], "running", pid=4242, worker_id="w-remote", heartbeat_at=time.time())
    with reg.tx() as db:
        db["workers"].insert({"id": "w-remote", "pid": 1, "host": "elsewhere", "started_at": 0.0, "heartbeat_at": 0.0, "slots": "{}"})
    w = worker()
    w.start()
    assert reg.get_run(r["id"])["status"] == "running"  # its runner (on the other host) still beats
    reg.update_run(r["id"], heartbeat_at=time.time() - 10)
    w.sweep()
    assert reg.get_run(r["id"])["status"] in ("queued", "running")
    assert any(e["data"].get("requeued") for e in reg.events(r["id"], kinds=["recovered"]))


def test_no_starvation_of_a_two_gpu_run(env):
    """Oldest first with reservation: a 2-GPU run queued behind a 1-GPU run is not overtaken by later 1-GPU runs."""
    reg = Registry()
    w = worker(gpus=[0, 1])
    w.start()
    first = fake_run(reg, "sleep", gpus=1)
    wait_for(lambda: reg.get_run(first["id"])["status"] == "running", 120, w.tick)
    big = fake_run(reg, "sleep", gpus=2)
    small = [fake_run(reg, "sleep", gpus=1) for _ in range(3)]
    for _ in range(5):
        w.tick()
    # GPU 1 is free, but it is reserved for the older 2-GPU run
    assert reg.get_run(big["id"])["status"] == "queued"
    assert all(reg.get_run(s["id"])["status"] == "queued" for s in small)
    service.cancel(first["id"])
    wait_for(lambda: reg.get_run(big["id"])["status"] == "running", 60, w.tick)
    assert all(reg.get_run(s["id"])["status"] == "queued" for s in small)
    service.cancel(big["id"])
    wait_for(lambda: sum(reg.get_run(s["id"])["status"] == "running" for s in small) == 2, 60, w.tick)
    for s in small:
        service.cancel(s["id"])
    wait_for(lambda: all(reg.get_run(s["id"])["status"] == "cancelled" for s in small), 60, w.tick)


def test_a_run_too_big_for_this_worker_reserves_nothing(env):
    reg = Registry()
    w = worker(gpus=[0])
    w.start()
    fake_run(reg, "sleep", gpus=2)  # another worker's job
    small = fake_run(reg, "ok", gpus=1)
    wait_for(lambda: reg.get_run(small["id"])["status"] == "succeeded", 120, w.tick)


def test_worker_loop_survives_a_failing_tick(env, monkeypatch):
    reg = Registry()
    w = worker()
    calls = {"n": 0}
    real = w.claim_all

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError(28, "No space left on device")
        real()

    monkeypatch.setattr(w, "claim_all", flaky)
    r = fake_run(reg, "ok")
    w.serve(until_idle=True, timeout=120)
    assert reg.get_run(r["id"])["status"] == "succeeded"
    assert len(reg.notices(kinds=["worker_error"])) == 2


def test_reuse_error_does_not_reach_the_worker(env, monkeypatch):
    from engine.runs import reuse

    reg = Registry()
    r = fake_run(reg, "ok")
    monkeypatch.setattr(reuse, "find_twin", lambda reg, run: {"id": "x"})
    monkeypatch.setattr(reuse, "reuse_finished", lambda reg, run: 1 / 0)
    w = worker()
    w.serve(until_idle=True, timeout=120)
    assert reg.get_run(r["id"])["status"] == "succeeded"  # ran for real after the failed reuse
    msgs = [e["data"].get("message", "") for e in reg.events(r["id"], kinds=["log"])]
    assert any("reusing an identical run's result failed" in m for m in msgs)


def test_supervisor_backoff():
    assert [backoff(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1, 2, 4, 8, 16, 30, 30]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _grove_up_worker_pid(reg: Registry) -> int | None:
    ws = reg.live_workers(max_age_s=3)
    return ws[0]["pid"] if ws else None


def test_kill_9_of_the_worker_under_grove_up(env, monkeypatch):
    """`grove up`: the worker is killed; the UI keeps answering, the worker comes back and adopts the run."""
    monkeypatch.setenv("GROVE_POLL_S", "0.1")
    (env / "demo" / "model").mkdir(parents=True)  # `grove up` builds no demo model: this test needs none
    (env / "demo" / "demo.json").write_text("{}")
    (env / "demo" / "model" / "model.safetensors").write_bytes(b"")
    reg = Registry()
    port = _free_port()
    up = subprocess.Popen([sys.executable, "-m", "engine.cli", "up", "--port", str(port)], env=dict(os.environ),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        wait_for(lambda: _health(port), 90)
        r = fake_run(reg, "sleep")
        wait_for(lambda: _started(reg, r), 120)
        runner = reg.get_run(r["id"])["pid"]
        wpid = _grove_up_worker_pid(reg)
        assert wpid
        t0 = time.monotonic()
        os.kill(wpid, signal.SIGKILL)
        wait_for(lambda: reg.notices(kinds=["worker_restart"]), 60)
        assert _health(port)  # the UI never stopped
        wait_for(lambda: (p := _grove_up_worker_pid(reg)) is not None and p != wpid, 120)
        back = time.monotonic() - t0
        wait_for(lambda: reg.get_run(r["id"])["worker_id"] == f"w-{os.uname().nodename}-{_grove_up_worker_pid(reg)}", 60)
        assert pid_alive(runner)  # adopted, not restarted
        assert reg.events(r["id"], kinds=["recovered"])
        assert _health(port)
        note = reg.notices(kinds=["worker_restart"])[0]
        assert "SIGKILL" in note["message"]
        print(f"worker death -> working worker again: {back:.1f}s")
        service.cancel(r["id"])
        wait_for(lambda: reg.get_run(r["id"])["status"] == "cancelled", 60)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            out, _ = up.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            out, _ = up.communicate()
    assert "restarting it in 1s" in out

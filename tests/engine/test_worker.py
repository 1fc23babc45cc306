"""The real worker with real subprocesses; a stand-in runner (tests/engine/fake_runner.py) for hang/crash cases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import ResourceError
from engine.runs import submit as service
from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.worker import Slots, Worker
from engine.spec.recipes import lab_recipe
from engine.spec.schema import parse_spec

from .helpers import fake_run, pid_alive, wait_for

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT = 1.0


@pytest.fixture
def env(fresh_home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("GROVE_RUNNER_MODULE", "tests.engine.fake_runner")
    monkeypatch.setenv("GROVE_CANCEL_GRACE_S", "1")
    return fresh_home


def _log(reg: Registry, r: dict) -> str:
    p = Path(reg.get_run(r["id"])["log_path"])
    return p.read_text() if p.exists() else ""


def worker(gpus=(), per_gpu=1, cpu=1) -> Worker:
    return Worker(Registry(), LocalExecutor(), Slots(cpu=cpu, per_gpu=per_gpu, gpus=list(gpus)))


def test_kill_9_of_a_runner_fails_the_run_with_log_tail(env):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "sleep")
    wait_for(lambda: "fake runner pid=" in _log(reg, r), 120, w.tick)
    pid = reg.get_run(r["id"])["pid"]
    other = fake_run(reg, "ok")  # queued behind it, must still run afterwards
    os.kill(pid, signal.SIGKILL)
    took = wait_for(lambda: reg.get_run(r["id"])["status"] == "failed", 60, w.tick, 0.05)
    run = reg.get_run(r["id"])
    assert run["error_type"] == "runner_died" and "SIGKILL" in run["error_message"]
    tail = reg.events(r["id"], kinds=["log_tail"])[0]["data"]["text"]
    assert "fake runner pid=" in tail
    assert not (Path(run["run_dir"]) / "tmp").exists()  # temp files removed
    wait_for(lambda: reg.get_run(other["id"])["status"] == "succeeded", 120, w.tick)
    assert took < 3 * HEARTBEAT, f"the dead runner was noticed after {took:.1f} s"


def test_crash_without_ending_the_run(env):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "crash")
    wait_for(lambda: reg.get_run(r["id"])["status"] == "failed", 120, w.tick)
    assert "exited with code 3" in reg.get_run(r["id"])["error_message"]


def test_cancel_signals_the_group_and_escalates_to_sigkill(env):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "ignore-term")
    wait_for(lambda: "fake runner pid=" in _log(reg, r), 120, w.tick)
    pid = reg.get_run(r["id"])["pid"]
    t0 = time.monotonic()
    service.cancel(r["id"])
    wait_for(lambda: reg.get_run(r["id"])["status"] == "cancelled", 60, w.tick, 0.05)
    assert time.monotonic() - t0 < 5, "TERM, then SIGKILL after the 1 s grace"
    assert not pid_alive(pid)
    msgs = [e["data"].get("message", "") for e in reg.events(r["id"], kinds=["log"])]
    assert any("SIGKILL" in m for m in msgs)


def test_cancel_clean_runner_is_quick(env):
    reg = Registry()
    w = worker()
    w.start()
    r = fake_run(reg, "sleep")
    wait_for(lambda: "fake runner pid=" in _log(reg, r), 120, w.tick)
    service.cancel(r["id"])
    took = wait_for(lambda: reg.get_run(r["id"])["status"] == "cancelled", 60, w.tick, 0.05)
    assert took < 2, f"a clean runner took {took:.1f} s to stop"
    assert reg.get_run(r["id"])["exit_code"] == 130  # the runner ended its own run


def test_two_gpus_two_runs_third_waits(env):
    reg = Registry()
    w = worker(gpus=[0, 1])
    w.start()
    runs = [fake_run(reg, "sleep", gpus=1) for _ in range(3)]
    wait_for(lambda: sum(reg.get_run(r["id"])["status"] == "running" for r in runs) == 2, 120, w.tick)
    for _ in range(5):
        w.tick()
    status = [reg.get_run(r["id"])["status"] for r in runs]
    assert status == ["running", "running", "queued"]
    wait_for(lambda: all("CUDA_VISIBLE_DEVICES" in _log(reg, r) for r in runs[:2]), 120, w.tick)
    logs = [_log(reg, r) for r in runs[:2]]
    pinned = sorted(next(ln for ln in log.splitlines() if "CUDA_VISIBLE_DEVICES" in ln).split("CUDA_VISIBLE_DEVICES=")[1].split()[0] for log in logs)
    assert pinned == ["'0'", "'1'"]
    service.cancel(runs[0]["id"])
    wait_for(lambda: reg.get_run(runs[2]["id"])["status"] == "running", 120, w.tick)  # the freed GPU goes to the third
    for r in runs[1:]:
        service.cancel(r["id"])
    wait_for(lambda: all(reg.get_run(r["id"])["status"] == "cancelled" for r in runs), 120, w.tick)


def test_more_gpus_than_exist_is_refused_at_submit(env, tmp_path, monkeypatch):
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(tmp_path))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    (tmp_path / "m" / "tokenizer.json").write_text("{}")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "response": "a{i}"}}\n' for i in range(40)))
    d = lab_recipe(str(tmp_path / "m"), str(data), device="gpu")
    d["resources"] = {"gpus": 4}
    with pytest.raises(ResourceError, match="asks for 4 GPU"):
        service.submit(parse_spec(d), gpus_available=2)
    assert Registry().list_runs() == []  # nothing queued


def test_kill_9_of_the_worker_then_restart_recovers(env):
    reg = Registry()
    envv = dict(os.environ, GROVE_POLL_S="0.1")
    wp = subprocess.Popen([sys.executable, "-m", "engine.runs.worker"], env=envv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        live = fake_run(reg, "sleep")
        wait_for(lambda: reg.get_run(live["id"])["pid"], 120)
        runner_pid = reg.get_run(live["id"])["pid"]
        queued = fake_run(reg, "ok")
        wp.send_signal(signal.SIGKILL)
        wp.wait()
    finally:
        if wp.poll() is None:
            wp.kill()
    # a run whose runner died while no worker watched
    dead = fake_run(reg, "sleep")
    reg.transition(dead["id"], "running", pid=999999, worker_id="w-gone")
    assert pid_alive(runner_pid)  # runners outlive their worker
    w = worker(cpu=2)
    w.start()
    assert live["id"] in w.active  # adopted
    assert reg.get_run(dead["id"])["status"] in ("queued", "running")  # re-queued, then claimed again
    wait_for(lambda: reg.get_run(queued["id"])["status"] == "succeeded", 120, w.tick)
    service.cancel(live["id"])
    wait_for(lambda: reg.get_run(live["id"])["status"] == "cancelled", 60, w.tick)
    wait_for(lambda: not pid_alive(runner_pid), 60, w.tick)
    service.cancel(dead["id"])
    wait_for(lambda: reg.get_run(dead["id"])["status"] == "cancelled", 60, w.tick)

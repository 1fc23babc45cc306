"""Durable runs (issue 13) with real Olive on the tiny demo model: a pass shared by two runs at once, a half-written
cache entry never reused, LoRA resuming after kill -9, a full disk, and a real run that fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import paths
from engine.runs import submit as service
from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.worker import Slots, Worker
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .helpers import pid_alive, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DONE = ("succeeded", "failed", "cancelled")
STEPS, EVERY = 20, 5  # the resume test: a checkpoint every 5 of 20 steps


@pytest.fixture
def home(demo, grove_home, fresh_home, monkeypatch):
    """A registry and Olive cache of its own, the session's demo model, runners importing this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("GROVE_POLL_S", "0.2")
    fresh_home.mkdir(parents=True, exist_ok=True)
    (fresh_home / "demo").symlink_to(grove_home / "demo")
    # the link resolves into the session's home, which this test's own home does not contain (issue 12: roots)
    monkeypatch.setenv("GROVE_ALLOWED_ROOTS", str(grove_home))
    return fresh_home


def _spec(name: str, passes: list[str], steps: int = 6, checkpoint: int | None = None, log_every: int | None = 1,
          **lora: object):
    d = recipes.lab_recipe(str(paths.demo_dir() / "model"), str(paths.demo_dir() / "travel_sample.jsonl"),
                           name=name, max_steps=steps)
    d["passes"] = [p for p in d["passes"] if p["type"] in passes]
    for p in d["passes"]:
        if p["type"] == "LoRA":
            if log_every:
                p["params"]["training_args"]["logging_steps"] = log_every
            p["params"].update(lora)
        if p["type"] == "ModelBuilder":
            p["params"]["precision"] = "fp32"
    d["target"]["precision"] = "fp32"
    if checkpoint:
        d["resources"]["checkpoint_steps"] = checkpoint
    return parse_spec(d)


def _worker(cpu: int = 1, module: str = "engine.runs.runner") -> Worker:
    w = Worker(Registry(), LocalExecutor(module), Slots(cpu=cpu, gpus=[]))
    w.start()
    return w


def _to_end(w: Worker, ids: list[str], timeout: float = 600) -> list[dict]:
    reg = Registry()
    wait_for(lambda: all(reg.get_run(i)["status"] in DONE for i in ids) and not w.active, timeout, w.tick, 0.2)
    return [reg.get_run(i) for i in ids]


def _names(reg: Registry, run_id: str, kind: str) -> list[str]:
    return [e["data"].get("name") for e in reg.events(run_id, kinds=[kind])]


def test_two_runs_sharing_a_lora_pass_at_once(home):
    reg = Registry()
    a = service.submit(_spec("share: lora", ["LoRA"]))
    b = service.submit(_spec("share: lora > onnx", ["LoRA", "ModelBuilder"]))
    w = _worker(cpu=2)
    ra, rb = _to_end(w, [a["id"], b["id"]])
    assert ra["status"] == "succeeded", ra["error_message"]
    assert rb["status"] == "succeeded", rb["error_message"]
    assert abs(ra["started_at"] - rb["started_at"]) < 2  # started together
    trained = [r for r in (ra, rb) if "lora" in _names(reg, r["id"], "pass_finished")]
    reused = [r for r in (ra, rb) if "lora" in _names(reg, r["id"], "pass_cached")]
    assert len(trained) == 1 and len(reused) == 1, (trained, reused)
    # the reusing run did not train at all: it waited for the entry's lock, then loaded the finished pass
    assert not reg.events(reused[0]["id"], kinds=["train_step"])
    locks = list((home / "cache" / paths.OLIVE_WORKFLOW_ID / "locks").glob("*.lock"))
    assert locks


def _lora_entries(home: Path) -> list[Path]:
    runs = home / "cache" / paths.OLIVE_WORKFLOW_ID / "runs"
    return [d for d in runs.iterdir() if d.is_dir()] if runs.is_dir() else []


def test_lora_resumes_after_kill_9_and_a_half_written_entry_is_never_reused(home, monkeypatch, capsys):
    """Worker and runner killed mid-LoRA (as a machine restart would): the half-written cache entry is discarded,
    the re-queued run resumes from its last checkpoint and continues past it."""
    reg = Registry()
    # logging_steps left to Olive's default (issue 20: a resumed run then said "no step was logged" and gave the
    # Trainer's mean over the resumed steps divided by all steps): Grove logs a point per step of a 20-step run
    r = service.submit(_spec("resume", ["LoRA"], steps=STEPS, checkpoint=EVERY, log_every=None))
    wp = subprocess.Popen([sys.executable, "-m", "engine.runs.worker"], env=dict(os.environ),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def steps() -> list[int]:
            return [int(e["data"]["step"]) for e in reg.events(r["id"], kinds=["train_step"])]

        wait_for(lambda: max(steps(), default=0) >= EVERY + 2, 600, step=0.2)
        killed_at = max(steps())
        runner = reg.get_run(r["id"])["pid"]
        wp.send_signal(signal.SIGKILL)
        wp.wait()
        os.killpg(runner, signal.SIGKILL)
        wait_for(lambda: not pid_alive(runner), 60)
    finally:
        if wp.poll() is None:
            wp.kill()
    assert reg.get_run(r["id"])["status"] == "running"
    # the entry the kill left: no run.json; plant what a kill between model.json and run.json would leave too
    half = [d for d in _lora_entries(home) if not (d / "run.json").exists()]
    assert len(half) == 1
    (half[0] / "models").mkdir(exist_ok=True)
    (half[0] / "models" / "stale.bin").write_bytes(b"half-written")
    (half[0] / "model.json").write_text(json.dumps({"type": "HfModel", "config": {"model_path": "/nonexistent"}}))
    ckpts = sorted((Path(reg.get_run(r["id"])["run_dir"]) / "checkpoints").glob("*/checkpoint-*"))
    assert ckpts, "no checkpoint was saved before the kill"
    # a kill during a checkpoint save leaves the newest folder without its trainer_state.json (seen in the suite:
    # the resume then failed with "Can't find a valid checkpoint"): plant one, newer than every real checkpoint
    torn = ckpts[0].parent / "checkpoint-999"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half-written")

    w = _worker()
    (done,) = _to_end(w, [r["id"]])
    assert done["status"] == "succeeded", done["error_message"]
    k = reg.resumed_from(r["id"])
    assert k is not None and k >= EVERY and k % EVERY == 0 and k <= killed_at + EVERY
    after = [int(e["data"]["step"]) for e in reg.events(r["id"], kinds=["train_step"])
             if e["id"] > reg.events(r["id"], kinds=["resumed"])[-1]["id"] and not e["data"].get("restored")]
    assert after and after[0] == k + 1 and after[-1] == STEPS  # continued past the checkpoint, to the end
    assert not (half[0] / "models" / "stale.bin").exists()
    msgs = [e["data"].get("message", "") for e in reg.events(r["id"], kinds=["log"])]
    assert any("half-written" in m for m in msgs)
    assert any("checkpoint checkpoint-999 was half-written" in m for m in msgs) and not torn.exists()
    assert (half[0] / "run.json").exists()
    assert not (Path(done["run_dir"]) / "checkpoints").exists()
    # the curve keeps the points before the crash, one point per step; the mean is over the steps logged
    from engine.cli import main as cli
    from engine.views import runs as views

    curve = views.train_curve(reg, r["id"])
    assert [p["step"] for p in curve] == list(range(1, STEPS + 1))
    final = [e["data"] for e in reg.events(r["id"], kinds=["train_step"]) if "mean_loss" in e["data"]]
    assert final and final[-1]["mean_from_step"] == k + 1 and "train_loss" not in final[-1]
    resumed_mean = sum(p["loss"] for p in curve if p["step"] > k) / (STEPS - k)
    assert final[-1]["mean_loss"] == pytest.approx(resumed_mean, abs=1e-3)  # the Trainer's, corrected, is a true mean
    assert final[-1]["trainer_train_loss"] < 0.9 * final[-1]["mean_loss"]  # what grove show used to report
    capsys.readouterr()
    assert cli(["show", r["id"]]) == 0
    shown = capsys.readouterr().out
    mean = sum(p["loss"] for p in curve) / STEPS
    assert f"mean {mean:.3f} over steps 1-{STEPS}; resumed from step {k}" in shown, shown
    assert "no step was logged" not in shown
    print(f"killed at step >= {killed_at}, resumed from step {k}: lost <= {max(0, killed_at - k)} of {STEPS} steps; "
          f"mean loss {mean:.3f} (the Trainer's after the resume: {final[-1]['trainer_train_loss']:.3f})")


def test_disk_full_in_the_runner_fails_the_run(home, monkeypatch):
    """A file-size limit (ulimit -f) on the runner: ModelBuilder cannot write its model."""
    monkeypatch.setenv("GROVE_FSIZE_LIMIT", str(6 * 1024 * 1024))
    reg = Registry()
    r = service.submit(_spec("full", ["ModelBuilder"]))
    w = _worker(module="tests.engine.fsize_runner")
    (done,) = _to_end(w, [r["id"]])
    assert done["status"] == "failed"
    assert done["error_type"] == "disk_full", (done["error_type"], done["error_message"])
    assert done["error_message"].startswith("disk full:")
    assert done["finished_at"] and done["exit_code"] == 1
    assert not (Path(done["run_dir"]) / "tmp").exists()
    assert not [d for d in _lora_entries(home) if (d / "run.json").exists()]  # nothing half-written is trusted
    assert reg.events(r["id"], kinds=["status"])[-1]["data"]["status"] == "failed"


def test_a_real_olive_run_that_fails(home):
    """What a user sees on the Runs page when Olive fails: the error type and Olive's own message."""
    r = service.submit(_spec("bad lora", ["LoRA"], steps=2, target_modules=["no_such_module"]))
    w = _worker()
    (done,) = _to_end(w, [r["id"]])
    assert done["status"] == "failed"
    assert done["error_type"] == "ValueError", done["error_message"]
    assert "no_such_module" in done["error_message"] and "not found in the base model" in done["error_message"]
    assert not (Path(done["run_dir"]) / "tmp").exists()
    assert not [d for d in _lora_entries(home) if (d / "run.json").exists()]

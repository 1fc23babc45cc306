"""Speed measured with the device to itself (issue 21): exclusive device claims in the registry, runs and chats kept
off a claimed device, measurements deferred while a run's passes use it, the conditions each figure records, and
two real runs at once on two CPU slots whose speed measurements never overlap other Grove work (checked from the
registry's recorded activity intervals)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.evaluate import compare
from engine.runs import devices
from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.worker import Slots, Worker

from .helpers import fake_run, wait_for

REPO = Path(__file__).resolve().parents[2]

CPU = devices.cpu()


def overlaps(a: dict, b: dict) -> bool:
    return a["started_at"] < (b["ended_at"] or 1e18) and b["started_at"] < (a["ended_at"] or 1e18)


def contended(reg: Registry) -> list[tuple[dict, dict]]:
    """Every pair (measurement, other Grove activity on its device) whose recorded intervals overlap."""
    rows = reg.device_activities()
    return [(m, o) for m in rows if m["exclusive"] for o in rows
            if o["id"] != m["id"] and o["device"] == m["device"] and overlaps(m, o)]


def test_a_claim_excludes_every_other_activity_and_waits_for_none(fresh_home):
    reg = Registry()
    run = reg.begin_activity(CPU, "run", run_id="rA", label="LoRA")
    assert run["id"]
    refused = reg.claim_device(CPU, run_id="rB", label="speed")
    assert refused["id"] is None and [b["run_id"] for b in refused["blockers"]] == ["rA"]
    reg.end_activity(run["id"])
    claim = reg.claim_device(CPU, run_id="rB", label="speed")
    assert claim["id"]
    # nothing starts on the device while the claim holds it: not another run, not a chat, not the claiming run
    for kind, rid in (("run", "rC"), ("chat", None), ("eval", "rB")):
        r = reg.begin_activity(CPU, kind, run_id=rid)
        assert r["id"] is None and r["held_by"]["id"] == claim["id"]
    assert reg.claim_device(CPU, run_id="rC")["id"] is None
    assert reg.begin_activity(devices.gpu(0), "run", run_id="rC")["id"]  # another device is not held
    assert set(reg.held_devices()) == {CPU}
    reg.end_activity(claim["id"])
    assert reg.begin_activity(CPU, "chat")["id"]
    assert not contended(reg)


def test_claims_from_many_processes_at_once_grant_one(fresh_home):
    """Eight claimers (each its own connection, as workers and runners are) race for one device: one wins."""
    won, barrier = [], threading.Barrier(8)

    def claim(i: int) -> None:
        r = Registry()
        barrier.wait()
        if r.claim_device(CPU, run_id=f"r{i}")["id"]:
            won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_an_activity_whose_process_stopped_beating_frees_the_device(fresh_home):
    reg = Registry()
    reg.ACTIVITY_STALE_S = 0.5
    reg.begin_activity(CPU, "run", run_id="dead")
    assert reg.claim_device(CPU)["id"] is None
    time.sleep(0.8)  # no heartbeat: its process died
    assert reg.claim_device(CPU)["id"]
    assert reg.device_activities(CPU)[0]["info"]["stale"] == 1


def test_a_measurement_waits_for_a_chat_and_defers_for_a_run(fresh_home):
    reg = Registry()
    chat = reg.begin_activity(CPU, "chat", label="chat with m")["id"]
    threading.Timer(1.0, reg.end_activity, args=(chat,)).start()
    with devices.exclusive(reg, CPU, run_id="rB", label="speed", wait_s=30, stage=False, poll_s=0.1) as c:
        assert c.granted and 0.8 < c.waited_s < 10 and c.waited_for == ["chat: chat with m"]
        cond = c.conditions(reg, threads=2)
    assert cond["alone"] and cond["grove_during"] == [] and cond["threads"] == 2 and cond["cpus"]
    assert cond["niceness"] == devices.niceness() == 0  # this test process runs at normal priority
    assert cond["load_before"] is not None and cond["other_cpu_during"] >= 0
    # a run's passes (training may take hours): deferred at once, with the reason
    reg.begin_activity(CPU, "run", run_id="rA", label="demo")
    t0 = time.monotonic()
    with devices.exclusive(reg, CPU, run_id="rB", wait_s=30, stage=False) as c:
        assert not c.granted and "busy with run of run rA: demo" in c.why
    assert time.monotonic() - t0 < 5
    assert not contended(reg)


def test_the_worker_starts_no_run_on_a_device_a_measurement_holds(fresh_home, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the stand-in runner is a module of tests/, as in test_worker
    monkeypatch.setenv("GROVE_RUNNER_MODULE", "tests.engine.fake_runner")
    reg = Registry()
    claim = reg.claim_device(CPU, label="speed of m")["id"]
    run = fake_run(reg, "ok")
    w = Worker(reg, LocalExecutor("tests.engine.fake_runner"), Slots(cpu=2, gpus=[]))
    w.start()
    for _ in range(4):
        w.tick()
        time.sleep(0.2)
    assert reg.get_run(run["id"])["status"] == "queued"
    reg.end_activity(claim)
    wait_for(lambda: reg.get_run(run["id"])["status"] == "succeeded", 60, w.tick, 0.2)


def test_grove_work_on_the_cpu_shares_its_cores_instead_of_each_taking_all(fresh_home):
    """Two runs (or a run and an evaluation) at once each get half the cores, not all of them: oversubscribed
    thread pools slowed the demo's two runs 4-14x on 2 cores (issue 21). A runner waiting for its own evaluation, an
    activity waiting for the device, and a GPU's work do not count; alone, a run gets every core back."""
    import torch

    reg = Registry()
    cores = 8
    assert devices.cpu_share(reg, cores=cores) == 8
    a = reg.begin_activity(CPU, "run", run_id="rA", label="LoRA")["id"]
    assert devices.cpu_share(reg, cores=cores) == 8  # the run itself: all of them
    b = reg.begin_activity(CPU, "run", run_id="rB", label="LoRA")["id"]
    assert devices.cpu_share(reg, cores=cores) == 4
    e = reg.begin_activity(CPU, "eval", run_id="rA", label="quality of m")["id"]
    assert devices.cpu_share(reg, cores=cores) == 4  # rA's runner only waits for its evaluation
    c = reg.begin_activity(CPU, "chat", label="chat")["id"]
    assert devices.cpu_share(reg, cores=cores) == 2
    reg.beat_activity(c, phase="waiting")
    reg.begin_activity(devices.gpu(0), "run", run_id="rG")
    assert devices.cpu_share(reg, cores=cores) == 4
    assert devices.cpu_share(reg, cores=1) == 1  # never below one thread
    # a runner's training thread follows the share, step by step
    before = torch.get_num_threads()
    try:
        share = devices.CpuShare(reg, every_s=0.2)
        share.active = True
        assert share.adjust() == max(1, devices.cpu_cores() // 2) == torch.get_num_threads()
        for i in (b, e, c):
            reg.end_activity(i)
        wait_for(lambda: share.adjust() == devices.cpu_cores() == torch.get_num_threads(), 60)
    finally:
        torch.set_num_threads(before)
    reg.end_activity(a)


def test_a_training_step_never_waits_for_the_registry_to_learn_its_cpu_share(fresh_home):
    """On the Ray executor a runner's registry reads are relayed to the head and answered at the worker's next poll
    (here: 1 s each). The training thread asks for its share at every step; after the first read it must not wait
    for an answer (it did: ~2 s of each 3.5 s LoRA step of the demo), while the share still follows the work."""
    import torch

    class Relayed(Registry):  # the real registry, each read answered a second late
        def device_activities(self, *a: Any, **kw: Any) -> Any:
            time.sleep(1.0)
            return super().device_activities(*a, **kw)

    reg = Relayed()
    mine = reg.begin_activity(CPU, "run", run_id="rA", label="LoRA")["id"]
    other = reg.begin_activity(CPU, "run", run_id="rB", label="LoRA")["id"]
    before = torch.get_num_threads()
    try:
        share = devices.CpuShare(reg, every_s=0.1)
        share.active = True
        first = share.adjust()  # the first read, at the start of training
        assert first == max(1, devices.cpu_cores() // 2)
        t0 = time.monotonic()
        for _ in range(50):
            share.adjust()
        assert time.monotonic() - t0 < 0.5, "the training thread waited for the registry"
        reg.end_activity(other)
        wait_for(lambda: share.adjust() == devices.cpu_cores() == torch.get_num_threads(), 60)
    finally:
        torch.set_num_threads(before)
    reg.end_activity(mine)


def test_compare_says_when_speed_figures_were_measured_under_different_conditions():
    alone = {"alone": True, "threads": 2, "other_cpu_during": 0.1}
    shared = {"alone": False, "threads": 2, "other_cpu_during": 0.1}
    busy = {"alone": True, "threads": 2, "other_cpu_during": 1.7}
    ok, why, pending = compare.speed_comparability({1: {"conditions": alone}, 2: {"conditions": alone}}, {1, 2})
    assert ok and not why and pending == 0
    ok, why, _ = compare.speed_comparability({1: {"conditions": alone}, 2: {"conditions": shared}}, {1, 2})
    assert not ok and "shared with other Grove work" in why and "device alone" in why
    ok, why, _ = compare.speed_comparability({1: {"conditions": alone}, 2: {"conditions": busy}}, {1, 2})
    assert not ok and "machine busy outside Grove" in why
    ok, why, pending = compare.speed_comparability({1: {"conditions": alone}, 2: {"pending": True}}, {1})
    assert ok and pending == 1
    # measured at lowered priority (a Ray worker's niceness 15 when the runner could not raise it)
    niced = {**alone, "niceness": 15}
    ok, why, _ = compare.speed_comparability({1: {"conditions": alone}, 2: {"conditions": niced}}, {1, 2})
    assert not ok and "niceness 15" in why
    assert compare.speed_comparability({1: {"conditions": alone}, 2: {"conditions": {**alone, "niceness": 0}}}, {1, 2})[0]


@pytest.mark.slow
def test_two_real_runs_at_once_never_record_a_contended_speed(demo, monkeypatch):
    """Two lab runs on the tiny model with two CPU slots, one with a much longer LoRA: the short one measures its
    candidates while the long one trains. Every speed figure was measured under a claim whose interval overlaps no
    other Grove activity on the CPU, the measurements that met the training run were deferred ("speed pending") and
    then measured by the worker, and every figure records its conditions."""
    from engine.runs import submit as service
    from engine.spec import recipes
    from engine.spec.schema import parse_spec

    monkeypatch.setenv("GROVE_SPEED_WAIT_S", "120")
    reg = Registry()
    runs = []
    for steps in (3, 40):
        d = recipes.lab_recipe(demo["model"], demo["dataset"], name=f"speed claims {steps}", max_steps=steps, lora_r=2)
        d["evaluation"] = {"enabled": True, "max_eval_samples": 3, "prompt_length": 32, "generation_length": 8,
                           "repeats": 1, "metrics": [{"name": "rouge_l", "priority": 1}, {"name": "decode_tps", "priority": 2}]}
        runs.append(service.submit(parse_spec(d))["id"])
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=2, gpus=[]))
    stages: set[str] = set()
    w.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 900:
        w.tick()
        stages |= {r["stage"] for r in reg.list_runs()}
        if (all(reg.get_run(r)["status"] in ("succeeded", "failed") for r in runs) and w.measuring is None
                and not w.pending_here()):
            break
        time.sleep(0.2)
    for r in runs:
        assert reg.get_run(r)["status"] == "succeeded", reg.get_run(r)["error_message"]
    acts = reg.device_activities(CPU)
    measures = [a for a in acts if a["exclusive"]]
    assert measures and {a["kind"] for a in acts} >= {"run", "eval", "measure"}
    runs_overlapped = [(a, b) for a in acts for b in acts if a["kind"] == "run" and b["kind"] == "run"
                       and a["run_id"] < b["run_id"] and overlaps(a, b)]
    assert runs_overlapped, "the two runs never ran at once: nothing was tested"
    assert not contended(reg), [(m["label"], o["kind"], o["label"]) for m, o in contended(reg)]
    assert not reg.pending_speed(statuses=("pending", "running")), reg.pending_speed(statuses=("pending", "running"))
    deferred = reg.pending_speed(statuses=("done",))
    assert deferred, "no measurement met the other run's training: nothing was deferred"
    assert all("busy with run of run" in p["reason"] for p in deferred), [p["reason"] for p in deferred]
    speed = [c for r in runs for c in reg.candidates(r) if "decode_tps" in c["metrics"]]
    assert len(speed) >= 6
    states = reg.speed_state([c["id"] for c in speed])
    for c in speed:
        cond = states[c["id"]]["conditions"]
        assert cond["alone"] and cond["device"] == CPU and cond["threads"] and not states[c["id"]]["pending"], cond
        assert c["metrics"]["decode_tps"] > 0
    print("deferred:", [p["model_path"] for p in reg.pending_speed(statuses=("done",))], "stages:", sorted(stages))

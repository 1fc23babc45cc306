"""GPU scheduling with real runs: two runs at once, each on its own GPU; a third waits; too many GPUs is refused at
submit; chat does not take a GPU a run is using unless the model fits in its free memory."""

from __future__ import annotations

import json
import time

import pytest

from engine import machine
from engine.chat import cache as chat
from engine.errors import GroveError
from engine.runs import submit as service
from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.worker import Slots, Worker
from engine.spec import recipes
from engine.spec.schema import parse_spec

from .conftest import gpu_count, gpu_spec, run_log

pytestmark = pytest.mark.skipif(gpu_count() < 2, reason="needs two GPUs")


def _lora_spec(demo, name, steps):
    # distinct steps: an identical spec would be completed from the earlier run's result instead of running
    s = gpu_spec(recipes.finetune_only("gpu"), demo, max_steps=steps, per_device_train_batch_size=16)
    s["name"] = name
    return parse_spec(s)


def test_two_runs_on_two_gpus_third_waits_and_too_many_is_refused(demo):
    n = len(machine.detect_gpus())
    with pytest.raises(GroveError, match=rf"resources.gpus asks for {n + 1} GPU\(s\); this machine has {n}"):
        service.submit(parse_spec({**gpu_spec(recipes.finetune_only("gpu"), demo), "resources": {"gpus": n + 1}}))
    reg = Registry()
    runs = [service.submit(_lora_spec(demo, f"sched {i}", 400 + i)) for i in range(3)]
    ids = [r["id"] for r in runs]
    w = Worker(reg, LocalExecutor("engine.runs.runner"), Slots(cpu=1, gpus=machine.detect_gpus()[:2]))
    w.start()
    saw_two_running_one_queued = False
    t0 = time.monotonic()
    while time.monotonic() - t0 < 900:
        w.tick()
        rows = [reg.get_run(i) for i in ids]
        st = [r["status"] for r in rows]
        if st.count("running") == 2 and st.count("queued") == 1:
            saw_two_running_one_queued = True
            busy = chat._busy_gpus()
            assert sorted(busy) == [0, 1]
            # a model needing more than any GPU's free memory is refused a GPU, with the runs named
            dev, why = chat.choose_device(10**15, prefer="gpu")
            assert dev == "cpu" and "busy with run" in why
            # a small model fits beside the run and may share its GPU
            dev, why = chat.choose_device(50 * 2**20, prefer="gpu")
            assert dev.startswith("cuda:") and "shared with run" in why
        if all(s in ("succeeded", "failed", "cancelled") for s in st):
            break
        time.sleep(0.2)
    rows = [reg.get_run(i) for i in ids]
    for r in rows:
        assert r["status"] == "succeeded", f"{r['error_message']}\n{run_log(r)}"
    assert saw_two_running_one_queued
    gpus = [json.loads(r["gpus"]) for r in rows]
    first_two = sorted(rows, key=lambda r: r["started_at"])[:2]
    assert sorted(json.loads(r["gpus"])[0] for r in first_two) == [0, 1], gpus
    a, b = first_two
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]  # they overlapped
    third = max(rows, key=lambda r: r["started_at"])
    assert third["started_at"] >= min(a["finished_at"], b["finished_at"]) - 1.0  # it waited for a free GPU

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from engine.runs.executors import LocalExecutor
from engine.runs.registry import Registry
from engine.runs.worker import Slots, Worker


def fake_run(reg: Registry, mode: str, gpus: int = 0) -> dict:
    """A queued run for the stand-in runner (tests/engine/fake_runner.py)."""
    return reg.create_run(spec_json="{}", spec_hash=f"fake-{time.time_ns()}", name=f"fake:{mode}",
                          olive_config=json.dumps({"passes": {}, "output_dir": "/nonexistent"}), gpus_wanted=gpus)


def wait_for(pred: Callable[[], bool], timeout: float, tick: Callable[[], None] | None = None, step: float = 0.1) -> float:
    """Seconds until pred() holds (calling tick() between polls); fails the test after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if tick:
            tick()
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def make_worker() -> Worker:
    return Worker(Registry(), LocalExecutor("engine.runs.runner"), Slots(cpu=1, gpus=[]))


def run_to_end(run_id: str, timeout: float = 300) -> dict:
    w = make_worker()
    w.start()
    reg = Registry()
    wait_for(lambda: reg.get_run(run_id)["status"] in ("succeeded", "failed", "cancelled"), timeout, w.tick, 0.2)
    return reg.get_run(run_id)


def generate(folder: str, adapter: str | None, question: str = "What should I see in Lisbon?") -> str:
    import onnxruntime_genai as og

    model = og.Model(folder)
    tok = og.Tokenizer(model)
    adapters = og.Adapters(model)
    adapters.load(str(Path(folder) / "adapter_weights.onnx_adapter"), "travel")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=96, do_sample=False)
    gen = og.Generator(model, params)
    if adapter:
        gen.set_active_adapter(adapters, adapter)
    prompt = tok.apply_chat_template(json.dumps([{"role": "user", "content": question}]), add_generation_prompt=True)
    gen.append_tokens(tok.encode(prompt))
    out = []
    while not gen.is_done():
        gen.generate_next_token()
        out.append(gen.get_next_tokens()[0])
    return tok.decode(out)


def registry_at_schema(home: Path, version: int):
    """A ``grove.db`` in ``home`` as a Grove of schema ``version`` left it (the migrations up to it, nothing after),
    open for a test to write old rows into; close it before opening a Registry on it."""
    import sqlite_utils

    from engine.runs.registry import MIGRATIONS

    home.mkdir(parents=True)
    db = sqlite_utils.Database(home / "grove.db")
    for v in range(1, version + 1):
        MIGRATIONS[v](db)
    db.conn.execute(f"PRAGMA user_version={version}")
    return db

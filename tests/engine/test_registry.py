from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest

from engine.errors import RunNotFound, RunStateError
from engine.runs import registry as registry_mod
from engine.runs.registry import Registry

from .helpers import fake_run, registry_at_schema


def test_new_registry_is_wal_with_schema_version(fresh_home):
    reg = Registry()
    assert reg.schema_version() == registry_mod.SCHEMA_VERSION
    with reg.db() as db:
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {"runs", "candidates", "events", "workers"} <= set(db.table_names())


def test_newer_schema_is_refused_not_touched(fresh_home):
    reg = Registry()
    with reg.db() as db:
        db.conn.execute("PRAGMA user_version=99")
    with pytest.raises(RuntimeError, match="newer than this Grove"):
        Registry()


def test_a_registry_of_the_previous_schema_is_upgraded_and_keeps_its_rows(fresh_home):
    """Schema 4 -> 5: a run's evaluation links gain the adapter; links written before keep working (adapter "")."""

    path = fresh_home / "grove.db"
    db = registry_at_schema(fresh_home, 4)
    db["evaluations"].insert({"key": "k1", "model_path": "/m", "fingerprint_id": "f1", "failed": "{}"})
    db["run_evaluations"].insert({"run_id": "r1", "model_path": "/m", "key": "k1"})
    db.conn.commit()
    db.conn.close()
    reg = Registry(path)
    assert reg.schema_version() == registry_mod.SCHEMA_VERSION
    assert reg.run_evaluations("r1")[("/m", "")]["key"] == "k1"
    reg.link_evaluation("r1", "/m", "k1", adapter="/m/adapter")  # the same folder with an adapter: a second link
    assert set(reg.run_evaluations("r1")) == {("/m", ""), ("/m", "/m/adapter")}


def test_schema_5_gains_device_activities_and_keeps_its_evaluations(fresh_home):
    """Schema 5 -> 6: device activities and deferred speed measurements; evaluations keep their rows and numbers
    (their speed conditions unknown: Compare says 'conditions not recorded')."""

    path = fresh_home / "grove.db"
    db = registry_at_schema(fresh_home, 5)
    db["evaluations"].insert({"key": "k1", "model_path": "/m", "fingerprint_id": "f1", "failed": "{}",
                              "metrics": '{"decode_tps": 30.0}'})
    db.conn.commit()
    db.conn.close()
    reg = Registry(path)
    assert reg.schema_version() == registry_mod.SCHEMA_VERSION
    ev = reg.get_evaluation("k1")
    assert ev["metrics"] == {"decode_tps": 30.0} and ev["speed_conditions"] is None
    assert reg.claim_device("cpu@h")["id"] and reg.held_devices().keys() == {"cpu@h"}
    assert reg.pending_speed() == []


def test_state_machine(fresh_home):
    reg = Registry()
    r = fake_run(reg, "ok")
    assert r["status"] == "queued"
    with pytest.raises(RunStateError):
        reg.transition(r["id"], "succeeded")  # queued cannot succeed without running
    reg.transition(r["id"], "running")
    reg.transition(r["id"], "failed", error_type="x", error_message="boom")
    with pytest.raises(RunStateError, match="is failed"):
        reg.transition(r["id"], "running")
    with pytest.raises(RunStateError):
        reg.request_cancel(r["id"])
    kinds = [e["data"]["status"] for e in reg.events(r["id"], kinds=["status"])]
    assert kinds == ["queued", "running", "failed"]
    with pytest.raises(RunNotFound):
        reg.get_run("nope")


def test_cancel_queued_is_immediate(fresh_home):
    reg = Registry()
    r = fake_run(reg, "ok")
    assert reg.request_cancel(r["id"])["status"] == "cancelled"
    assert reg.claim("w", lambda run: []) is None


def _claimer(home: str, n: int, q) -> None:
    import os

    os.environ["GROVE_HOME"] = home
    reg = Registry()
    got = []
    while True:
        r = reg.claim(f"w{n}", lambda run: [])
        if r is None:
            break
        got.append(r["id"])
    q.put(got)


def test_claims_are_atomic_across_processes(fresh_home):
    reg = Registry()
    ids = {fake_run(reg, "ok")["id"] for _ in range(40)}
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_claimer, args=(str(fresh_home), i, q)) for i in range(3)]
    for p in procs:
        p.start()
    claimed = [x for _ in procs for x in q.get(timeout=60)]
    for p in procs:
        p.join()
    assert sorted(claimed) == sorted(ids)  # every run claimed exactly once
    assert len(set(claimed)) == len(claimed)


def test_failed_write_leaves_old_state(fresh_home):
    reg = Registry()
    r = fake_run(reg, "ok")
    with pytest.raises(sqlite3.IntegrityError):
        with reg.tx() as db:
            db["runs"].update(r["id"], {"status": "running"})
            db["events"].insert({"id": 1, "run_id": r["id"], "ts": 0, "kind": "x", "data": "{}"})  # id 1 exists
    assert reg.get_run(r["id"])["status"] == "queued"


def test_candidates_round_trip(fresh_home):
    reg = Registry()
    r = fake_run(reg, "ok")
    reg.upsert_candidates(r["id"], [{"model_id": "m1", "pass_chain": ["lora"], "pass_params": {"r": 16}, "metrics": {"ppl": 3.5}, "size_bytes": 10}])
    reg.upsert_candidates(r["id"], [{"model_id": "m1", "pass_chain": ["lora"], "pass_params": {"r": 16}, "metrics": {"ppl": 3.4}, "size_bytes": 10}])
    (c,) = reg.candidates(r["id"])
    assert c["pass_params"] == {"r": 16} and c["metrics"] == {"ppl": 3.4}
    assert json.loads(reg.get_run(r["id"])["olive_config"])["passes"] == {}

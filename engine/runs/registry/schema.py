"""The registry's schema: its version and the migrations that build it, one per version (a registry of an older
schema is upgraded on open, keeping its rows), the run statuses and the transitions allowed between them."""

from __future__ import annotations

import secrets
import time

import sqlite_utils

SCHEMA_VERSION = 7
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
TRANSITIONS = {
    "queued": {"running", "cancelled", "failed"},
    "running": {"succeeded", "failed", "cancelled", "queued"},  # queued: recovered after a worker crash
    "succeeded": set(),
    "failed": set(),
    "cancelled": set(),
}


def now() -> float:
    return time.time()


def new_run_id() -> str:
    # 32 random bits: runs created in the same second by several processes must not collide (16 bits did, in CI)
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "id": str,
            "name": str,
            "status": str,
            "spec": str,
            "spec_hash": str,
            "olive_config": str,
            "data_dir": str,
            "gpus_wanted": int,
            "gpus": str,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
            "heartbeat_at": float,
            "worker_id": str,
            "pid": int,
            "attempts": int,
            "cancel_requested": int,
            "exit_code": int,
            "stage": str,
            "progress": float,
            "log_path": str,
            "run_dir": str,
            "error_type": str,
            "error_message": str,
            "parent_run": str,
        },
        pk="id",
        not_null={"status", "spec", "created_at"},
        defaults={"attempts": 0, "cancel_requested": 0, "gpus_wanted": 0, "progress": 0.0},
    )
    db["runs"].create_index(["status", "created_at"])
    db["candidates"].create(
        {
            "id": int,
            "run_id": str,
            "model_id": str,
            "parent_model_id": str,
            "from_pass": str,
            "pass_chain": str,
            "pass_params": str,
            "path": str,
            "adapter_path": str,
            "model_type": str,
            "size_bytes": int,
            "metrics": str,
            "is_output": int,
            "pareto": int,
            "goals_met": int,
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["candidates"].create_index(["run_id", "model_id"], unique=True)
    db["events"].create(
        {"id": int, "run_id": str, "ts": float, "kind": str, "data": str},
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["events"].create_index(["run_id", "id"])
    db["workers"].create(
        {"id": str, "pid": int, "host": str, "started_at": float, "heartbeat_at": float, "slots": str, "stopped_at": float},
        pk="id",
    )


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Evaluations (reused per model + adapter + fingerprint) and chat feedback."""
    db["evaluations"].create(
        {"key": str, "model_path": str, "adapter": str, "form": str, "fingerprint_id": str, "fingerprint": str,
         "metrics": str, "failed": str, "samples": str, "seconds": float, "created_at": float},
        pk="key",
    )
    db["evaluations"].create_index(["model_path"])
    db["feedback"].create(
        {"id": int, "ts": float, "run_id": str, "candidate_id": int, "model_path": str, "adapter": str,
         "backend": str, "system_prompt": str, "prompt": str, "answer": str, "rating": int, "comment": str,
         "settings": str, "stats": str},
        pk="id",
    )
    db["feedback"].create_index(["candidate_id", "ts"])
    db["candidates"].add_column("fingerprint_id", str)
    db["candidates"].add_column("failed", str)
    db["candidates"].add_column("eval_key", str)


def _migrate_3(db: sqlite_utils.Database) -> None:
    """Which evaluation each run's workflow asked for, by model folder: the runner joins candidates on it."""
    db["run_evaluations"].create({"run_id": str, "model_path": str, "key": str}, pk=("run_id", "model_path"))


def _migrate_4(db: sqlite_utils.Database) -> None:
    """Durable runs: notices that belong to no run (the worker restarted, a tick failed), for the UI and the log."""
    db["notices"].create({"id": int, "ts": float, "kind": str, "message": str, "data": str}, pk="id")
    db["notices"].create_index(["kind", "ts"])


def _migrate_5(db: sqlite_utils.Database) -> None:
    """A run's evaluations by model folder *and adapter*: a base model and the same folder with a LoRA adapter are two
    evaluations (the second overwrote the first's link, so one of the two candidates lost its fingerprint)."""
    db["run_evaluations"].add_column("adapter", str, not_null_default="")
    db["run_evaluations"].transform(pk=("run_id", "model_path", "adapter"))


def _migrate_6(db: sqlite_utils.Database) -> None:
    """Speed measured with the device to itself: every Grove activity on a device (heart-beaten rows, swept when
    stale), exclusive claims among them, the conditions each speed figure was measured under, and the speed
    measurements deferred until their device is free."""
    db["device_activity"].create(
        {"id": int, "device": str, "kind": str, "exclusive": int, "run_id": str, "phase": str, "label": str,
         "host": str, "pid": int, "started_at": float, "heartbeat_at": float, "ended_at": float, "info": str},
        pk="id", defaults={"exclusive": 0, "phase": "busy"},
    )
    db["device_activity"].create_index(["device", "ended_at"])
    db["evaluations"].add_column("speed_conditions", str)
    db["speed_pending"].create(
        {"key": str, "model_path": str, "adapter": str, "config": str, "device": str, "host": str, "run_id": str,
         "metrics": str, "reason": str, "status": str, "tries": int, "created_at": float, "done_at": float},
        pk="key", defaults={"status": "pending", "tries": 0},
    )


def _migrate_7(db: sqlite_utils.Database) -> None:
    """A team's Grove: who launched each run and who gave each vote or chat feedback (NULL in rows from before: nobody
    was recorded), and the access log: sign-ins, refusals and the actions on others' runs (who, what, when)."""
    db["runs"].add_column("user", str)
    db["runs"].create_index(["user", "created_at"])
    db["feedback"].add_column("user", str)
    db["access_log"].create(
        {"id": int, "ts": float, "user": str, "role": str, "action": str, "target": str, "allowed": int,
         "detail": str},
        pk="id",
    )
    db["access_log"].create_index(["ts"])


MIGRATIONS = {1: _migrate_1, 2: _migrate_2, 3: _migrate_3, 4: _migrate_4, 5: _migrate_5, 6: _migrate_6, 7: _migrate_7}

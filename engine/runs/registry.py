"""The run registry: SQLite (WAL, busy timeout) through sqlite-utils, with a schema version and migrations.

Tables:
- ``runs``: one row per run; ``status`` moves queued -> running -> succeeded | failed | cancelled
  (queued -> cancelled too). Only the transitions in ``TRANSITIONS`` are allowed, each in one transaction.
- ``candidates``: every model a run produced (path, pass chain, parent, parameters, size, metrics).
- ``events``: what happened, in order (pass started/finished, training step/loss/lr, evaluation, log lines).
- ``workers``: worker heartbeats.
- ``device_activity``: what Grove does on each device (a run's passes, an evaluation, a chat answer) and the
  exclusive claims speed measurements take (engine/runs/devices.py); ``speed_pending``: speed measurements
  deferred until their device is free.

Connections are opened per operation, so the registry is safe to use from Streamlit's threads, the worker
and every runner process at once. Every write is a single transaction: a crash leaves the old state or the new.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from engine import paths
from engine.errors import RunNotFound, RunStateError

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


class Registry:
    """All reads and writes of ``grove.db``. Cheap to create; holds no connection."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or paths.db_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # -- connections -------------------------------------------------------------------------------------
    @contextmanager
    def db(self) -> Iterator[sqlite_utils.Database]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            yield sqlite_utils.Database(conn)
        finally:
            conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so concurrent writers queue instead of failing."""
        with self.db() as db:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.db() as db:
            db.conn.execute("PRAGMA journal_mode=WAL")
        with self.tx() as db:
            version = db.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this Grove ({SCHEMA_VERSION}): upgrade Grove"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](db)
                db.conn.execute(f"PRAGMA user_version={v}")

    def schema_version(self) -> int:
        with self.db() as db:
            return db.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- runs --------------------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        spec_json: str,
        spec_hash: str,
        name: str,
        olive_config: str,
        gpus_wanted: int,
        data_dir: str = "",
        parent_run: str | None = None,
        run_id: str | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        run_id = run_id or new_run_id()
        rd = paths.run_dir(run_id)
        row = {
            "id": run_id,
            "name": name,
            "status": "queued",
            "spec": spec_json,
            "spec_hash": spec_hash,
            "olive_config": olive_config,
            "data_dir": data_dir,
            "gpus_wanted": gpus_wanted,
            "gpus": "[]",
            "created_at": now(),
            "run_dir": str(rd),
            "log_path": str(rd / "run.log"),
            "parent_run": parent_run,
            "stage": "queued",
            "user": user,
        }
        with self.tx() as db:
            db["runs"].insert(row)
            db["events"].insert({"run_id": run_id, "ts": row["created_at"], "kind": "status", "data": json.dumps({"status": "queued"})})
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> dict[str, Any]:
        with self.db() as db:
            rows = list(db.query("select * from runs where id = ?", [run_id]))
        if not rows:
            raise RunNotFound(f"no run '{run_id}'")
        return rows[0]

    def find_run(self, prefix: str) -> dict[str, Any]:
        """A run by id or unique id prefix (as typed on the command line)."""
        with self.db() as db:
            rows = list(db.query("select id from runs where id = ? or id like ? order by created_at desc limit 2", [prefix, prefix + "%"]))
        if not rows:
            raise RunNotFound(f"no run '{prefix}'")
        if len(rows) > 1 and rows[0]["id"] != prefix:
            raise RunNotFound(f"'{prefix}' matches more than one run; type more of the id")
        return self.get_run(rows[0]["id"])

    def list_runs(self, *, status: list[str] | None = None, limit: int = 100, offset: int = 0,
                  user: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first, of the given statuses and of one person (who launched them) when given."""
        cols = "id, name, status, stage, progress, created_at, started_at, finished_at, gpus_wanted, gpus, error_type, error_message, pid, worker_id, user"
        sql = f"select {cols} from runs"
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append("status in (%s)" % ",".join("?" * len(status)))
            args += status
        if user:
            where.append("user = ?")
            args.append(user)
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by created_at desc limit ? offset ?"
        args += [limit, offset]
        with self.db() as db:
            return list(db.query(sql, args))

    def count_runs(self, user: str | None = None) -> dict[str, int]:
        sql, args = "select status, count(*) n from runs", []
        if user:
            sql, args = sql + " where user = ?", [user]
        with self.db() as db:
            return {r["status"]: r["n"] for r in db.query(sql + " group by status", args)}

    def people(self) -> list[str]:
        """Everyone who launched a run, by name."""
        with self.db() as db:
            return [r["user"] for r in db.query("select distinct user from runs where user is not null order by user")]

    # -- access log ----------------------------------------------------------------------------------------
    def record_access(self, user: str, role: str | None, action: str, *, target: str = "", allowed: bool = True,
                      detail: str = "") -> None:
        """One line of the access log: a sign-in (allowed or refused), a refused action, an action on a run."""
        with self.tx() as db:
            db["access_log"].insert({"ts": now(), "user": user, "role": role or "", "action": action,
                                     "target": target, "allowed": int(allowed), "detail": detail})

    def access_log(self, *, limit: int = 200, user: str | None = None) -> list[dict[str, Any]]:
        """The access log newest first (of one person when given); ``allowed`` as a bool."""
        sql, args = "select * from access_log", []
        if user:
            sql, args = sql + " where user = ?", [user]
        with self.db() as db:
            rows = list(db.query(sql + " order by id desc limit ?", [*args, limit]))
        return [{**r, "allowed": bool(r["allowed"])} for r in rows]

    def transition(self, run_id: str, to: str, *, expect: tuple[str, ...] | None = None, **fields: Any) -> dict[str, Any]:
        """Move a run to status ``to`` (and set ``fields``) in one transaction, if the state machine allows it."""
        with self.tx() as db:
            rows = list(db.query("select status from runs where id = ?", [run_id]))
            if not rows:
                raise RunNotFound(f"no run '{run_id}'")
            cur = rows[0]["status"]
            if (expect and cur not in expect) or to not in TRANSITIONS[cur]:
                raise RunStateError(f"run {run_id} is {cur}; it cannot become {to}")
            upd = {"status": to, **fields}
            if to in ("succeeded", "failed", "cancelled"):
                upd.setdefault("finished_at", now())
                upd.setdefault("stage", to)
            db["runs"].update(run_id, upd)
            db["events"].insert({"run_id": run_id, "ts": now(), "kind": "status", "data": json.dumps({"status": to, **{k: v for k, v in fields.items() if k in ("error_type", "error_message", "exit_code")}})})
        return self.get_run(run_id)

    def claim(self, worker_id: str, fits: Any) -> dict[str, Any] | None:
        """Atomically take the oldest queued run for which ``fits(run) -> gpus list | None`` finds room."""
        with self.tx() as db:
            for run in db.query("select id, gpus_wanted from runs where status = 'queued' and cancel_requested = 0 order by created_at, id"):
                gpus = fits(run)
                if gpus is None:
                    continue
                self._take(db, run["id"], worker_id, gpus)
                break
            else:
                return None
        return self.get_run(run["id"])

    def _take(self, db: sqlite_utils.Database, run_id: str, worker_id: str, gpus: list[int]) -> None:
        """Inside a claim's transaction: the run is now this worker's, on these GPUs."""
        db["runs"].update(
            run_id,
            {"status": "running", "worker_id": worker_id, "started_at": now(), "heartbeat_at": now(),
             "gpus": json.dumps(gpus), "stage": "starting", "attempts": (self._attempts(db, run_id) + 1)},
        )
        db["events"].insert({"run_id": run_id, "ts": now(), "kind": "status", "data": json.dumps({"status": "running", "gpus": gpus})})

    @staticmethod
    def _attempts(db: sqlite_utils.Database, run_id: str) -> int:
        return next(db.query("select attempts from runs where id = ?", [run_id]))["attempts"] or 0

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.tx() as db:
            db["runs"].update(run_id, fields)

    def heartbeat(self, run_id: str, **fields: Any) -> None:
        self.update_run(run_id, heartbeat_at=now(), **fields)

    def request_cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel: a queued run becomes cancelled at once; a running run is flagged for its worker to stop."""
        with self.tx() as db:
            rows = list(db.query("select status from runs where id = ?", [run_id]))
            if not rows:
                raise RunNotFound(f"no run '{run_id}'")
            cur = rows[0]["status"]
            if cur == "queued":
                db["runs"].update(run_id, {"status": "cancelled", "finished_at": now(), "stage": "cancelled", "cancel_requested": 1})
                db["events"].insert({"run_id": run_id, "ts": now(), "kind": "status", "data": json.dumps({"status": "cancelled"})})
            elif cur == "running":
                db["runs"].update(run_id, {"cancel_requested": 1})
                db["events"].insert({"run_id": run_id, "ts": now(), "kind": "cancel_requested", "data": "{}"})
            else:
                raise RunStateError(f"run {run_id} is already {cur}")
        return self.get_run(run_id)

    # -- events ------------------------------------------------------------------------------------------
    def add_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None, ts: float | None = None) -> None:
        with self.tx() as db:
            db["events"].insert({"run_id": run_id, "ts": ts or now(), "kind": kind, "data": json.dumps(data or {}, default=str)})

    def add_events(self, run_id: str, events: list[tuple[float, str, dict[str, Any]]]) -> None:
        if not events:
            return
        with self.tx() as db:
            db["events"].insert_all({"run_id": run_id, "ts": ts, "kind": k, "data": json.dumps(d, default=str)} for ts, k, d in events)

    def events(self, run_id: str, *, kinds: list[str] | None = None, after_id: int = 0, limit: int = 10000) -> list[dict[str, Any]]:
        sql = "select id, ts, kind, data from events where run_id = ? and id > ?"
        args: list[Any] = [run_id, after_id]
        if kinds:
            sql += " and kind in (%s)" % ",".join("?" * len(kinds))
            args += kinds
        sql += " order by id limit ?"
        args.append(limit)
        with self.db() as db:
            out = list(db.query(sql, args))
        for e in out:
            e["data"] = json.loads(e["data"] or "{}")
        return out

    # -- candidates --------------------------------------------------------------------------------------
    def upsert_candidates(self, run_id: str, cands: list[dict[str, Any]]) -> None:
        rows = []
        for c in cands:
            r = {"run_id": run_id, "created_at": now(), **c}
            for k in ("pass_chain", "pass_params", "metrics", "failed"):
                if k in r and not isinstance(r[k], str):
                    r[k] = json.dumps(r[k], default=str)
            rows.append(r)
        with self.tx() as db:
            for r in rows:
                existing = list(db.query("select id from candidates where run_id = ? and model_id = ?", [run_id, r["model_id"]]))
                if existing:
                    db["candidates"].update(existing[0]["id"], r)
                else:
                    db["candidates"].insert(r)

    def candidates(self, run_id: str | None = None, *, limit: int = 100000) -> list[dict[str, Any]]:
        sql = "select * from candidates"
        args: list[Any] = []
        if run_id:
            sql += " where run_id = ?"
            args.append(run_id)
        sql += " order by id limit ?"
        args.append(limit)
        with self.db() as db:
            out = list(db.query(sql, args))
        for c in out:
            for k in ("pass_chain", "pass_params", "metrics", "failed"):
                c[k] = json.loads(c[k]) if c.get(k) else ({} if k != "pass_chain" else [])
        return out

    # -- evaluations, feedback ---------------------------------------------------------------------------
    def get_evaluation(self, key: str) -> dict[str, Any] | None:
        with self.db() as db:
            rows = list(db.query("select * from evaluations where key = ?", [key]))
        if not rows:
            return None
        r = rows[0]
        for k in ("fingerprint", "metrics", "failed", "samples", "speed_conditions"):
            r[k] = json.loads(r[k] or "null")
        return r

    def save_evaluation(self, key: str, result: dict[str, Any], fingerprint_id: str) -> None:
        row = {
            "key": key, "model_path": result["model_path"], "adapter": result.get("adapter"), "form": result["form"],
            "fingerprint_id": fingerprint_id, "created_at": now(), "seconds": result.get("seconds", 0.0),
            **{k: json.dumps(result.get(k), default=float) for k in ("fingerprint", "metrics", "failed", "samples")},
            "speed_conditions": json.dumps(result["conditions"]) if result.get("conditions") else None,
        }
        with self.tx() as db:
            db["evaluations"].upsert(row, pk="key")

    def succeeded_twin(self, spec_hash: str, exclude: str) -> dict[str, Any] | None:
        """The latest succeeded run with this spec hash (one that ran, before one that was itself reused)."""
        with self.db() as db:
            rows = list(db.query(
                "select id, olive_config from runs where spec_hash = ? and status = 'succeeded' and id != ? "
                "order by (stage = 'succeeded (reused)'), finished_at desc limit 1", [spec_hash, exclude]))
        return rows[0] if rows else None

    def link_evaluation(self, run_id: str, model_path: str, key: str, adapter: str | None = None) -> None:
        """Record that run ``run_id`` evaluated the model in ``model_path`` (with ``adapter``) as evaluation ``key``."""
        with self.tx() as db:
            db["run_evaluations"].upsert({"run_id": run_id, "model_path": str(model_path), "adapter": adapter or "",
                                          "key": key}, pk=("run_id", "model_path", "adapter"))

    def run_evaluations(self, run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The evaluations a run's workflow asked for, by (model folder, adapter or "")."""
        with self.db() as db:
            rows = db.query(
                "select l.model_path as folder, l.adapter, e.key, e.fingerprint_id, e.failed, e.metrics, "
                "p.metrics as pending "
                "from run_evaluations l join evaluations e on e.key = l.key left join speed_pending p "
                "on p.key = l.key and p.status in ('pending', 'running') where l.run_id = ?", [run_id])
            return {(r["folder"], r["adapter"] or ""): {**r, "failed": json.loads(r["failed"] or "null"),
                                                         "metrics": json.loads(r["metrics"] or "{}"),
                                                         "pending": json.loads(r["pending"] or "[]")} for r in rows}

    def fingerprints(self, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Evaluation fingerprints by id (what each candidate's numbers were measured with)."""
        sql, args = "select fingerprint_id, fingerprint from evaluations", []
        if ids is not None:
            sql += " where fingerprint_id in (%s)" % ",".join("?" * len(ids))
            args = list(ids)
        with self.db() as db:
            return {r["fingerprint_id"]: json.loads(r["fingerprint"]) for r in db.query(sql + " group by fingerprint_id", args)}

    def feedback(self, model_path: str | None = None) -> list[dict[str, Any]]:
        sql, args = "select * from feedback", []
        if model_path:
            sql += " where model_path = ?"
            args.append(model_path)
        with self.db() as db:
            return list(db.query(sql + " order by id", args))

    # -- chat feedback -----------------------------------------------------------------------------------
    # Thumbs up/down per chat answer (engine.chat.feedback builds the rows; schema 2's ``feedback`` table).
    def add_feedback(self, row: dict[str, Any]) -> int:
        """Insert one feedback row; returns its id."""
        with self.tx() as db:
            return int(db["feedback"].insert(row).last_pk)

    def chat_feedback(
        self, *, candidate_id: int | None = None, model_path: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Feedback newest first, of one candidate and/or model folder when given; settings and stats decoded
        (``{}`` for rows saved without them)."""
        filters = {"candidate_id": candidate_id, "model_path": model_path or None}
        where = [f"{k} = ?" for k, v in filters.items() if v is not None]
        args = [v for v in filters.values() if v is not None]
        sql = "select * from feedback" + (" where " + " and ".join(where) if where else "")
        with self.db() as db:
            rows = list(db.query(sql + " order by id desc limit ?", [*args, limit]))
        for row in rows:
            row["settings"] = json.loads(row.get("settings") or "{}")
            row["stats"] = json.loads(row.get("stats") or "{}")
        return rows

    # -- read models for the pages ---------------------------------------------------------------------------
    # Reads the dashboard (engine.views, app.services) needs beyond the ones above; only this module writes SQL.
    def count_candidates(self) -> int:
        with self.db() as db:
            return next(db.query("select count(*) n from candidates"))["n"]

    def recent_durations(self, name: str, limit: int = 5) -> list[float]:
        """Seconds the last ``limit`` succeeded runs named ``name`` took, newest first."""
        with self.db() as db:
            rows = db.query(
                "select finished_at - started_at d from runs where name = ? and status = 'succeeded' "
                "and started_at is not null order by created_at desc limit ?",
                [name, limit],
            )
            return [r["d"] for r in rows]

    def pass_finished(self, name: str, exclude_run: str, limit: int = 5) -> list[dict[str, Any]]:
        """The data of the last ``limit`` pass_finished events of pass ``name`` in other runs, newest first."""
        with self.db() as db:
            rows = list(
                db.query(
                    "select data from events where kind = 'pass_finished' and run_id != ? "
                    "and json_extract(data, '$.name') = ? order by id desc limit ?",
                    [exclude_run, name, limit],
                )
            )
        return [json.loads(r["data"]) for r in rows]

    def recent_specs(self, limit: int = 50) -> list[str]:
        """The spec JSON of the latest ``limit`` runs, newest first."""
        with self.db() as db:
            return [r["spec"] for r in db.query("select spec from runs order by created_at desc limit ?", [limit])]

    def measured_runs(self) -> list[dict[str, Any]]:
        """Runs with at least one measured candidate, newest first: id, name, user, candidates (how many have metrics)."""
        sql = (
            "select r.id, r.name, r.user, count(*) as candidates from candidates c join runs r on r.id = c.run_id"
            " where c.metrics is not null and c.metrics not in ('', '{}', 'null') group by r.id order by r.created_at desc"
        )
        with self.db() as db:
            return list(db.query(sql))

    # -- compare and chat votes ---------------------------------------------------------------------------
    # Compare's per-candidate evaluation details, and blind A/B votes from Chat. Votes are ``feedback`` rows (no
    # schema change): backend 'blind-ab', rating 1 (A won), -1 (B won) or 0 (tie), candidate_id/run_id/adapter of
    # side A, and settings JSON {"blind_ab": {"a": {...}, "b": {...}, "winner": "a" | "b" | "tie"}}.
    VOTE_BACKEND = "blind-ab"

    def candidate_evaluations(self, candidate_ids: list[int]) -> dict[int, dict[str, Any]]:
        """``{candidate id: {key, fingerprint_id, fingerprint, samples, seconds}}`` of the evaluations the given
        candidates' metrics came from (candidates without one are left out)."""
        if not candidate_ids:
            return {}
        sql = (
            "select c.id as cid, e.key, e.fingerprint_id, e.fingerprint, e.samples, e.seconds from candidates c"
            " join evaluations e on e.key = c.eval_key where c.id in (%s)" % ",".join("?" * len(candidate_ids))
        )
        with self.db() as db:
            rows = list(db.query(sql, [int(i) for i in candidate_ids]))
        out = {}
        for r in rows:
            cid = r.pop("cid")
            r["fingerprint"] = json.loads(r["fingerprint"] or "{}")
            r["samples"] = json.loads(r["samples"] or "[]") or []
            out[cid] = r
        return out

    def candidates_of_runs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """Every candidate of the given runs in one read (runs in the given order, then by id), JSON decoded."""
        out: list[dict[str, Any]] = []
        order = {r: n for n, r in enumerate(run_ids)}
        with self.db() as db:
            for k in range(0, len(run_ids), 500):
                chunk = run_ids[k : k + 500]
                out += db.execute_returning_dicts(
                    "select * from candidates where run_id in (%s)" % ",".join("?" * len(chunk)), chunk)
        out.sort(key=lambda c: (order[c["run_id"]], c["id"]))
        loads = json.loads
        for c in out:
            for k in ("pass_chain", "pass_params", "metrics", "failed"):
                v = c[k]
                c[k] = loads(v) if v else ({} if k != "pass_chain" else [])
        return out

    # The columns Compare's table and chart read: no pass parameters (pass_params reads them for the points drawn),
    # and the run as its position in the list asked for (an int per row costs less to read than the id's text).
    COMPARE_COLUMNS = ("id", "run", "pass_chain", "adapter_path", "size_bytes", "metrics", "is_output", "goals_met",
                       "fingerprint_id", "model_id", "model_type", "precision")
    # the build's precision (ModelBuilder's ``precision`` parameter) for the candidate's label, read in SQL: the pass
    # parameters themselves are not read for Compare's table
    # (ModelBuilder's own name first: json_extract is cheap; any other pass's ``precision`` only when the text has one)
    _PRECISION = ("coalesce(json_extract(c.pass_params, '$.modelbuilder.precision'), case when instr(c.pass_params,"
                  " '\"precision\"') then (select j.value from json_tree(c.pass_params) j where j.key = 'precision'"
                  " and j.type = 'text' limit 1) end)")

    def compare_columns(self, run_ids: list[str]) -> dict[str, list[Any]]:
        """Compare's candidates of the given runs as columns (one list per name in COMPARE_COLUMNS; ``run``: the
        index of the candidate's run in ``run_ids``), runs in the given order, then by id. ``metrics`` is decoded in
        one ``json.loads`` for the whole column (not one per row: 10,000 rows decode in ~15 ms instead of ~150);
        ``pass_chain`` stays JSON text (a few distinct values)."""
        special = {"run": "p.key", "precision": self._PRECISION}
        cols = ", ".join(special.get(k, f"c.{k}") for k in self.COMPARE_COLUMNS)
        sql = f"select {cols} from json_each(?) p join candidates c on c.run_id = p.value order by p.key, c.id"
        with self.db() as db:
            rows = db.conn.execute(sql, [json.dumps(list(run_ids))]).fetchall()
        out = {k: list(c) for k, c in zip(self.COMPARE_COLUMNS, zip(*rows, strict=True), strict=True)} if rows else {
            k: [] for k in self.COMPARE_COLUMNS}
        out["metrics"] = json.loads("[" + ",".join(v or "{}" for v in out["metrics"]) + "]")
        return out

    def measured_twins(self, model_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The first measured candidate of each of these Olive model ids, in any run (the same cached model in two
        runs has one id): ``{model_id: {id, run_id, run_name}}``. Compare says "not measured (same as …)" with it."""
        if not model_ids:
            return {}
        sql = ("select c.model_id, c.id, c.run_id, r.name from json_each(?) p join candidates c on c.model_id = p.value"
               " join runs r on r.id = c.run_id where c.metrics is not null and c.metrics not in ('', '{}', 'null')"
               " order by c.id")
        out: dict[str, dict[str, Any]] = {}
        with self.db() as db:
            for mid, cid, rid, name in db.conn.execute(sql, [json.dumps(sorted(set(model_ids)))]).fetchall():
                out.setdefault(mid, {"id": cid, "run_id": rid, "run_name": name})
        return out

    def pass_params(self, ids: list[int]) -> dict[int, str]:
        """``{candidate id: pass parameters as stored (JSON text)}``: the hover labels of the points a chart draws."""
        with self.db() as db:
            rows = db.conn.execute("select c.id, c.pass_params from json_each(?) p join candidates c on c.id = p.value",
                                   [json.dumps([int(i) for i in ids])]).fetchall()
        return {i: p or "{}" for i, p in rows}

    def candidates_by_id(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """Whole candidate rows (JSON decoded) by id: the ones a user opened."""
        if not ids:
            return {}
        with self.db() as db:
            out = list(db.query("select c.* from json_each(?) p join candidates c on c.id = p.value",
                                [json.dumps([int(i) for i in ids])]))
        for c in out:
            for k in ("pass_chain", "pass_params", "metrics", "failed"):
                c[k] = json.loads(c[k]) if c.get(k) else ({} if k != "pass_chain" else [])
        return {c["id"]: c for c in out}

    def run_specs(self, run_ids: list[str]) -> dict[str, str]:
        """``{run id: spec JSON}`` in one read."""
        out: dict[str, str] = {}
        with self.db() as db:
            for k in range(0, len(run_ids), 500):
                chunk = run_ids[k : k + 500]
                out.update((r["id"], r["spec"]) for r in db.query(
                    "select id, spec from runs where id in (%s)" % ",".join("?" * len(chunk)), chunk))
        return out

    def ab_votes(self, limit: int = 100000) -> list[dict[str, Any]]:
        """Blind A/B votes, oldest first (the order Elo needs), settings decoded."""
        with self.db() as db:
            rows = list(db.query(
                "select id, ts, prompt, rating, settings from feedback where backend = ? order by id limit ?",
                [self.VOTE_BACKEND, limit]))
        for r in rows:
            r["settings"] = json.loads(r.get("settings") or "{}")
        return rows

    # -- workers -----------------------------------------------------------------------------------------
    def worker_beat(self, worker_id: str, slots: dict[str, Any]) -> None:
        with self.tx() as db:
            db["workers"].upsert(
                {"id": worker_id, "pid": os.getpid(), "host": os.uname().nodename, "heartbeat_at": now(), "slots": json.dumps(slots)},
                pk="id",
            )

    def worker_started(self, worker_id: str) -> None:
        with self.tx() as db:
            db["workers"].upsert({"id": worker_id, "pid": os.getpid(), "host": os.uname().nodename, "started_at": now(), "heartbeat_at": now(), "stopped_at": None}, pk="id")

    def worker_stopped(self, worker_id: str) -> None:
        with self.tx() as db:
            db["workers"].update(worker_id, {"stopped_at": now()})

    # -- durable runs --------------------------------------------------------------------------------------
    def claim_fair(self, worker_id: str, fits: Any, could_fit: Any) -> dict[str, Any] | None:
        """Take the oldest queued run that fits, without starving older runs that wait for room.

        ``fits(run) -> gpus | None`` says whether a run fits in this worker's free slots now; ``could_fit(run)``
        whether it fits this worker at all (when idle). Runs are taken oldest first; the oldest run that could fit
        but does not fit now *reserves* its resource class (CPU slots, or GPUs): no younger run of that class starts
        on this worker until it has started, so a 2-GPU run is never overtaken forever by a stream of 1-GPU runs.
        A run no slot of this worker can ever hold reserves nothing (another worker may take it).
        """
        with self.tx() as db:
            reserved: set[str] = set()
            taken = None
            for run in db.query("select id, gpus_wanted from runs where status = 'queued' and cancel_requested = 0 "
                                "order by created_at, id"):
                kind = "gpu" if (run["gpus_wanted"] or 0) > 0 else "cpu"
                if kind in reserved or not could_fit(run):
                    continue
                gpus = fits(run)
                if gpus is None:
                    reserved.add(kind)
                    continue
                taken = run
                self._take(db, run["id"], worker_id, gpus)
                break
        return self.get_run(taken["id"]) if taken else None

    def unwatched_runs(self, live_worker_ids: set[str]) -> list[dict[str, Any]]:
        """Running runs whose owning worker is not in ``live_worker_ids`` (the sweep's candidates)."""
        with self.db() as db:
            rows = list(db.query("select * from runs where status = 'running'"))
        return [r for r in rows if r["worker_id"] not in live_worker_ids]

    def worker_hosts(self) -> dict[str, str]:
        """Every worker ever seen (stopped ones too), by id: its host."""
        with self.db() as db:
            return {w["id"]: w["host"] for w in db.query("select id, host from workers")}

    def add_notice(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """A notice that belongs to no run: ``worker_restart`` (the supervisor restarted the worker), ``worker_error``
        (a worker tick failed and was retried), ``swept`` (a stalled run was recovered by a live worker)."""
        with self.tx() as db:
            db["notices"].insert({"ts": now(), "kind": kind, "message": message, "data": json.dumps(data or {}, default=str)})

    def notices(self, *, kinds: list[str] | None = None, since: float = 0.0, limit: int = 50) -> list[dict[str, Any]]:
        """Latest notices first (what Home and Runs show as 'the worker restarted at ...')."""
        sql, args = "select * from notices where ts >= ?", [since]
        if kinds:
            sql += " and kind in (%s)" % ",".join("?" * len(kinds))
            args += kinds
        with self.db() as db:
            out = list(db.query(sql + " order by id desc limit ?", [*args, limit]))
        for n in out:
            n["data"] = json.loads(n["data"] or "{}")
        return out

    def resumed_from(self, run_id: str) -> int | None:
        """The training step the run's last attempt resumed from (None when it started from step 0)."""
        ev = self.events(run_id, kinds=["resumed"])
        return int(ev[-1]["data"]["step"]) if ev else None

    def live_workers(self, max_age_s: float = 15.0) -> list[dict[str, Any]]:
        with self.db() as db:
            return list(db.query("select * from workers where stopped_at is null and heartbeat_at > ?", [now() - max_age_s]))

    # -- devices: who uses which device, exclusive claims for speed measurements (engine/runs/devices.py) -----------
    ACTIVITY_STALE_S = 10.0  # an activity not heart-beaten for this long is over (its process died)

    def _sweep_activity(self, db: sqlite_utils.Database, device: str | None = None) -> None:
        """Inside a transaction: activities whose holder stopped beating end at their last heartbeat."""
        sql = "update device_activity set ended_at = heartbeat_at, info = json_set(coalesce(info, '{}'), '$.stale', 1) " \
              "where ended_at is null and heartbeat_at < ?"
        args: list[Any] = [now() - self.ACTIVITY_STALE_S]
        if device:
            sql += " and device = ?"
            args.append(device)
        db.conn.execute(sql, args)

    @staticmethod
    def _live(db: sqlite_utils.Database, device: str) -> list[dict[str, Any]]:
        return list(db.query("select * from device_activity where device = ? and ended_at is null order by id",
                             [device]))

    @staticmethod
    def _blockers(rows: list[dict[str, Any]], run_id: str | None) -> list[dict[str, Any]]:
        """The live activities that keep a device from being had alone by ``run_id``'s measurement: every one but
        that run's own, those waiting for the device themselves, and the runner of a run whose evaluation is under
        way (it only waits for its evaluator, which has a row of its own)."""
        evaluating = {r["run_id"] for r in rows if r["kind"] == "eval" and r["run_id"]}
        out = []
        for r in rows:
            if run_id and r["run_id"] == run_id:
                continue
            if r["phase"] == "waiting" or (r["kind"] == "run" and r["run_id"] in evaluating):
                continue
            out.append(r)
        return out

    def begin_activity(self, device: str, kind: str, *, run_id: str | None = None, label: str = "",
                       host: str = "", pid: int = 0, phase: str = "busy") -> dict[str, Any]:
        """Record that ``kind`` work (``run``, ``eval``, ``chat``) starts on ``device``: ``{"id": row id}``, or
        ``{"id": None, "held_by": claim}`` while another run's speed measurement holds the device (try again)."""
        with self.tx() as db:
            self._sweep_activity(db, device)
            held = [r for r in self._live(db, device) if r["exclusive"]]
            if held:
                return {"id": None, "held_by": held[0]}
            t = now()
            rid = db["device_activity"].insert({"device": device, "kind": kind, "exclusive": 0, "run_id": run_id,
                                                "phase": phase, "label": label, "host": host, "pid": pid,
                                                "started_at": t, "heartbeat_at": t}).last_pk
        return {"id": int(rid)}

    def claim_device(self, device: str, *, run_id: str | None = None, label: str = "", host: str = "",
                     pid: int = 0, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Take ``device`` exclusively for a speed measurement, in one transaction: ``{"id": row id}`` when no other
        Grove activity is using it, else ``{"id": None, "blockers": [...]}`` (nothing is recorded)."""
        with self.tx() as db:
            self._sweep_activity(db, device)
            blockers = self._blockers(self._live(db, device), run_id)
            if blockers:
                return {"id": None, "blockers": blockers}
            t = now()
            rid = db["device_activity"].insert({"device": device, "kind": "measure", "exclusive": 1, "run_id": run_id,
                                                "phase": "busy", "label": label, "host": host, "pid": pid,
                                                "started_at": t, "heartbeat_at": t,
                                                "info": json.dumps(info or {}, default=str)}).last_pk
        return {"id": int(rid), "started_at": t}

    def beat_activity(self, activity_id: int, **fields: Any) -> None:
        """Heartbeat of an activity (and ``phase``: ``busy`` or ``waiting``, when given)."""
        with self.tx() as db:
            db["device_activity"].update(activity_id, {"heartbeat_at": now(), **fields})

    def end_activity(self, activity_id: int, info: dict[str, Any] | None = None) -> None:
        """The activity is over (one already swept as stale keeps the end it was given: its last heartbeat)."""
        with self.tx() as db:
            t = now()
            db.conn.execute("update device_activity set ended_at = ?, heartbeat_at = ? where id = ? and ended_at is null",
                            [t, t, activity_id])
            if info is not None:
                old = json.loads(next(db.query("select info from device_activity where id = ?", [activity_id]))["info"]
                                 or "{}")
                db["device_activity"].update(activity_id, {"info": json.dumps({**old, **info}, default=str)})

    def device_activities(self, device: str | None = None, *, since: float = 0.0, until: float | None = None,
                          live: bool = False) -> list[dict[str, Any]]:
        """Activities (newest last) on ``device`` (all devices when None) that were going on at some time after
        ``since`` (and started before ``until``); ``live``: only those not ended. ``info`` decoded."""
        sql, args = "select * from device_activity where coalesce(ended_at, 1e18) >= ?", [since]
        if until is not None:
            sql += " and started_at <= ?"
            args.append(until)
        if device:
            sql += " and device = ?"
            args.append(device)
        if live:
            sql += " and ended_at is null and heartbeat_at >= ?"
            args.append(now() - self.ACTIVITY_STALE_S)
        with self.db() as db:
            rows = list(db.query(sql + " order by id", args))
        for r in rows:
            r["info"] = json.loads(r["info"] or "{}")
        return rows

    def held_devices(self) -> dict[str, dict[str, Any]]:
        """Devices a speed measurement holds now: ``{device: its claim}``."""
        return {r["device"]: r for r in self.device_activities(live=True) if r["exclusive"]}

    # -- speed measurements waiting for their device -------------------------------------------------------------
    def queue_speed(self, key: str, *, model_path: str, adapter: str | None, config: dict[str, Any], device: str,
                    host: str, metrics: list[str], reason: str, run_id: str | None = None) -> None:
        """Defer the speed measurement of evaluation ``key`` until ``device`` is free (a worker on ``host`` runs it)."""
        with self.tx() as db:
            db["speed_pending"].upsert({"key": key, "model_path": model_path, "adapter": adapter,
                                        "config": json.dumps(config), "device": device, "host": host, "run_id": run_id,
                                        "metrics": json.dumps(metrics), "reason": reason, "status": "pending",
                                        "created_at": now(), "done_at": None}, pk="key")

    def pending_speed(self, *, host: str | None = None, key: str | None = None,
                      statuses: tuple[str, ...] = ("pending",)) -> list[dict[str, Any]]:
        """Deferred speed measurements, oldest first (``config``, ``metrics`` decoded)."""
        sql = f"select * from speed_pending where status in ({','.join('?' * len(statuses))})"
        args: list[Any] = list(statuses)
        for col, v in (("host", host), ("key", key)):
            if v is not None:
                sql += f" and {col} = ?"
                args.append(v)
        with self.db() as db:
            rows = list(db.query(sql + " order by created_at", args))
        for r in rows:
            r["config"] = json.loads(r["config"] or "{}")
            r["metrics"] = json.loads(r["metrics"] or "[]")
        return rows

    def mark_speed(self, key: str, status: str, reason: str | None = None) -> None:
        """``running`` (a worker took it), ``pending`` again (the device was not free after all: one more try
        counted) or ``failed``."""
        with self.tx() as db:
            row = list(db.query("select tries from speed_pending where key = ?", [key]))
            if not row:
                return
            upd: dict[str, Any] = {"status": status}
            if status == "pending":
                upd["tries"] = (row[0]["tries"] or 0) + 1
            if reason:
                upd["reason"] = reason
            if status in ("done", "failed"):
                upd["done_at"] = now()
            db["speed_pending"].update(key, upd)

    def finish_speed(self, key: str, metrics: dict[str, float], failed: dict[str, str],
                     conditions: dict[str, Any] | None) -> int:
        """A deferred speed measurement done: its numbers join the evaluation and every candidate measured by it,
        in one transaction. Returns how many candidates got them."""
        with self.tx() as db:
            ev = list(db.query("select metrics, failed from evaluations where key = ?", [key]))
            if ev:
                m = {**json.loads(ev[0]["metrics"] or "{}"), **metrics}
                f = {k: v for k, v in json.loads(ev[0]["failed"] or "{}").items() if k not in metrics}
                db["evaluations"].update(key, {"metrics": json.dumps(m), "failed": json.dumps({**f, **failed}),
                                               "speed_conditions": json.dumps(conditions) if conditions else None})
            n = 0
            for c in list(db.query("select id, metrics, failed from candidates where eval_key = ?", [key])):
                m = {**json.loads(c["metrics"] or "{}"), **metrics}
                f = {k: v for k, v in json.loads(c["failed"] or "{}").items() if k not in metrics}
                db["candidates"].update(c["id"], {"metrics": json.dumps(m), "failed": json.dumps({**f, **failed})})
                n += 1
            db["speed_pending"].update(key, {"status": "failed" if failed and not metrics else "done",
                                             "done_at": now()})
        return n

    def speed_state(self, candidate_ids: list[int]) -> dict[int, dict[str, Any]]:
        """``{candidate id: {"pending": bool, "conditions": dict | None}}`` for the candidates measured by an
        evaluation (Compare's and the Runs page's view of their speed figures)."""
        if not candidate_ids:
            return {}
        sql = ("select c.id, e.speed_conditions, p.status from json_each(?) j join candidates c on c.id = j.value "
               "join evaluations e on e.key = c.eval_key left join speed_pending p on p.key = c.eval_key")
        with self.db() as db:
            rows = db.conn.execute(sql, [json.dumps([int(i) for i in candidate_ids])]).fetchall()
        return {cid: {"pending": status in ("pending", "running"), "conditions": json.loads(cond) if cond else None}
                for cid, cond, status in rows}

"""Runs and their lifecycle: create, read, move between statuses, claim for a worker (fairly, within the devices it
has), heartbeats and cancel requests; the events a run records; workers, their heartbeats and notices."""

from __future__ import annotations

import json
import os
from typing import Any

import sqlite_utils

from engine import paths
from engine.errors import RunNotFound, RunStateError
from engine.runs.registry.base import RegistryBase
from engine.runs.registry.schema import TRANSITIONS, new_run_id, now


class RunsMixin(RegistryBase):
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


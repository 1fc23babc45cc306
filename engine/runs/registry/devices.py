"""Who uses which device (a run's passes, an evaluation, a chat answer), the exclusive claims speed measurements take
(engine/runs/devices.py), and the speed measurements waiting for their device."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from engine.runs.registry.base import RegistryBase
from engine.runs.registry.schema import now


def computing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of a device's live activity rows, those at work on it: not the ones waiting for the device themselves, nor the
    runner of a run whose evaluation is under way (it only waits for its evaluator, which has a row of its own).
    What a claim must wait for (``_blockers``) and what divides the CPU's cores (``engine.runs.devices.cpu_share``)."""
    evaluating = {r["run_id"] for r in rows if r["kind"] == "eval" and r["run_id"]}
    return [r for r in rows if r["phase"] != "waiting" and not (r["kind"] == "run" and r["run_id"] in evaluating)]


class DevicesMixin(RegistryBase):
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
        """The live activities that keep a device from being had alone by ``run_id``'s measurement: every one at
        work on it (``computing``) but that run's own."""
        return [r for r in computing(rows) if not (run_id and r["run_id"] == run_id)]

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

"""What runs produce: candidates, evaluations (cached by key, linked to a run's models, with their fingerprints) and
chat feedback."""

from __future__ import annotations

import json
from typing import Any

from engine.runs.registry.base import RegistryBase
from engine.runs.registry.schema import now


class ResultsMixin(RegistryBase):
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


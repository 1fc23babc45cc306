"""The read models the pages need beyond the runs and results themselves: counts, recent durations and specs, measured
runs, Compare's columns and per-candidate evaluations, lineage, and Chat's blind A/B votes."""

from __future__ import annotations

import json
from typing import Any

from engine.runs.registry.base import RegistryBase


class ReadsMixin(RegistryBase):
    # -- read models for the pages ---------------------------------------------------------------------------
    # Reads the dashboard (engine.views, app.services) needs beyond the runs and results; only this package writes SQL.
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


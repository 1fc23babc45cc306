"""Compare: the measured runs, the candidates in columns, Pareto fronts and goals, the table and chart, per-example
evaluations, lineage, the HTML report and the blind A/B leaderboard."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app.services.core import LIVE_TTL, TTL, home, registry
from engine.evaluate import compare
from engine.spec import metrics as metrics_mod
from engine.views import candidates as cand_views
from engine.views import charts
from engine.views import comparison as comparison_view
from engine.views import format as fmt
from engine.views import labels as label_views
from engine.views import lineage as lineage_view
from engine.views import report as report_view


# -- compare ------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _measured_runs(h: str) -> list[dict[str, Any]]:
    return registry().measured_runs()


def measured_runs() -> list[dict[str, Any]]:
    """Runs with at least one measured candidate: id, name, candidates (how many have metrics)."""
    return _measured_runs(home())


# Compare keeps its read model, fronts, goal marks, tables and figures in cache_resource (shared by sessions,
# read-only): cache_data would pickle 10,000 rows on every rerun. They are keyed by the run ids joined in one string:
# hashing one string is cheaper than a tuple of hundreds.
_SEP = "\n"


def _key(run_ids: list[str]) -> str:
    return _SEP.join(dict.fromkeys(run_ids))  # each run once


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=8)
def _comparison(h: str, ids: str) -> comparison_view.Comparison:
    run_ids = ids.split(_SEP)
    names = {r["id"]: label_views.run_label(r["name"], r["id"]) for r in measured_runs()}
    return comparison_view.Comparison.read(registry(), run_ids, names)


def comparison(run_ids: list[str]) -> comparison_view.Comparison:
    """Every candidate of the given runs, in columns (engine.views.comparison). Shared between sessions: read-only."""
    return _comparison(home(), _key(run_ids))


@st.cache_data(ttl=TTL, show_spinner=False)
def _comparability(h: str, ids: str) -> tuple[bool, str]:
    run_ids = ids.split(_SEP)
    counts = comparison(run_ids).fingerprint_counts()
    ok, why = compare.comparability_of(counts, registry().fingerprints(sorted(counts))) if len(counts) > 1 else (True, "")
    speed_ok, speed_why, _ = speed_check(run_ids)
    if not speed_ok:
        return False, "; ".join(w for w in (why, speed_why) if w)
    return ok, why


@st.cache_data(ttl=TTL, show_spinner=False)
def _speed_check(h: str, ids: str) -> tuple[bool, str, int]:
    return comparison_view.speed_check(comparison(ids.split(_SEP)), registry())


def speed_check(run_ids: list[str]) -> tuple[bool, str, int]:
    """(speed figures comparable, what differs, how many candidates' speed is still pending)."""
    return _speed_check(home(), _key(run_ids))


def comparability(run_ids: list[str]) -> tuple[bool, str]:
    """(True, "") when the runs' measured candidates share one evaluation fingerprint; else (False, what differs)."""
    return _comparability(home(), _key(run_ids))


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=64)
def _pareto(h: str, ids: str, x: str, y: str) -> Any:
    run_ids = ids.split(_SEP)
    return comparison_view.pareto(comparison(run_ids), x, y)


def pareto_front(run_ids: list[str], x: str, y: str) -> Any:
    """Which candidates (a mask over ``comparison(run_ids)``) are on the Pareto frontier of x and y."""
    return _pareto(home(), _key(run_ids), x, y)


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _goals(h: str, ids: str) -> tuple[dict[str, Any], Any, Any]:
    run_ids = ids.split(_SEP)
    return comparison_view.goals(comparison(run_ids), registry().run_specs(run_ids))


def goal_context(run_ids: list[str]) -> tuple[dict[str, Any], Any, Any]:
    """({run_id: {metric: goal with its bound}}, met, decided): masks over the candidates, whether each meets every
    goal of its run where that can be decided."""
    return _goals(home(), _key(run_ids))


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _compare_table(h: str, ids: str, x: str | None, y: str | None) -> Any:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    front = pareto_front(run_ids, x, y) if x and y else np.zeros(len(cmp), dtype=bool)
    _, met, decided = goal_context(run_ids)
    return comparison_view.table(cmp, front, met, decided)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=16)
def _unmeasured(h: str, ids: str) -> list[dict[str, Any]]:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    mids = [m for m, ok in zip(cmp.model_ids or [], cmp.measured(), strict=False) if m and not ok]
    return cand_views.not_measured(cmp, registry().run_specs(run_ids), registry().measured_twins(mids))


def compare_unmeasured(run_ids: list[str]) -> list[dict[str, Any]]:
    """The candidates of the runs that have no number, each with why ("not measured (same as #3 … in run …)")."""
    return _unmeasured(home(), _key(run_ids))


def metric_format(name: str) -> str:
    """The printf format of a metric's table column, with its unit (``%.1f tok/s``)."""
    return fmt.metric_format(name)


def compare_table(run_ids: list[str], x: str | None, y: str | None) -> Any:
    """Compare's table (one row per candidate, in ``comparison(run_ids)``'s order), Pareto of x and y. Read-only."""
    return _compare_table(home(), _key(run_ids), x, y)


@st.cache_resource(ttl=TTL, show_spinner=False, max_entries=16)
def _compare_figure(h: str, ids: str, x: str, y: str, max_points: int) -> tuple[Any, int, bool]:
    run_ids = ids.split(_SEP)
    cmp = comparison(run_ids)
    front = pareto_front(run_ids, x, y)
    bounds, met, _ = goal_context(run_ids)
    pts, sampled = comparison_view.chart_points(cmp, x, y, front, max_points)
    size_mb = compare_table(run_ids, x, y)["size_mb"].to_numpy()
    params = registry().pass_params(cmp.ids[pts].tolist())  # hover text: only the points drawn read them
    return charts.pareto_figure(cmp, size_mb, x, y, front, pts, bounds, met, params), len(pts), sampled


def compare_figure(run_ids: list[str], x: str, y: str, max_points: int) -> tuple[Any, int, bool]:
    """(the quality-vs-speed figure, points drawn, whether they are a sample): every Pareto point, then a fixed
    sample up to ``max_points``. Read-only (Streamlit copies it to draw it)."""
    return _compare_figure(home(), _key(run_ids), x, y, max_points)


def compare_candidates(ids: list[int]) -> dict[int, dict[str, Any]]:
    """Whole candidate rows by id (pass parameters, failed metrics, paths) with ``run_name``: the ones opened."""
    names = {r["id"]: r["name"] for r in registry().list_runs(limit=100000)} if ids else {}
    out = registry().candidates_by_id([int(i) for i in ids])
    for c in out.values():
        c["run_name"] = names.get(c["run_id"], c["run_id"])
    return out


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def _evaluations(h: str, ids: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    return registry().candidate_evaluations(list(ids))


def candidate_evaluations(ids: list[int]) -> dict[int, dict[str, Any]]:
    """{candidate id: {fingerprint_id, fingerprint, samples (every evaluated example, scored), seconds}}."""
    return _evaluations(home(), tuple(sorted(int(i) for i in ids)))


@st.cache_data(ttl=TTL, show_spinner=False)
def _lineage(h: str, run_ids: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    reg = registry()
    cands = reg.candidates_of_runs(list(run_ids))
    names = {r["id"]: label_views.run_label(r["name"], r["id"]) for r in measured_runs()}
    names = {c["run_id"]: names.get(c["run_id"], c["run_id"]) for c in cands}
    events = {r: reg.events(r, kinds=["pass_finished", "pass_cached"]) for r in run_ids}
    reused = lineage_view.reuses(cands, events, names)
    return lineage_view.dot(cands, reused, names), reused


def lineage(run_ids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """(Graphviz DOT of the candidates' descent across the runs, one row per cache reuse with the seconds saved)."""
    return _lineage(home(), tuple(run_ids))


def report_html(run_ids: list[str]) -> str:
    """The self-contained HTML report of the runs (built when the user clicks download)."""
    return report_view.build(registry(), run_ids)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _leaderboard(h: str) -> list[dict[str, Any]]:
    board = compare.leaderboard(cand_views.vote_rows(registry().ab_votes()))
    ids = [int(h[1:]) for h in (str(r["contestant"]).partition(" · ")[0] for r in board) if h[1:].isdigit()]
    return cand_views.name_contestants(board, compare_candidates(ids))


def leaderboard() -> list[dict[str, Any]]:
    """Blind A/B votes per candidate and adapter: Elo, votes, win rate (best first)."""
    return _leaderboard(home())


def candidate_zip(cand: dict[str, Any]) -> bytes:
    return cand_views.candidate_zip(cand)


candidate_files = cand_views.candidate_files
per_example = compare.per_example
disagreements = compare.disagreements
EXAMPLE_SCORES = compare.EXAMPLE_SCORES


# The metric sets of engine.spec.metrics, in its order; the Compare chart opens on decode speed, so the speed
# list starts there and wraps around.
QUALITY = metrics_mod.QUALITY
_DECODE = metrics_mod.SPEED.index("decode_tps")
SPEED = metrics_mod.SPEED[_DECODE:] + metrics_mod.SPEED[:_DECODE]
metric_choices = cand_views.metric_choices


def quality_choices(measured: list[str]) -> list[str]:
    """Compare's quality axis: benchmark accuracies (acc:<task>) first, then the held-out split's metrics."""
    return metrics_mod.quality_names(measured) or measured


side_by_side = cand_views.side_by_side


"""Runs: the reads the Home and Runs pages poll (tables, counts, a run's live view, its candidates, run slots, the Ray
cluster), the writes (submit, cancel, retry) and the demo's set-up and launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from app.services import access
from app.services.core import LIVE_TTL, TTL, clear, gpus_available, home, registry
from engine.runs import cluster
from engine.runs import demo as demo_build
from engine.runs import submit as service
from engine.spec import drafts
from engine.spec.schema import parse_spec
from engine.views import comparison as comparison_view
from engine.views import runs as views


# -- runs ---------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _runs(h: str, status: tuple[str, ...], limit: int, offset: int, user: str | None) -> list[dict[str, Any]]:
    reg = registry()
    return views.run_rows(reg, reg.list_runs(status=list(status) or None, limit=limit, offset=offset, user=user))


def runs(status: tuple[str, ...] = (), limit: int = 50, offset: int = 0, user: str | None = None) -> list[dict[str, Any]]:
    """Rows for run tables: id, name, status, stage, progress, created, elapsed, eta, error, user (who launched it),
    devices (where it runs); of one person when ``user`` is given."""
    return _runs(home(), tuple(status), limit, offset, user)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _counts(h: str, user: str | None) -> dict[str, int]:
    return registry().count_runs(user=user)


def counts(user: str | None = None) -> dict[str, int]:
    return _counts(home(), user)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _people(h: str) -> list[str]:
    return registry().people()


def people() -> list[str]:
    """Everyone who launched a run (the Runs and Compare pages filter by them)."""
    return _people(home())


@st.cache_data(ttl=1, show_spinner=False)
def _run(h: str, run_id: str) -> dict[str, Any]:
    return registry().find_run(run_id)


def run(run_id: str) -> dict[str, Any]:
    return _run(home(), run_id)


@st.cache_data(ttl=1, show_spinner=False)
def _live(h: str, run_id: str) -> dict[str, Any]:
    from engine.runs.logs import log_tail

    reg = registry()
    r = reg.get_run(run_id)
    training = reg.events(run_id, kinds=["train_step", "resumed"])
    return {
        "run": r,
        "timeline": views.timeline(reg, r),
        "curve": views.loss_points(training),
        "training": views.training_summary(training),
        "log_tail": log_tail(Path(r["log_path"] or "/nonexistent"), 40),
        "logs": views.recent_logs(reg, run_id),
        "failure_tail": views.failure_tail(reg, run_id) if r["status"] == "failed" else "",
    }


def live(run_id: str) -> dict[str, Any]:
    """A run with its timeline, training curve (one point per step across resumes) and its summary line, log tail
    and notable log events."""
    return _live(home(), run_id)


@st.cache_data(ttl=5, show_spinner=False)
def _candidates(h: str, run_id: str) -> list[dict[str, Any]]:
    reg = registry()
    cands = reg.candidates(run_id)
    speed = reg.speed_state([c["id"] for c in cands])
    for c in cands:  # "speed pending", or the conditions its speed figures were measured under
        c["speed"] = comparison_view.speed_label(speed.get(c["id"]))
    return cands


def candidates(run_id: str) -> list[dict[str, Any]]:
    return _candidates(home(), run_id)


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _slots(h: str) -> dict[str, Any]:
    return views.slots(registry().live_workers())


def slots() -> dict[str, Any]:
    return _slots(home())


@st.cache_data(ttl=LIVE_TTL, show_spinner=False)
def _cluster(h: str) -> dict[str, Any] | None:
    status = cluster.cluster_status(registry())
    if status is None:
        return None
    waiting = [r["run_id"] for r in status.get("runs", []) if r.get("waiting")]
    return {"address": status.get("address"), "nodes": cluster.node_rows(status), "waiting": waiting,
            "error": status.get("error")}


def ray_cluster() -> dict[str, Any] | None:
    """The Ray cluster a live worker sends runs to (nodes, their CPUs/GPUs in use, runs placed and waiting), or None
    on the local executor."""
    return _cluster(home())


@st.cache_data(ttl=TTL, show_spinner=False)
def _candidate_count(h: str) -> int:
    return registry().count_candidates()


def candidate_count() -> int:
    return _candidate_count(home())


def failure_hint(error_type: str | None) -> str | None:
    return views.KNOWN_FAILURES.get(error_type or "")


# -- writes -------------------------------------------------------------------------------------------------------
def submit_draft(draft: dict[str, Any]) -> dict[str, Any]:
    """Validate and queue the draft as this session's person's run; raises GroveError (SpecError, DataError,
    AccessError, ...) with a user-facing message."""
    me = access.require("launch")
    access.own_inputs(me, {"dataset.path": (draft.get("dataset") or {}).get("path") or "",
                           "model.name": (draft.get("model") or {}).get("name") or ""})
    spec = parse_spec(drafts.to_spec_dict(draft))
    r = service.submit(spec, reg=registry(), gpus_available=gpus_available(), base=service.ui_bases(),
                       user=me["user"])
    access.record(me, "launch", r["id"])
    clear()
    return r


def cancel(run_id: str) -> dict[str, Any]:
    """Cancel a run: a member their own, an admin anyone's (refused and recorded otherwise)."""
    run_row = registry().find_run(run_id)
    me = access.require("cancel", owner=run_row.get("user"), target=run_row["id"])
    r = service.cancel(run_row["id"], reg=registry())
    access.record(me, "cancel", run_row["id"])
    clear()
    return r


def retry(run_id: str) -> dict[str, Any]:
    """Queue a finished run again, as this person's run: a member their own, an admin anyone's."""
    run_row = registry().find_run(run_id)
    me = access.require("retry", owner=run_row.get("user"), target=run_row["id"])
    r = service.retry(run_row["id"], reg=registry(), user=me["user"])
    access.record(me, "retry", run_row["id"])
    clear()
    return r


def export_config(run_id: str) -> str:
    return service.export_config(run_id, reg=registry())


def draft_from_run(run_id: str) -> dict[str, Any]:
    d = drafts.from_spec(json.loads(run(run_id)["spec"]))
    d["name"] = f"{d['name']} (clone)"
    return d


def artifacts_zip(run_id: str) -> bytes:
    """The run's output folder (and its Olive config and log) as a zip, built when the user clicks download."""
    return views.artifacts_zip(registry().get_run(run_id))


def output_dir(run_id: str) -> Path | None:
    return views.output_dir(run(run_id))


# -- demo ---------------------------------------------------------------------------------------------------------
def demo_state() -> str:
    """'built' (the default model is set up), 'building' (a background set-up is running) or 'missing'."""
    return demo_build.state()


def demo_progress() -> dict[str, Any] | None:
    """The background set-up's stage and percentage ({"stage", "percent"}), when one reported."""
    return demo_build.progress()


def launch_demo() -> list[dict[str, Any]] | None:
    """Queue the demo runs if the default model is set up; otherwise start setting it up (and queueing) in the
    background (None)."""
    me = access.require("launch")
    r = demo_build.launch(registry(), me["user"])
    access.record(me, "launch", ", ".join(x["id"] for x in r or []) or "demo (after the model's set-up)")
    if r is not None:
        clear()
    return r

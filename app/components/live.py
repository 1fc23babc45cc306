"""The live parts of a run: progress, stage timeline (cache hits and time saved), loss curve, log tail.

``run_view(run_id)`` draws them once and is what tests call; ``show(run_id)`` wraps it in an ``st.fragment``
that refreshes every 2 s only while the run is queued or running, and reruns the whole page when it ends.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from app.components import errors
from app.services import ACTIVE, fmt_seconds

STATE_ICON = {
    "ran": "✓ ran",
    "measured": "✓ measured",
    "cache hit": "♻ cache hit",
    "reused": "♻ reused",
    "running": "▶ running",
    "planned": "… planned",
    "stopped": "■ stopped",
}


def timeline(stages: list[dict[str, Any]]) -> None:
    if not stages:
        st.caption("No pass has started yet.")
        return
    rows = [
        {
            "pass": s["pass"],
            "type": s["type"],
            "state": STATE_ICON.get(s["state"], s["state"]),
            "time": fmt_seconds(s["seconds"]) if s["seconds"] is not None else "",
            "time saved": fmt_seconds(s["saved_s"]) if s["saved_s"] else "",
            "detail": s["detail"],
        }
        for s in stages
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    saved = sum(s["saved_s"] or 0 for s in stages)
    if saved:
        st.caption(f":material/recycling: Reuse saved about {fmt_seconds(saved)} of compute.")


def loss_chart(curve: list[dict[str, Any]], key: str = "loss", active: bool = False) -> None:
    if not curve:
        st.caption("No training steps logged yet." if active else "No training steps were logged.")
        return
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[p["step"] for p in curve], y=[p["loss"] for p in curve], mode="lines+markers", name="loss")
    )
    if any(p.get("learning_rate") for p in curve):
        fig.add_trace(
            go.Scatter(
                x=[p["step"] for p in curve],
                y=[p.get("learning_rate") for p in curve],
                name="learning rate",
                yaxis="y2",
                line={"dash": "dot"},
            )
        )
    max_steps = curve[-1].get("max_steps")
    fig.update_layout(
        height=280,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Training loss",
        xaxis={"title": "step", "range": [0, max_steps] if max_steps else None},
        yaxis={"title": "loss"},
        yaxis2={
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
            "title": "lr",
            "rangemode": "tozero",
            "tickformat": ".0e",
        },
        legend={"orientation": "h", "y": -0.25},
    )
    st.plotly_chart(fig, key=key, width="stretch")


def run_view(run_id: str) -> dict[str, Any]:
    """Draw a run's live state once; returns the run row."""
    data = services.live(run_id)
    run = data["run"]
    if run["status"] in ACTIVE:  # the progress counts passes and evaluations; the stage names the one going on
        st.progress(float(run["progress"] or 0), text=f"{run['status']}: {run['stage'] or ''}")
    reg = services.registry()  # durable runs: a resumed training, a worker restarted under this run
    if (step := reg.resumed_from(run_id)) is not None:
        st.caption(f"Training resumed from step {step} (its runner had stopped; the last checkpoint was kept).")
    if run["status"] in ACTIVE and (notes := reg.notices(kinds=["worker_restart"], since=run["started_at"] or 0, limit=1)):
        st.warning(f"The worker restarted while this run was going: {notes[0]['message']}")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Stages**")
        timeline(data["timeline"])
    with right:
        loss_chart(data["curve"], key=f"loss-{run_id}", active=run["status"] in ACTIVE)
        if data.get("training"):
            st.caption(f"Training: {data['training']}")
    if run["status"] == "failed":
        errors.run_failure(run, data["failure_tail"] or data["log_tail"])
    if data["logs"]:
        with st.expander(f"Notable log lines ({len(data['logs'])})"):
            st.dataframe(data["logs"], hide_index=True, width="stretch")
    with st.expander("Log tail", expanded=run["status"] == "running"):
        st.code(data["log_tail"] or "(empty)", language=None)
    return run


def show(run_id: str, status: str) -> None:
    active = status in ACTIVE

    def body() -> None:
        run = run_view(run_id)
        if active and run["status"] not in ACTIVE:
            services.clear()  # the run ended: redraw the table, actions and candidates from fresh reads
            st.rerun(scope="app")

    st.fragment(body, run_every=2 if active else None)()

"""A table of runs (status, progress, elapsed, ETA) that returns the run the user selected."""

from __future__ import annotations

from typing import Any

import streamlit as st

STATUS_ICON = {"queued": "…", "running": "▶", "succeeded": "✓", "failed": "✗", "cancelled": "■"}


ALL = ["name", "status", "user", "progress", "stage", "elapsed", "eta", "created", "error", "id"]
COMPACT = ["name", "status", "user", "progress", "elapsed", "eta"]


def show(rows: list[dict[str, Any]], key: str, height: int | None = None, columns: list[str] = ALL) -> str | None:
    if not rows:
        st.caption("No runs here yet.")
        return None
    view = [{**r, "status": f"{STATUS_ICON.get(r['status'], '')} {r['status']}"} for r in rows]
    event = st.dataframe(
        view,
        key=key,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        height=height or "auto",
        column_order=columns,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "eta": st.column_config.TextColumn("ETA", help="estimated time left, from progress or similar runs"),
            "id": st.column_config.TextColumn("run id"),
            "user": st.column_config.TextColumn("launched by"),
            "devices": st.column_config.TextColumn("on", help="the CPU, or the GPUs the run holds"),
        },
    )
    sel = getattr(getattr(event, "selection", None), "rows", None) or []
    return rows[sel[0]]["id"] if sel else None

"""Runs: every run with status, progress, elapsed time and ETA; one run in detail, live while it is active."""

from __future__ import annotations

import streamlit as st

from app import nav, services, state
from app.components import candidates, live, run_table
from engine.errors import GroveError

PAGE_SIZE = 50

st.title("Runs")
state.show_flash()

qp = st.query_params
c1, c0, c2, c3 = st.columns([3, 2, 1, 1])
status = c1.multiselect(
    "Status",
    services.STATUSES,
    default=[s for s in qp.get_all("status") if s in services.STATUSES],
    placeholder="all statuses",
)
if status:
    qp["status"] = status
elif "status" in qp:
    del qp["status"]
people = services.people()
by = c0.selectbox("Launched by", ["everyone", *people], index=1 + people.index(qp["by"]) if qp.get("by") in people else 0)
by = None if by == "everyone" else by
if by:
    qp["by"] = by
elif "by" in qp:
    del qp["by"]
counts = services.counts(user=by)
total = sum(counts.get(s, 0) for s in (status or services.STATUSES))
pages = max(1, -(-total // PAGE_SIZE))
page = (
    c2.number_input("Page", 1, pages, 1, key=f"page-{'-'.join(status)}", help=f"{total} runs, {PAGE_SIZE} a page") - 1
)
if c3.button("Refresh", icon=":material/refresh:"):
    services.clear()


def table() -> None:
    """The runs table; refreshed every 3 s while a listed run is queued or running."""
    rows = services.runs(status=tuple(status), limit=PAGE_SIZE, offset=page * PAGE_SIZE, user=by)
    picked = run_table.show(rows, key="runs-table", height=min(420, 38 + 35 * len(rows)))
    if picked != st.session_state.get("runs-picked"):  # a new selection (not one left from before)
        st.session_state["runs-picked"] = picked
        if picked:
            st.query_params["run"] = picked
            st.rerun(scope="app")


listed = services.runs(status=tuple(status), limit=PAGE_SIZE, offset=page * PAGE_SIZE, user=by)
st.fragment(table, run_every=3 if any(r["status"] in services.ACTIVE for r in listed) else None)()
run_id = qp.get("run")
if not run_id:
    st.info("Select a run in the table to see its stages, training curve, log and candidates.")
    st.stop()

try:
    run = services.run(run_id)
except GroveError as e:
    st.warning(str(e))
    st.stop()
run_id = run["id"]

st.divider()
st.subheader(f"{run['name']}")
st.caption(
    f"`{run_id}` · {run['status']} · stage: {run['stage'] or '—'}"
    + (f" · retry of `{run['parent_run']}`" if run.get("parent_run") else "")
    + f" · launched by {services.markdown_literal(run.get('user') or 'someone before sign-in')}"
)

a = st.columns(5)
may_cancel, may_retry = (services.can(x, owner=run.get("user")) for x in ("cancel", "retry"))
if not may_cancel and run["status"] in services.ACTIVE:
    st.caption(services.why_not("cancel", owner=run.get("user")))
try:
    if a[0].button("Cancel", icon=":material/stop:", disabled=run["status"] not in services.ACTIVE or not may_cancel):
        services.cancel(run_id)
        state.flash("Cancel requested: a queued run stops at once, a running one within seconds.", "info")
        st.rerun()
    if a[1].button("Retry", icon=":material/replay:", disabled=run["status"] in services.ACTIVE or not may_retry):
        new = services.retry(run_id)
        state.flash(f"Queued {new['id']} as a retry of {run_id}.")
        st.query_params["run"] = new["id"]
        st.rerun()
except GroveError as e:
    st.error(services.markdown_literal(str(e)))
if a[2].button("Clone into Workflow", icon=":material/content_copy:", disabled=not services.can("launch")):
    state.set_draft(services.draft_from_run(run_id))
    state.flash(f"Cloned {run_id} into the workflow: edit it and launch.")
    st.switch_page(nav.path("workflow.py"))
a[3].download_button(
    "Olive config",
    services.export_config(run_id),
    file_name=f"{run_id}-olive.json",
    mime="application/json",
    icon=":material/download:",
    on_click="ignore",
)
if run["status"] == "succeeded":
    a[4].download_button(
        "Artifacts (.zip)",
        lambda: services.artifacts_zip(run_id),
        file_name=f"{run_id}.zip",
        mime="application/zip",
        icon=":material/folder_zip:",
        on_click="ignore",
    )

live.show(run_id, run["status"])

if run["status"] not in services.ACTIVE:
    st.subheader("Candidates")
    candidates.show(services.candidates(run_id))
    out = services.output_dir(run_id)
    if out:
        st.caption(f"Output folder: `{out}`")

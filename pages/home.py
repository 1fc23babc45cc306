"""Home: what is running and queued (by whom, on which device), the machine's run slots, recent runs, the one-click
demo, and for an admin of a shared Grove the sign-ins and refusals."""

from __future__ import annotations

import streamlit as st

from app import nav, services, state
from app.components import run_table
from engine.errors import GroveError

st.title(":material/park: Grove")
st.caption("Fine-tune, quantize and convert small language models with Microsoft Olive — and watch it happen.")
state.show_flash()


def overview() -> None:
    counts = services.counts()
    s = services.slots()
    c = st.columns(5)
    c[0].metric("Running", counts.get("running", 0))
    c[1].metric("Queued", counts.get("queued", 0))
    c[2].metric("Succeeded", counts.get("succeeded", 0))
    c[3].metric("Failed", counts.get("failed", 0))
    c[4].metric("Candidates", services.candidate_count())
    st.subheader("Run slots")
    ray = services.ray_cluster()
    if ray is not None:
        st.caption(f"Runs go to the Ray cluster at {services.markdown_literal(str(ray['address']))}")
        st.dataframe(ray["nodes"], hide_index=True)
        if ray["waiting"]:
            st.caption("Waiting for the cluster's resources: " + ", ".join(ray["waiting"]))
    elif not s["workers"]:
        st.warning(
            "No worker is running, so queued runs wait. Start Grove with `./grove up` (it starts the worker too)."
        )
    else:
        cols = st.columns(2)
        cols[0].metric("CPU slots in use", f"{s['cpu_used']} / {s['cpu']}")
        cols[1].metric("GPU slots in use", f"{s['gpu_used']} / {s['gpu']}" if s["gpu"] else "no GPU")
        if s["gpus"]:
            st.dataframe(s["gpus"], hide_index=True)
    active = services.runs(status=services.ACTIVE, limit=20)
    st.subheader("Running and queued")
    if active:  # who is running what, on which device
        picked = run_table.show(active, key="home-active", columns=[*run_table.COMPACT, "devices", "stage"])
        if picked:
            st.switch_page(nav.path("runs.py"), query_params={"run": picked})
    else:
        st.caption("Nothing is running.")


def demo_progress() -> None:
    """The background set-up of the demo model, while it runs (download, conversion or training)."""
    p = services.demo_progress() or {"stage": "starting", "percent": 0}
    if services.demo_state() != "building":
        st.rerun(scope="app")
    st.progress(min(100, int(p["percent"])), text=f"Setting up the demo model: {p['stage']} {int(p['percent'])} %")


active_now = any(services.counts().get(s) for s in services.ACTIVE)
st.fragment(overview, run_every=3 if active_now else None)()

left, right = st.columns([3, 2])
with left:
    st.subheader("Recent runs")
    picked = run_table.show(services.runs(limit=10), key="home-recent", columns=run_table.COMPACT)
    if picked:
        st.switch_page(nav.path("runs.py"), query_params={"run": picked})
    st.page_link(nav.path("runs.py"), label="All runs", icon=":material/list:")
with right:
    st.subheader("Try it")
    st.markdown(
        "The offline demo fine-tunes SmolLM2-135M-Instruct (shipped in a package, no hub) on a travel Q&A sample with "
        "LoRA, builds int4 ONNX two ways (adapter extracted; adapter merged), and measures every candidate on the "
        "held-out questions, so Compare shows which is best and Chat offers each. About 5 minutes on 2 cores."
    )
    if services.model_fallback_reason():
        st.caption(services.markdown_literal(services.model_fallback_reason()))
    demo = services.demo_state()
    if demo == "building":
        st.fragment(demo_progress, run_every=2)()
    may_launch = services.can("launch")
    if st.button(
        "Launch the demo workflow", icon=":material/rocket_launch:", type="primary",
        disabled=demo == "building" or not may_launch, help=None if may_launch else services.why_not("launch"),
    ):
        try:
            runs = services.launch_demo()
        except GroveError as e:
            st.error(services.markdown_literal(str(e)))
        else:
            if runs is None:
                state.flash("Setting up the demo model first; the demo runs are queued when it is ready.", "info")
                st.rerun()
            state.flash(f"Queued the demo runs {', '.join(r['id'] for r in runs)}.")
            st.switch_page(nav.path("runs.py"), query_params={"run": runs[0]["id"]})
    if may_launch:
        st.markdown("Or build your own: pick a model and data, then a workflow.")
        st.page_link(nav.path("model_data.py"), label="Model & data", icon=":material/dataset:")
        st.page_link(nav.path("workflow.py"), label="Workflow", icon=":material/account_tree:")

if services.can("admin") and services.sign_in_state()[0] == "on":
    with st.expander("Sign-ins and refusals", icon=":material/badge:"):
        st.dataframe(services.access_log(limit=200), hide_index=True,
                     column_order=["when", "user", "role", "action", "target", "allowed", "detail"])

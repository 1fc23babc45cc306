"""Targets on the Workflow page: every known target (engine.targets) with its state - Grove's own environment, an
environment created with its pinned packages, one not created yet (a Create button starts ``grove target add`` in
the background and the progress shows here), or one this machine cannot run, with what it lacks."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from app.components.errors import grove_error
from engine.errors import GroveError

STATE_WORDS = {"default": "Grove's own environment", "ready": "ready", "stale": "made from an older pinned list",
               "not created": "not created yet", "unavailable": "cannot run on this machine"}


def body() -> bool:
    """Draw the targets; True while an environment is being created (the caller refreshes)."""
    busy = False
    for t in services.targets():
        pr: dict[str, Any] | None = t.get("progress")
        running = bool(pr and pr.get("running"))
        busy |= running
        line = f"**{t['name']}** · {t['title']} · {', '.join(t['providers'])} · {STATE_WORDS.get(t['state'], t['state'])}"
        st.markdown(line)
        if t["state"] in ("ready", "stale"):
            st.caption(f"{t.get('size_mb', 0):.0f} MB, {len(t.get('packages') or {})} packages in {t['path']}; "
                       f"check: {(t.get('check') or {}).get('detail', '')}")
        if t["state"] == "unavailable":
            st.caption(f"Missing here: {t['missing']}. It would need {t['needs']}.")
        if running:
            st.progress(float(pr.get("fraction") or 0.0), text=f"Creating: {pr.get('message', '')}")
        elif pr and pr.get("error"):
            st.error(f"Creating the {t['name']} environment failed: {pr.get('message', '')}")
        if t["state"] in ("not created", "stale") and not running:
            if st.button(f"Create the {t['name']} environment ({t.get('pins', 0)} pinned packages)",
                         key=f"target-add-{t['name']}"):
                try:
                    services.add_target(t["name"])
                except GroveError as e:
                    grove_error(e)
                else:
                    st.rerun()
    return busy


def show(expanded: bool = False) -> None:
    with st.expander("Targets: where candidates run (each vendor's runtime in an environment of its own)",
                     expanded=expanded):
        def part() -> None:
            if not body() and st.session_state.get("targets-busy"):
                st.session_state["targets-busy"] = False
                st.rerun(scope="app")

        busy = any((t.get("progress") or {}).get("running") for t in services.targets())
        st.session_state["targets-busy"] = busy
        st.fragment(part, run_every=2 if busy else None)()

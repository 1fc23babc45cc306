"""The pre-flight check: errors (block launch), warnings and notes, each saying what to change."""

from __future__ import annotations

import streamlit as st

from app import services

ICON = {"error": ":red[:material/cancel:]", "warning": ":orange[:material/warning:]", "info": ":blue[:material/info:]"}


def show(findings: list[dict[str, str]]) -> bool:
    """Draw the findings; True when nothing blocks the launch."""
    errors = [f for f in findings if f["level"] == "error"]
    warnings = [f for f in findings if f["level"] == "warning"]
    if errors:
        st.error(f"**{len(errors)} problem(s) to fix before launch**")
    elif warnings:
        st.warning(f"Ready to launch, with {len(warnings)} warning(s)")
    else:
        st.success("Pre-flight check passed: ready to launch")
    for f in sorted(findings, key=lambda f: ["error", "warning", "info"].index(f["level"])):
        fix = f"  \n&nbsp;&nbsp;&nbsp;&nbsp;→ {services.markdown_literal(f['fix'])}" if f["fix"] else ""
        st.markdown(f"{ICON[f['level']]} `{f['where']}` {services.markdown_literal(f['message'])}{fix}")
    return not errors

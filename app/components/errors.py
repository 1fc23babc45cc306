"""How engine errors and failed runs are shown: a clear message, what to do, and the log tail folded."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from engine.errors import GroveError, SpecError


def grove_error(e: GroveError, log_tail: str = "") -> None:
    """An error the engine raised on purpose (bad spec, bad data, missing model, not enough GPUs...)."""
    if isinstance(e, SpecError):
        lines = "\n".join(f"- `{path or '(spec)'}`: {services.markdown_literal(msg)}" for path, msg in e.problems)
        st.error(f"**The run spec is not valid**\n\n{lines}")
    else:
        st.error(services.markdown_literal(str(e)))
    if e.hint:
        st.info(f"What to do: {services.markdown_literal(e.hint)}")
    if log_tail:
        with st.expander("Log tail"):
            st.code(log_tail, language=None)


def run_failure(run: dict[str, Any], log_tail: str = "") -> None:
    """A failed run: its error, what to do for known failures, and the log tail."""
    etype = run.get("error_type") or "failed"
    st.error(f"**Run failed: {services.markdown_literal(etype)}**\n\n{services.markdown_literal(run.get('error_message') or '')}")
    hint = services.failure_hint(etype)
    if hint:
        st.info(f"What to do: {hint}")
    if log_tail:
        with st.expander("Log tail", expanded=not hint):
            st.code(log_tail, language=None)

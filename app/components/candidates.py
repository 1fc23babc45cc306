"""A run's candidates: pass chain, size, output flag and every metric as its own column."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from app.services import human_size


def rows(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cands:
        r: dict[str, Any] = {
            "model": c["model_id"],
            "output": "★" if c.get("is_output") else "",
            "pass chain": " → ".join(c.get("pass_chain") or []),
            "size": human_size(c.get("size_bytes")),
        }
        for k, v in (c.get("metrics") or {}).items():
            r[k] = v.get("value") if isinstance(v, dict) else v
        if c.get("speed"):
            r["speed measured"] = c["speed"]  # "speed pending" until its device is free, then its conditions
        if c.get("failed"):
            r["failed metrics"] = "; ".join(f"{k}: {v}" for k, v in c["failed"].items())
        r["adapter"] = c.get("adapter_path") or ""
        r["path"] = c.get("path") or ""
        out.append(r)
    return out


def show(cands: list[dict[str, Any]]) -> None:
    if not cands:
        st.caption("This run recorded no candidates.")
        return
    st.dataframe(rows(cands), hide_index=True, width="stretch")
    with st.expander("Parameters of each candidate's last pass"):
        for c in cands:
            st.markdown(f"**{services.markdown_literal(c['model_id'])}** · {services.markdown_literal(c.get('from_pass') or '')}")
            st.json(c.get("pass_params") or {}, expanded=False)

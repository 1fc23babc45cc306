"""One candidate opened from Compare (a click on a chart point or a table row): pass chain and parameters, metrics
with their fingerprint, the kept samples, its files, chat with it, download it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import services

CHAT_PAGE = "../pages/chat.py"  # relative to app/main.py, as st.switch_page resolves it


def _chat(cid: int) -> None:
    st.session_state["chat_cand_"] = cid
    st.session_state["chat_ab"] = False


def show(cand: dict[str, Any], evaluation: dict[str, Any] | None, chat_ready: bool) -> None:
    chain = " > ".join(cand.get("pass_chain") or []) or "(input model)"
    st.markdown(f"**{services.markdown_literal(services.candidate_label(cand))}** · `{chain}`")
    c1, c2 = st.columns(2)
    with c1:
        st.caption("Metrics")
        st.dataframe(pd.DataFrame([cand.get("metrics") or {}]), hide_index=True)
        if cand.get("failed"):
            st.caption("Failed metrics")
            st.json(cand["failed"], expanded=False)
        st.caption("Pass parameters")
        st.json(cand.get("pass_params") or {}, expanded=False)
    with c2:
        fp = (evaluation or {}).get("fingerprint")
        st.caption(f"Fingerprint {(evaluation or {}).get('fingerprint_id') or '(not recorded)'}")
        if fp:
            st.json(fp, expanded=False)
        files = services.candidate_files(cand)
        st.caption(f"Files ({len(files)}{'+' if len(files) >= 200 else ''})")
        st.dataframe(
            pd.DataFrame(files, columns=["file", "size"]).assign(size=lambda d: d["size"].map(services.human_size)),
            hide_index=True,
            height=160,
        )
        b1, b2 = st.columns(2)
        if chat_ready:
            if b1.button("Chat with it", icon=":material/chat:", key=f"cmp_chat_{cand['id']}"):
                _chat(cand["id"])
                st.switch_page(CHAT_PAGE)
        else:
            b1.caption("Chat needs an ONNX (genai) or LoRA candidate on disk.")
        if files:
            b2.download_button(
                "Download it",
                lambda: services.candidate_zip(cand),
                f"grove-candidate-{cand['id']}.zip",
                "application/zip",
                icon=":material/download:",
                key=f"cmp_dl_{cand['id']}",
            )
    samples = (evaluation or {}).get("samples") or []
    st.caption(f"Kept samples: {len(samples)} held-out examples with their scores")
    if samples:
        st.dataframe(pd.DataFrame(samples), hide_index=True, height=220)

"""One streamed chat answer: pick the device, load the model (from the shared cache), attach the adapter (adapters
of other runs are checked against the base graph first), stream the text literally. Shared by plain chat, A/B and
blind A/B."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from engine.errors import GroveError


def adapter_label(cand: dict[str, Any], adapter: str) -> str:
    src = (cand.get("adapter_sources") or {}).get(adapter)
    return f"{adapter} (from run {src.get('run_label', src['run'])}, candidate #{src['candidate']})" if src else adapter


def stream(
    cand: dict[str, Any], adapter: str, msgs: list[dict[str, str]], system: str, settings: dict[str, Any], gpu: bool
) -> tuple[str, str, dict[str, Any]] | None:
    """Stream one answer into the current container; (text, summary, stats), or None after showing the error."""
    try:
        device, _ = services.chat_device(cand, gpu)
        with st.spinner(f"Loading {cand['kind']} model on {device}…"):
            model = services.chat_model(cand, device)
            services.chat_adapter(model, cand, adapter)
        if model.fallback:
            st.caption(model.fallback)
        out = model.stream(msgs, adapter=adapter, system_prompt=system or None, **settings)
        st.write_stream(services.literal_chunks(out))
    except GroveError as e:
        st.error(services.markdown_literal(str(e)) + (f"\n\n{e.hint}" if getattr(e, "hint", "") else ""))
        return None
    summary = out.stats.summary() if out.stats else ""
    st.caption(summary)
    return out.text, summary, out.stats.as_dict() if out.stats else {}

"""Pick the input model (a folder under the allowed roots, or a Hugging Face id) and show its card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import services, state

OTHER = "Other folder…"


def _label(p: str) -> str:
    if p == OTHER:
        return p
    label = services.default_model_label(p)
    if label:
        return f"{label} · {p}"
    return p


def pick(draft: dict[str, Any]) -> None:
    m = draft["model"]
    name = m.get("name") or ""
    is_hub = bool(name) and not name.startswith(("/", ".", "~")) and not Path(name).exists()
    src = st.radio(
        "Source",
        ["Local folder", "Hugging Face id"],
        index=1 if is_hub else 0,
        horizontal=True,
        key=state.key("model-src"),
    )
    if src == "Local folder":
        options = services.inputs()["models"] + [OTHER]
        idx = options.index(name) if name in options else (len(options) - 1 if name else None)
        choice = st.selectbox(
            "Model folder (recently used first)",
            options,
            index=idx,
            format_func=_label,
            placeholder="Choose a model folder",
            key=state.key("model-folder"),
        )
        path = (
            st.text_input("Folder path", value=name if not is_hub else "", key=state.key("model-path"))
            if choice == OTHER
            else choice
        )
        if path:
            if not services.is_allowed(path):
                st.error(
                    f"`{path}` is outside the allowed roots ({', '.join(services.allowed_roots())}). "
                    "Add its parent to GROVE_ALLOWED_ROOTS (a colon-separated list) and restart Grove."
                )
            elif not (Path(path).expanduser() / "config.json").is_file():
                st.error(f"`{path}` has no config.json: pick a Hugging Face model folder.")
            else:
                m["name"] = str(Path(path).expanduser().resolve())
        m["revision"] = None
    else:
        hub = st.text_input(
            "Hugging Face model id",
            value=name if is_hub else "",
            placeholder="microsoft/Phi-3.5-mini-instruct",
            key=state.key("model-hub"),
        )
        rev = st.text_input(
            "Revision (branch, tag or commit; optional)", value=m.get("revision") or "", key=state.key("model-rev")
        )
        if hub:
            m["name"], m["revision"] = hub.strip(), (rev.strip() or None)
    trust = st.checkbox(
        "Trust remote code",
        value=bool(m.get("trust_remote_code")),
        key=state.key("model-trust"),
        help="Let the model repository run its own Python code (custom architectures).",
    )
    m["trust_remote_code"] = trust
    if trust:
        st.warning(
            "trust_remote_code runs Python code from the model's repository on this machine, with your "
            "permissions. Turn it on only for authors you trust, and pin a revision.",
            icon=":material/warning:",
        )


def card(draft: dict[str, Any]) -> None:
    name = draft["model"].get("name") or ""
    if not name:
        st.info("Choose a model to see its card.")
        return
    c = services.model_card(name)
    if c is None:
        st.info(
            "No config.json available locally for this id: the card appears once the model is in the "
            "Hugging Face cache (the first run downloads it)."
        )
        return
    cols = st.columns([2, 1, 1, 1])
    cols[0].metric("Architecture", c["architecture"])
    params = c["params_exact"] or c["params_estimated"]
    cols[1].metric(
        "Parameters",
        f"{params / 1e9:.2f} B" if params and params > 5e8 else f"{(params or 0) / 1e6:.1f} M",
        help=f"from config: {c['params_estimated']:,}"
        + (f"; from weights: {c['params_exact']:,}" if c["params_exact"] else "")
        if c["params_estimated"]
        else None,
    )
    cols[2].metric("dtype", c["dtype"] + (f" ({c['quantization']})" if c["quantization"] else ""))
    cols[3].metric("Size on disk", services.human_size(c["size_on_disk"]) if c["local"] else "not downloaded")
    st.caption(
        f"{c['layers']} layers · hidden {c['hidden_size']} · {c['heads']} heads"
        + (f" ({c['kv_heads']} KV)" if c["kv_heads"] else "")
        + f" · vocab {c['vocab_size']} · "
        f"context {c['max_position_embeddings']}"
        + (" · needs its own code (trust_remote_code)" if c["remote_code"] else "")
    )
    memory(draft)


def memory(draft: dict[str, Any]) -> None:
    """Estimated peak memory of each planned pass against a run slot's memory."""
    plan = services.memory_plan(draft)
    if not plan:
        st.caption("Plan passes on the Workflow page to see a memory estimate for each.")
        return
    st.markdown("**Memory estimate per planned pass** (rough)")
    st.dataframe(
        [
            {
                "pass": e["pass"],
                "type": e["type"],
                "peak (est.)": services.estimate_gb(e["bytes"]),
                "of a slot": f"{e['share']:.0%} of {services.estimate_gb(e['slot_bytes'])} ({e['slot']})"
                if e["share"] is not None
                else "",
                "counts": e["basis"],
            }
            for e in plan
        ],
        hide_index=True,
        width="stretch",
    )

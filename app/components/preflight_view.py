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


def round_trip(r: dict | None) -> None:
    """The chat-template round trip of the first example: three renderings of one conversation side by side."""
    if not r:
        return
    if r.get("error"):
        st.caption(f"The chat-template round trip could not run: {services.markdown_literal(r['error'])}")
        return
    bad = r.get("ok") is False
    with st.expander("Chat-template round trip (first example)" + (": :red[mismatch]" if bad else ""), expanded=bad):
        if bad:
            st.error(services.markdown_literal(r["problem"]))
        elif r.get("problem"):
            st.caption(services.markdown_literal(r["problem"]))
        else:
            st.caption("Chat builds the training text's prompt exactly: the model is asked in the format it learns.")
        if r.get("chat_error"):
            st.caption("onnxruntime-genai could not render this template; chat uses transformers' rendering: "
                       + services.markdown_literal(r["chat_error"]))
        c = st.columns(3)
        for col, (title, key, help_) in zip(c, (
            ("Training text", "training", "what the run trains on (the text template, or the tokenizer's chat template)"),
            ("Tokenizer's chat template", "tokenizer", "transformers' apply_chat_template of the same conversation"),
            ("Chat prompt (onnxruntime-genai)", "chat_prompt", "what Chat and the evaluator send for the question"),
        ), strict=True):  # fmt: skip
            col.markdown(f"**{title}**", help=help_)
            col.code(r.get(key) or "(none)", language=None, wrap_lines=True)
        if r.get("trained"):
            trained = sum(p["tokens"] for p in r["trained"] if p["trained"])
            total = sum(p["tokens"] for p in r["trained"])
            st.markdown(f"**Trained tokens** ({trained} of {total}; the tokenizer's own tokens: highlighted tokens count "
                        "in the loss, grey ones are masked, labels -100)")
            _trained(r["trained"])


def _trained(pieces: list[dict]) -> None:
    import html

    body = "".join(f'<mark style="background:#c8f7c5">{html.escape(p["text"])}</mark>' if p["trained"] else
                   f'<span style="color:#888">{html.escape(p["text"])}</span>' for p in pieces)
    st.markdown(f'<pre style="white-space:pre-wrap">{body}</pre>', unsafe_allow_html=True)

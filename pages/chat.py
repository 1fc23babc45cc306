"""Chat with a candidate (ONNX outputs through onnxruntime-genai, LoRA candidates through transformers + peft), with
or without its adapter, or an adapter from another run on the same base; A/B sends one prompt to two choices side
by side, blind A/B hides which is which until the user votes. Models load on the first question."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services
from app.components import blind_ab, chat_answer

st.title("Chat")
cands = services.chat_candidates()
if not cands:
    st.info("No candidate to chat with yet: run the demo workflow (Home) and come back when it has finished.")
    st.stop()
by_id = {c["id"]: c for c in cands}


def choice(side: str, taken: tuple[int, ...] = ()) -> tuple[dict[str, Any], str]:
    ids = list(by_id)
    default, why = services.chat_best(cands, exclude=taken)  # the best measured candidate, and why
    cid = st.selectbox(
        f"Candidate {side}",
        ids,
        index=default,
        format_func=lambda i: by_id[i]["label"],
        key=f"chat_cand_{side}",
    )
    if cid == ids[default] and why and not taken:  # side B opens on the next best: no claim to be the best
        st.caption(why)
    adapters = by_id[cid]["adapters"]
    ad = st.selectbox(
        f"Adapter {side}",
        adapters,
        index=len(adapters) - 1 - len(by_id[cid].get("adapter_sources") or {}),
        format_func=lambda a: chat_answer.adapter_label(by_id[cid], a),
        key=f"chat_adapter_{cid}_{side}",
        help="“none” is the base model; adapters of other runs are checked against this base when first used",
    )
    return by_id[cid], ad


ab = st.toggle("A/B: the same prompt to two choices side by side", key="chat_ab")
blind = ab and st.toggle("Blind: hide which choice answered on which side until I vote", key="chat_blind")
cols = st.columns(2) if ab else [st.container()]
sides = []
for n, col in enumerate(cols):
    with col:
        sides.append(choice("AB"[n] if ab else "", taken=tuple(c["id"] for c, _ in sides)))

with st.expander("Settings"):
    system = st.text_area("System prompt", "You are a helpful travel assistant.", key="chat_system")
    max_new = st.slider("Max new tokens", 8, 512, 128, key="chat_max_new")
    sample = st.toggle("Sample (greedy when off: answers are reproducible)", key="chat_sample")
    temp = st.slider("Temperature", 0.1, 2.0, 0.7, disabled=not sample, key="chat_temp")
    gpu = st.toggle("Prefer a GPU when one has room", key="chat_gpu")
    loaded = services.chat_loaded()
    st.caption(
        f"Models held: {len(loaded)} ({sum(e['size_bytes'] for e in loaded) / 1e6:.0f} MB of weights)"
        if loaded
        else "No model loaded yet: the first question loads one."
    )
    if st.button("Clear history", key="chat_clear"):
        for k in [k for k in st.session_state if str(k).startswith("chat_hist:")]:
            del st.session_state[k]
settings = {
    "max_new_tokens": max_new,
    "do_sample": sample,
    "temperature": temp if sample else 1.0,
    "seed": 0 if sample else None,
}


def history(cand: dict[str, Any], adapter: str) -> list[dict[str, Any]]:
    return st.session_state.setdefault(f"chat_hist:{cand['id']}:{adapter}", [])


def feedback(cand: dict[str, Any], adapter: str, hist: list[dict[str, Any]], i: int) -> None:
    msg = hist[i]
    up, down, note = st.columns([1, 1, 8])
    for col, rating, icon in ((up, "up", ":material/thumb_up:"), (down, "down", ":material/thumb_down:")):
        if col.button("", icon=icon, key=f"fb:{cand['id']}:{adapter}:{i}:{rating}", help=f"thumbs {rating}"):
            services.save_feedback(
                rating,
                prompt=hist[i - 1]["content"],
                answer=msg["content"],
                candidate=cand,
                adapter=adapter,
                system_prompt=system,
                settings=settings,
                stats=msg.get("stats"),
            )
            msg["rated"] = rating
    if msg.get("rated"):
        note.caption(f"Saved: thumbs {msg['rated']}")


def show(cand: dict[str, Any], adapter: str) -> None:
    hist = history(cand, adapter)
    for i, m in enumerate(hist):
        with st.chat_message(m["role"]):
            st.markdown(services.markdown_literal(m["content"]))
            if m["role"] == "assistant":
                st.caption(m.get("summary", ""))
                feedback(cand, adapter, hist, i)


def answer(cand: dict[str, Any], adapter: str, prompt: str) -> None:
    hist = history(cand, adapter)
    hist.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(services.markdown_literal(prompt))
    with st.chat_message("assistant"):
        msgs = [{"role": m["role"], "content": m["content"]} for m in hist]
        got = chat_answer.stream(cand, adapter, msgs, system, settings, gpu)
        if got is None:
            hist.pop()
            return
        text, summary, stats = got
        hist.append({"role": "assistant", "content": text, "summary": summary, "stats": stats})
        feedback(cand, adapter, hist, len(hist) - 1)


if blind:
    blind_ab.show(system, settings)
    prompt = st.chat_input("Ask something; vote for the better answer", key="chat_prompt")
    if prompt:
        blind_ab.ask(sides, prompt, system, settings, gpu)
    st.stop()

cols = st.columns(2) if ab else [st.container()]
for col, (cand, adapter) in zip(cols, sides, strict=True):
    with col:
        if ab:
            st.caption(f"{cand['label']} · adapter: {adapter}")
        show(cand, adapter)
prompt = st.chat_input("Ask something (e.g. What should I see in Lisbon?)", key="chat_prompt")
if prompt:
    for col, (cand, adapter) in zip(cols, sides, strict=True):
        with col:
            answer(cand, adapter, prompt)

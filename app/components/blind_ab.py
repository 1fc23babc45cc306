"""Blind A/B in Chat: the two choices answer each prompt on sides drawn at random, unnamed until the user votes;
the vote is stored (services.save_vote) and feeds the leaderboard on Compare."""

from __future__ import annotations

import random
from typing import Any

import streamlit as st

from app import services
from app.components import chat_answer

ROUNDS = "chat_blind_rounds"


def _side(cand: dict[str, Any], adapter: str) -> dict[str, Any]:
    return {"id": cand["id"], "run_id": cand["run_id"], "path": cand.get("path"), "adapter": adapter}


def _vote(r: dict[str, Any], winner: str, system: str, settings: dict[str, Any]) -> None:
    a, b = r["shown"]  # what was on the left (A) and right (B)
    services.save_vote(winner, prompt=r["prompt"], a=a, b=b, answers=tuple(r["answers"]), system_prompt=system,
                       settings=settings)
    r["winner"] = winner


def _buttons(n: int, r: dict[str, Any], system: str, settings: dict[str, Any]) -> None:
    c = st.columns(3)
    for col, (w, text) in zip(c, (("a", "Left is better"), ("tie", "Tie"), ("b", "Right is better")), strict=True):
        col.button(text, key=f"chat_vote_{n}_{w}", on_click=_vote, args=(r, w, system, settings))


def show(system: str, settings: dict[str, Any]) -> None:
    """The rounds so far: prompt, the two answers as "Left"/"Right", vote buttons, then who was who."""
    for n, r in enumerate(st.session_state.setdefault(ROUNDS, [])):
        with st.chat_message("user"):
            st.markdown(services.markdown_literal(r["prompt"]))
        for k, col in enumerate(st.columns(2)):
            with col, st.chat_message("assistant"):
                st.markdown(services.markdown_literal(r["answers"][k]))
                if r.get("winner"):
                    st.caption(f"{'AB'[k]}: {services.markdown_literal(r['labels'][k])}")
        if r.get("winner"):
            st.caption(f"Your vote: {dict(a='left (A) better', b='right (B) better', tie='tie')[r['winner']]}")
        else:
            _buttons(n, r, system, settings)


def ask(sides: list[tuple[dict[str, Any], str]], prompt: str, system: str, settings: dict[str, Any], gpu: bool) -> None:
    """Both answers streamed on sides drawn at random, then the vote buttons (no rerun: the chat input fires once)."""
    order = [0, 1] if random.random() < 0.5 else [1, 0]
    shown = [sides[i] for i in order]
    with st.chat_message("user"):
        st.markdown(services.markdown_literal(prompt))
    answers = []
    for col, (cand, adapter) in zip(st.columns(2), shown, strict=True):
        with col, st.chat_message("assistant"):
            got = chat_answer.stream(cand, adapter, [{"role": "user", "content": prompt}], system, settings, gpu)
            if got is None:
                return
            answers.append(got[0])
    rounds = st.session_state.setdefault(ROUNDS, [])
    rounds.append(
        {
            "prompt": prompt,
            "answers": answers,
            "shown": [_side(c, a) for c, a in shown],
            "labels": [f"{c['label']} · adapter {chat_answer.adapter_label(c, a)}" for c, a in shown],
        }
    )
    _buttons(len(rounds) - 1, rounds[-1], system, settings)

"""Chat: the candidates chat can load and their labels, the one it opens on, loading a model and its adapters, and
storing votes and feedback. engine.chat is imported inside the functions that use it (it brings onnxruntime-genai,
transformers and peft): opening a page never imports them."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.services import access
from app.services.core import TTL, clear, home, registry
from engine.views import candidates as cand_views
from engine.views import labels as label_views


# -- chat ---------------------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _chat_candidates(h: str) -> list[dict[str, Any]]:
    reg = registry()
    names = {r["id"]: r["name"] for r in reg.list_runs(limit=10000)}
    return cand_views.chat_ready(reg.candidates(), chat_adapter_name, names)


def chat_candidates() -> list[dict[str, Any]]:
    """Candidates chat can load: ONNX outputs (onnxruntime-genai folders) and LoRA candidates (HF + PEFT), with
    ``kind``, ``label`` and the adapters expected (``"none"`` = the base model)."""
    return _chat_candidates(home())


def candidate_label(cand: dict[str, Any]) -> str:
    """How every page names a candidate: its build in words, its run's name and short id, its number."""
    return label_views.label(cand)


def chat_best(cands: list[dict[str, Any]], exclude: tuple[int, ...] = ()) -> tuple[int, str]:
    """(index in ``cands`` of the candidate Chat opens on, why in words): Olive's best, else the Pareto point, with the
    best quality (engine.views.labels.best); ``exclude``: candidate ids taken by the other side of A/B."""
    pool = [c for c in cands if c["id"] not in exclude] or cands
    i, why = label_views.best(pool, registry().run_specs(sorted({c["run_id"] for c in pool})))
    return (cands.index(pool[i]) if i is not None else 0), why


def chat_adapter_name(path: str) -> str:
    from engine.chat.adapters import adapter_name

    return adapter_name(path)


def _row(cand: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cand.items() if k not in ("kind", "label", "adapters", "run_name", "adapter_sources")}


def chat_device(cand: dict[str, Any], prefer_gpu: bool) -> tuple[str, str]:
    """("cpu" | "cuda:N", why): the CPU unless a GPU is preferred and has room for the model (also during a run)."""
    from engine.chat import cache as chat

    return chat.choose_device(chat.estimate_bytes(_row(cand)), "gpu" if prefer_gpu else "cpu")


def chat_model(cand: dict[str, Any], device: str = "cpu") -> Any:
    """The loaded chat model for a candidate, from the process's bounded model cache (loads on first use; raises
    GroveError, e.g. AdapterMismatch)."""
    from engine.chat import cache as chat

    return chat.default_cache().get(_row(cand), device=device)


def chat_adapter(model: Any, cand: dict[str, Any], adapter: str) -> None:
    """Make sure ``adapter`` is loaded on ``model``: adapters of other runs (``cand['adapter_sources']``) are
    attached on first use after a check against the base graph (raises AdapterMismatch, a GroveError, if not)."""
    from engine.chat.models import ensure_adapter

    src = (cand.get("adapter_sources") or {}).get(adapter)
    if src:
        ensure_adapter(model, adapter, src["path"])


def chat_loaded() -> list[dict[str, Any]]:
    from engine.chat import cache as chat

    return chat.default_cache().entries()


def literal_chunks(chunks: Any) -> Any:
    from engine.chat import text as chat

    return chat.literal_chunks(chunks)


def markdown_literal(text: str) -> str:
    from engine.chat import text as chat

    return chat.markdown_literal(text)


def save_vote(winner: str, **kw: Any) -> int:
    """Store one blind A/B vote (winner "a", "b" or "tie"; a/b: {id, run_id, path, adapter})."""
    from engine.chat import feedback as chat

    me = access.require("vote")
    r = chat.save_vote(winner, registry=registry(), user=me["user"], **kw)
    clear()
    return r


def save_feedback(rating: str, **kw: Any) -> int:
    from engine.chat import feedback as chat

    me = access.require("chat")
    kw["candidate"] = {k: v for k, v in (kw.get("candidate") or {}).items() if k in ("id", "run_id", "path")}
    return chat.save_feedback(rating, registry=registry(), user=me["user"], **kw)

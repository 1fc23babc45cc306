"""Thumbs up/down per chat answer, with what chat knows about it (model, adapter, settings, timings), kept in the
registry's database (``Registry.add_feedback`` / ``Registry.chat_feedback``: the SQL is the registry's)."""

from __future__ import annotations

import json
import time
from typing import Any

from engine import access
from engine.chat.adapters import NO_ADAPTER
from engine.chat.base import ChatStats
from engine.chat.text import ChatError


def save_feedback(
    rating: int | str,
    *,
    prompt: str,
    answer: str,
    candidate: dict[str, Any] | None = None,
    model_path: str = "",
    adapter: str | None = None,
    backend: str = "",
    system_prompt: str | None = None,
    settings: dict[str, Any] | None = None,
    stats: ChatStats | dict[str, Any] | None = None,
    comment: str = "",
    registry: Any = None,
    user: str | None = None,
) -> int:
    """Save a thumbs up (``1``/``"up"``) or down (``-1``/``"down"``) for one answer, as ``user``'s (default: the
    local user); returns the row id."""
    from engine.runs.registry import Registry  # here: importing chat stays light (sqlite_utils pulls in pandas)

    r = {"up": 1, "down": -1, "+1": 1, "-1": -1}.get(str(rating).lower(), rating)
    if r not in (1, -1):
        raise ChatError(f"rating must be up/down or 1/-1, not {rating!r}")
    cand = candidate or {}
    row = {
        "ts": time.time(),
        "rating": int(r),
        "prompt": prompt,
        "answer": answer,
        "system_prompt": system_prompt or "",
        "run_id": cand.get("run_id"),
        "candidate_id": cand.get("id"),
        "model_path": model_path or str(cand.get("path") or ""),
        "adapter": None if adapter in (None, "", NO_ADAPTER) else adapter,  # NULL: the base (the registry's convention)
        "backend": backend or (stats.backend if isinstance(stats, ChatStats) else ""),
        "settings": json.dumps(settings or {}),
        "stats": json.dumps(stats.as_dict() if isinstance(stats, ChatStats) else (stats or {})),
        "comment": comment,
        "user": user or access.local_user(),
    }
    return (registry or Registry()).add_feedback(row)


def list_feedback(
    *, candidate_id: int | None = None, model_path: str | None = None, limit: int = 1000, registry: Any = None
) -> list[dict[str, Any]]:
    """Saved feedback, newest first (settings and stats decoded; ``{}`` for rows saved without them)."""
    from engine.runs.registry import Registry

    return (registry or Registry()).chat_feedback(candidate_id=candidate_id, model_path=model_path, limit=limit)


def save_vote(
    winner: str,
    *,
    prompt: str,
    a: dict[str, Any],
    b: dict[str, Any],
    answers: tuple[str, str] = ("", ""),
    system_prompt: str | None = None,
    settings: dict[str, Any] | None = None,
    registry: Any = None,
    user: str | None = None,
) -> int:
    """Save one blind A/B vote, as ``user``'s (default: the local user) (``winner``: "a", "b" or "tie"). ``a``/``b``: {id, run_id, path, adapter} of each
    side. Stored as a feedback row (Registry.VOTE_BACKEND) so no new table is needed; returns its id."""
    from engine.runs.registry import Registry

    if winner not in ("a", "b", "tie"):
        raise ChatError(f"winner must be a, b or tie, not {winner!r}")
    keep = ("id", "run_id", "path", "adapter")
    side_a, side_b = ({k: s.get(k) for k in keep} for s in (a, b))
    reg = registry or Registry()
    row = {
        "ts": time.time(),
        "rating": {"a": 1, "b": -1, "tie": 0}[winner],
        "prompt": prompt,
        "answer": answers[0] if winner != "b" else answers[1],
        "system_prompt": system_prompt or "",
        "run_id": side_a["run_id"],
        "candidate_id": side_a["id"],
        "model_path": str(side_a["path"] or ""),
        "adapter": None if side_a["adapter"] in (None, "", NO_ADAPTER) else side_a["adapter"],
        "backend": reg.VOTE_BACKEND,
        "settings": json.dumps(
            {**(settings or {}), "blind_ab": {"a": side_a, "b": side_b, "winner": winner, "answers": list(answers)}}
        ),
        "stats": "{}",
        "comment": "",
        "user": user or access.local_user(),
    }
    return reg.add_feedback(row)

"""A dataset as the run will see it, for the pages and the pre-flight check: rendered training texts and tokens
per example (with the model's tokenizer and chat template when it has them)."""

from __future__ import annotations

from typing import Any

from engine.data import inspect as dataview
from engine.spec.schema import DatasetSpec


def rendered(ds: DatasetSpec, model: str, limit: int = 5000) -> dict[str, Any]:
    """Rendered texts (first 50), tokens per example and whether they are exact (first ``limit`` rows), rows in
    the file. Raises DataError."""
    from engine.data import prepare as data

    rows, _ = data.load_local(ds)
    ct = dataview.chat_template_of(model) if model else None
    texts = [dataview.render(r, ds, ct) for r in rows[:limit]]
    lens, exact = dataview.token_lengths(texts, dataview.tokenizer_file(model) if model else None)
    # which parts of each text are trained (the assistant turns, with the chat template)
    parts = [dataview.trained_parts(r, ds, ct) for r in rows[:50]]
    return {"texts": texts[:50], "parts": parts, "lengths": lens, "exact": exact, "rows": len(rows)}

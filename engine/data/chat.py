"""A conversation rendered with the model's chat template, and which of its tokens are trained.

Training sees the whole conversation, but the loss counts only the assistant turns: every other token (system,
user, the template's role headers) gets the label -100, which the loss ignores. The assistant turns are found
from the template itself, so any chat template works: for assistant turn *i*, the conversation up to *i* rendered
with the generation prompt is the text before the turn, and the conversation through *i* rendered is the text
through it (the turn's text and the template's end-of-turn marker, which teaches the model to stop). A template
that rewrites earlier turns (so those renderings are not prefixes of the whole) falls back to the turn's text as
it appears in the whole.

Nothing here imports transformers: ``tokenizer`` is any Hugging Face tokenizer object, passed in by the callers
(Olive's pre-processing in ``engine.data.olive_chat``, the template preview in ``engine.models.tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

IGNORE = -100  # the label the loss skips (torch.nn.CrossEntropyLoss's ignore_index, Olive's IGNORE_INDEX)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(messages: list[dict[str, str]], renderer: Callable[[list[dict[str, str]], bool], str]) -> tuple[str, list[tuple[int, int]]]:
    """``(full text, [(start, end) character spans of the assistant turns])``; ``renderer(msgs, add_gen)``."""
    full = renderer(messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        span: tuple[int, int] | None = None
        try:
            before = renderer(messages[:i], True) if i else ""
            through = renderer(messages[: i + 1], False)
        except Exception:  # noqa: BLE001 - a template that refuses partial conversations: use the fallback
            before = through = None
        if before is not None and through is not None and full.startswith(through) and through.startswith(before) \
                and len(before) >= cursor and len(through) > len(before):
            span = (len(before), len(through))
        else:
            at = full.find(m["content"], cursor)
            if at >= 0:
                span = (at, at + len(m["content"]))
        if span:
            spans.append(span)
            cursor = span[1]
    return full, spans


def _offsets_tokenize(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError, KeyError):  # slow tokenizers have no offsets
        return list(tokenizer(text, add_special_tokens=False)["input_ids"]), None


def tokenize(tokenizer: Any, messages: list[dict[str, str]], max_len: int | None = None) -> dict[str, Any]:
    """``{"text", "input_ids", "labels", "spans"}`` for one conversation: labels are the ids of assistant-turn
    tokens and -100 elsewhere; cut to ``max_len`` tokens. The text is tokenized as a whole with no special tokens
    added (the chat template writes its own), as Olive tokenizes a chat-templated dataset."""
    full, spans = assistant_spans(messages, lambda msgs, gen: render(tokenizer, msgs, gen))
    ids, offsets = _offsets_tokenize(tokenizer, full)
    if offsets is not None:
        # a token is trained when its characters overlap an assistant span
        trained = [any(s < e_tok and b < e for s, e in spans) for b, e_tok in offsets]
    else:  # tokenize piece by piece: trained and untrained pieces in order
        ids, trained, at = [], [], 0
        for s, e in [*spans, (len(full), len(full))]:
            for piece, flag in ((full[at:s], False), (full[s:e], True)):
                if piece:
                    p_ids = list(tokenizer(piece, add_special_tokens=False)["input_ids"])
                    ids += p_ids
                    trained += [flag] * len(p_ids)
            at = e
    labels = [t if flag else IGNORE for t, flag in zip(ids, trained, strict=True)]
    if max_len:
        ids, labels = ids[:max_len], labels[:max_len]
    return {"text": full, "input_ids": ids, "labels": labels, "spans": spans}


def pieces(tokenizer: Any, messages: list[dict[str, str]], max_len: int | None = None) -> list[dict[str, Any]]:
    """The conversation's tokens for a preview: ``[{"text": piece, "trained": bool}]``, runs of tokens merged."""
    t = tokenize(tokenizer, messages, max_len)
    out: list[dict[str, Any]] = []
    for tid, label in zip(t["input_ids"], t["labels"], strict=True):
        flag = label != IGNORE
        text = tokenizer.decode([tid])
        if out and out[-1]["trained"] == flag:
            out[-1]["text"] += text
            out[-1]["tokens"] += 1
        else:
            out.append({"text": text, "trained": flag, "tokens": 1})
    return out

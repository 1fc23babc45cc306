"""The shapes people keep chat datasets in, detected and turned into one conversation form.

=================  ==========================================================================================
format             a row looks like
=================  ==========================================================================================
``messages``       OpenAI / TRL: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``
``sharegpt``       ShareGPT: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
                   (also ``role``/``content`` keys inside, and ``user``/``assistant``/``chatgpt`` for ``from``)
``alpaca``         ``{"instruction": ..., "input": ..., "output": ...}``; ``input`` (optional) joins the user turn
``prompt_response````{"prompt": ..., "response": ...}`` (or the columns named by ``prompt_column``/``response_column``)
``text``           ``{"text": ...}``: the conversation already rendered (trained on as is)
=================  ==========================================================================================

``messages``, ``sharegpt`` and ``alpaca`` are rendered with the model's own chat template and trained on the
assistant turns only (``engine.data.chat``). ``to_messages`` turns one row into ``[{"role", "content"}, ...]`` or
raises ``DataError`` naming the line and what is wrong (an unknown role, a turn with no text, no assistant turn).
"""

from __future__ import annotations

from typing import Any

from engine.errors import DataError
from engine.spec.schema import CONVERSATION_FORMATS, DatasetSpec

# words Grove uses for each format (messages, the UI)
DESCRIBE = {
    "messages": "conversations in the OpenAI/TRL 'messages' format (role/content turns)",
    "sharegpt": "conversations in the ShareGPT format ('conversations' with from/value turns)",
    "alpaca": "Alpaca instructions (instruction/input/output)",
    "prompt_response": "prompt/response pairs",
    "text": "one 'text' field each, already templated",
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "model": "assistant", "system": "system"}  # fmt: skip


def detect(rows: list[dict[str, Any]], ds: DatasetSpec | None = None) -> str | None:
    """The format every one of ``rows`` (as in the file, before renaming) has, or None. The first of: ``messages``,
    ``sharegpt``, ``alpaca``, ``prompt_response``, ``text``."""
    if not rows:
        return None
    cols = ds.columns if ds else {}
    mapped = [{cols.get(k, k): v for k, v in r.items()} for r in rows]
    prompt, response = (ds.prompt_column, ds.response_column) if ds else ("prompt", "response")
    if all(isinstance(r.get("messages"), list) for r in mapped):
        return "messages"
    if all(isinstance(r.get("conversations"), list) for r in mapped):
        return "sharegpt"
    if all(isinstance(r.get("instruction"), str) and "output" in r for r in mapped):
        return "alpaca"
    if all(prompt in r and response in r for r in mapped):
        return "prompt_response"
    if all(isinstance(r.get("text"), str) and r["text"].strip() for r in mapped):
        return "text"
    return None


def needed_columns(fmt: str, ds: DatasetSpec) -> list[str]:
    """The columns (after renaming) a row of this format must have."""
    if fmt == "messages":
        return ["messages"]
    if fmt == "sharegpt":
        return ["conversations"]
    if fmt == "alpaca":
        return ["instruction", "output"]
    if fmt == "prompt_response" and ds.chat_template:
        return [ds.prompt_column, ds.response_column]
    return ds.template_fields


def _text(v: Any) -> str | None:
    """A turn's text: a string, or OpenAI's list of content parts ``[{"type": "text", "text": ...}]``."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in v):
        return "".join(str(p.get("text", "")) for p in v)
    return None


def _turns(where: str, turns: Any, col: str, role_keys: tuple[str, ...], text_keys: tuple[str, ...],
           roles: dict[str, str]) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: '{col}' must be a non-empty list of turns")
    out = []
    for j, t in enumerate(turns):
        if not isinstance(t, dict):
            raise DataError(f"{where}: {col}[{j}] must be an object with a role and a text, not {type(t).__name__}")
        rk = next((k for k in role_keys if k in t), None)
        tk = next((k for k in text_keys if k in t), None)
        if rk is None or tk is None:
            raise DataError(f"{where}: {col}[{j}] needs '{role_keys[0]}' and '{text_keys[0]}' (has: "
                            f"{', '.join(map(str, t)) or 'nothing'})")
        role = roles.get(str(t[rk]).strip().lower())
        if role is None:
            raise DataError(f"{where}: {col}[{j}] has the unknown {rk} {t[rk]!r}; known: {', '.join(sorted(roles))}")
        text = _text(t[tk])
        if text is None:
            raise DataError(f"{where}: {col}[{j}].{tk} must be text, not {type(t[tk]).__name__}")
        out.append({"role": role, "content": text})
    return out


def _check_conversation(where: str, msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        raise DataError(f"{where}: the conversation has no assistant turn with text: nothing to train on")
    for j, m in enumerate(msgs):
        if m["role"] == "system" and j > 0:
            raise DataError(f"{where}: turn {j} is a system message; a system message can only come first")
        if m["role"] == "assistant" and not m["content"].strip():
            raise DataError(f"{where}: turn {j} (assistant) is empty")
    return msgs


def to_messages(row: dict[str, Any], fmt: str, ds: DatasetSpec, where: str) -> list[dict[str, str]]:
    """One (renamed) row of format ``fmt`` as a conversation, the dataset's system prompt first when it has none."""
    if fmt == "messages":
        msgs = _turns(where, row.get("messages"), "messages", ("role",), ("content",), {r: r for r in ROLES})
    elif fmt == "sharegpt":
        msgs = _turns(where, row.get("conversations"), "conversations", ("from", "role"), ("value", "content"),
                      SHAREGPT_ROLES)
    elif fmt == "alpaca":
        instruction, extra = row.get("instruction"), row.get("input")
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError(f"{where}: column 'instruction' is missing or empty")
        output = row.get("output")
        if not isinstance(output, str) or not output.strip():
            raise DataError(f"{where}: column 'output' is missing or empty")
        user = instruction.strip() + (f"\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    elif fmt == "prompt_response":
        msgs = [{"role": "user", "content": str(row[ds.prompt_column])},
                {"role": "assistant", "content": str(row[ds.response_column])}]
    else:
        raise DataError(f"{where}: format '{fmt}' holds no conversation")
    msgs = [{"role": m["role"], "content": m["content"].replace("\r\n", "\n").replace("\r", "\n").strip()}
            for m in msgs]
    if ds.system_prompt and not (msgs and msgs[0]["role"] == "system"):
        msgs.insert(0, {"role": "system", "content": ds.system_prompt})
    return _check_conversation(where, msgs)


def is_conversation(fmt: str | None) -> bool:
    return fmt in CONVERSATION_FORMATS


def offer(fmt: str | None, path: str) -> str | None:
    """What Grove offers for a dataset of format ``fmt`` that has no template setting, in words (or None)."""
    if fmt == "text":
        return (f"the rows of {path} hold one 'text' field, already templated: set text_template: '{{text}}' "
                "to train on the text as is")
    if fmt in CONVERSATION_FORMATS:
        return (f"the rows of {path} are {DESCRIBE[fmt]}: set format: {fmt} (or chat_template: true) to render them "
                "with the model's chat template and train on the assistant turns only")
    return None

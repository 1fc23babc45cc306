"""What goes into and comes out of a chat model as text: the conversation a request sends (``build_messages``) and
answers shown literally in Markdown (``markdown_literal``, ``literal_chunks``).

Model output is plain text, never HTML: ``ChatStream.text`` keeps the raw answer (for history and feedback); what
Streamlit renders as Markdown goes through ``markdown_literal`` so it shows exactly what the model wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from engine.errors import GroveError

Message = dict[str, str]


class ChatError(GroveError):
    """A chat request cannot be served (unknown adapter, prompt longer than the model's context, ...)."""


# Characters Markdown (and Streamlit's extensions: :emoji:, :color[...], $math$) would interpret; escaping each one
# with a backslash makes the renderer show it as typed. Per character, so it is safe chunk by chunk.
_MARKDOWN_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:&=\"'^")


def markdown_literal(text: str) -> str:
    """``text`` as Markdown that renders as exactly that text (HTML and script shown, never run; line breaks kept).

    ``st.write_stream`` and ``st.markdown`` render Markdown: pass answers through this (or ``literal_chunks``), or
    show them with ``st.text``/``st.code``. Keep ``ChatStream.text`` (the raw answer) for history and feedback."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else ("  \n" if c == "\n" else c) for c in text)


def literal_chunks(chunks: Iterable[str]) -> Iterator[str]:
    """``markdown_literal`` of each chunk: ``st.write_stream(literal_chunks(stream))`` streams the answer as text."""
    for c in chunks:
        yield markdown_literal(c)


def build_messages(messages: Sequence[Message], system_prompt: str | None = None) -> list[Message]:
    """``messages`` as plain role/content dicts, with ``system_prompt`` (when given) replacing any system message."""
    out = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if system_prompt:
        out = [m for m in out if m["role"] != "system"]
        out.insert(0, {"role": "system", "content": system_prompt})
    if not out or out[-1]["role"] != "user":
        raise ChatError("the last message must be the user's")
    return out

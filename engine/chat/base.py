"""What every chat model is: ``ChatModel`` (adapters, streaming, use counting for the model cache), the
``ChatStream`` an answer is read from, its ``ChatStats`` and the ``Sampling`` settings, and the helpers both
backends share (fitting a conversation into the context, timings, the size of the weights on disk).

The backends are ``engine.chat.genai_model`` (onnxruntime-genai) and ``engine.chat.hf_model`` (transformers +
peft); ``engine.chat.models`` picks one for a candidate or a folder and loads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.chat.adapters import NO_ADAPTER, AdapterMismatch
from engine.chat.text import ChatError, Message, build_messages

WEIGHT_SUFFIXES = (".onnx", ".data", ".onnx_adapter", ".safetensors", ".bin", ".pt", ".pth", ".gguf")


# -- requests and results ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """Generation settings. Greedy by default so that answers are reproducible."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    seed: int | None = None  # sampling with a seed gives the same answer again; None: a fresh one each time


@dataclass
class ChatStats:
    """Timings of one answer; every duration in seconds."""

    backend: str
    adapter: str
    device: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float | None = None  # request start (template, tokenize, prefill) -> first generated token
    prefill_s: float | None = None
    decode_tokens_per_s: float | None = None  # tokens after the first, over the time after the first
    total_s: float = 0.0
    adapter_switch_s: float = 0.0  # activating the adapter for this answer
    stop_reason: str = ""  # eos | length | cancelled | error
    trimmed_messages: int = 0  # oldest history messages left out to fit the context

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        ttft = f"{self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "—"
        tps = f"{self.decode_tokens_per_s:.0f} tok/s" if self.decode_tokens_per_s else "—"
        return f"first token {ttft} · {tps} · {self.new_tokens} tokens · {self.adapter} · {self.device}"


class ChatStream:
    """An answer being generated: iterate for text chunks; ``text`` and ``stats`` are complete after the last one.

    Iterate it once. Stopping early (``close()``, or a consumer that goes away) stops generation.
    """

    def __init__(self, run: Callable[[ChatStream], Iterator[str]]) -> None:
        self.text = ""
        self.stats: ChatStats | None = None
        self._it = run(self)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        chunk = next(self._it)
        self.text += chunk
        return chunk

    @property
    def done(self) -> bool:
        return self.stats is not None

    def close(self) -> None:
        self._it.close()  # type: ignore[attr-defined]

    def read(self) -> str:
        """Consume the rest; the whole answer."""
        for _ in self:
            pass
        return self.text


# -- backends ----------------------------------------------------------------------------------------------
class ChatModel:
    """A loaded model that answers chat messages. ``adapters`` lists what ``stream(adapter=...)`` accepts;
    ``"none"`` (the base model) is always first."""

    backend = ""

    def __init__(self, path: Path, device: str, adapter_files: dict[str, Path], size_bytes: int) -> None:
        self.path = path
        self.device = device
        self.adapter_files = adapter_files
        self.size_bytes = size_bytes
        self.load_s = 0.0
        self.refused: dict[str, AdapterMismatch] = {}  # adapters left out (load(strict=False)), with why
        self.closed = False
        self.fallback = ""  # why the model runs on the CPU although a GPU was asked for
        self._streams = 0  # answers being generated now (by any browser session)
        self._retired = False  # evicted from the cache: close when the last answer ends
        self._use_lock = threading.Lock()

    @property
    def adapters(self) -> list[str]:
        return [NO_ADAPTER, *self.adapter_files]

    def _adapter_name(self, adapter: str | None) -> str | None:
        if adapter in (None, "", NO_ADAPTER):
            return None
        if adapter not in self.adapter_files:
            raise ChatError(f"adapter {adapter!r} is not loaded for {self.path}; available: {', '.join(self.adapters)}")
        return adapter

    def _new_name(self, name: str) -> str:
        if name in self.adapter_files or name == NO_ADAPTER:
            raise ChatError(f"an adapter named {name!r} is already loaded for {self.path}")
        return name

    def _added(self, name: str, path: Path, size: int) -> str:
        self.adapter_files[name] = path
        self.size_bytes += size
        return name

    def stream(
        self,
        messages: Sequence[Message],
        *,
        adapter: str | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 50,
        seed: int | None = None,
        prefill: str | None = None,
    ) -> ChatStream:
        """Answer the conversation ``messages`` (the last one is the user's), streamed.

        ``adapter``: a name from ``adapters`` (None or "none": the base model). ``prefill``: text the answer starts
        with; it goes through the model's tokenizer like generated text and is part of the answer. ``seed``: for
        sampling (``do_sample=True``), the same seed gives the same answer.
        """
        if self.closed:
            raise ChatError(f"{self.path} was unloaded (evicted from the model cache): load it again")
        name = self._adapter_name(adapter)
        msgs = build_messages(messages, system_prompt)
        sampling = Sampling(
            max(1, int(max_new_tokens)),
            bool(do_sample),
            float(temperature),
            float(top_p),
            int(top_k),
            None if seed is None else int(seed),
        )
        return ChatStream(lambda st: self._in_use(self._generate(st, msgs, name, sampling, prefill or "")))

    def _in_use(self, chunks: Iterator[str]) -> Iterator[str]:
        """Generate while counted as in use, so that eviction by another session never closes a model mid-answer."""
        with self._use_lock:
            self._streams += 1
        try:
            yield from chunks
        finally:
            with self._use_lock:
                self._streams -= 1
                close_now = self._retired and self._streams == 0
            if close_now:
                self.close()

    def retire(self) -> None:
        """Close now, or when the answers being generated end (the model cache evicted it)."""
        with self._use_lock:
            self._retired = True
            busy = self._streams > 0
        if not busy:
            self.close()

    def answer(self, messages: Sequence[Message], **kw: Any) -> tuple[str, ChatStats]:
        """The whole answer at once, and its stats."""
        s = self.stream(messages, **kw)
        text = s.read()
        assert s.stats is not None
        return text, s.stats

    def _generate(
        self, st: ChatStream, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        stats = ChatStats(self.backend, adapter or NO_ADAPTER, self.device)
        try:
            yield from self._run(stats, msgs, adapter, sampling, prefill)
        finally:  # after the backend's own clean-up: timings are complete, stop_reason set
            st.stats = stats

    def _run(
        self, stats: ChatStats, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "path": str(self.path),
            "device": self.device,
            "adapters": self.adapters,
            "adapter_files": {k: str(v) for k, v in self.adapter_files.items()},
            "size_bytes": self.size_bytes,
            "load_s": self.load_s,
            "refused": {k: str(v) for k, v in self.refused.items()},
            "fallback": self.fallback,
        }

    def close(self) -> None:
        """Drop the loaded weights (a stream still running keeps what it needs until it ends)."""
        self.closed = True


def set_timings(stats: ChatStats, t0: float, t_first: float | None, t_last: float | None, n: int) -> None:
    stats.new_tokens = n
    stats.total_s = time.perf_counter() - t0
    if t_first is not None:
        stats.ttft_s = t_first - t0
        if n > 1 and t_last is not None and t_last > t_first:
            stats.decode_tokens_per_s = (n - 1) / (t_last - t_first)



def fit_context(
    msgs: list[Message], encode: Callable[[list[Message]], Any], context: int
) -> tuple[list[Message], int, Any]:
    """Leave out the oldest history (never the system prompt or the last message) until prompt + 1 token fits.
    Returns the messages kept, how many were left out, and the prompt's token ids."""
    dropped = 0
    while True:
        ids = encode(msgs)
        n = len(ids)
        if n + 1 <= context:
            return msgs, dropped, ids
        history = [i for i, m in enumerate(msgs[:-1]) if m["role"] != "system"]
        if not history:
            raise ChatError(f"the prompt is {n} tokens; the model's context is {context} tokens: shorten the message")
        del msgs[history[0]]
        dropped += 1



def weights_bytes(*paths: Path | str) -> int:
    """Bytes of weight files on disk under the given folders/files: what a loaded model holds, roughly."""
    total = 0
    seen: set[Path] = set()
    for p in map(Path, paths):
        files = [p] if p.is_file() else (sorted(p.rglob("*")) if p.is_dir() else [])
        for f in files:
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES and f.resolve() not in seen:
                seen.add(f.resolve())
                total += f.stat().st_size
    return total

"""Chat with a candidate: onnxruntime-genai folders (all their adapters loaded once, switched per message) and
Hugging Face folders (transformers, + peft for adapters), streamed, with timings.

- ``load(source)`` -> ``ChatModel``: ``source`` is a registry candidate (dict) or a folder. ``GenaiChatModel`` for a
  folder with ``genai_config.json``, ``HfChatModel`` for a folder with ``config.json`` (+ the candidate's PEFT adapter).
- ``ChatModel.stream(messages, adapter=...)`` -> ``ChatStream``: iterate it for text chunks (``st.write_stream`` takes
  it as is); after the last chunk ``.stats`` holds time to first token, decode tokens/s, token counts, the adapter
  switch cost. ``.text`` is the raw answer: model output is plain text, never HTML (nothing is escaped or stripped).
- Adapters are checked against the model before anything loads them: an ``.onnx_adapter`` whose tensor names,
  shapes or types are not inputs of the graph (e.g. converted for another graph: NOTES-olive C.9), or a PEFT adapter
  whose target modules the model does not have, raises ``AdapterMismatch`` naming the file and the first offenders.
- ``ModelCache``: loaded models, at most ``GROVE_CHAT_MAX_MODELS`` (default 2), least recently used evicted; each
  entry states its weights' size on disk (what the UI shows as memory). Thread-safe.
- ``can_use_gpu`` / ``choose_device``: the CPU by default; a GPU only when asked for and when its free memory
  (nvidia-smi) fits the model, also while a run uses it.
- ``save_feedback`` / ``list_feedback``: thumbs up/down per answer, in the registry's database (``feedback`` table,
  created here when missing).

onnxruntime-genai, onnx, onnxruntime, torch, transformers and peft are imported inside functions: importing this
module is cheap (the UI process imports it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import machine
from engine.errors import GroveError, ModelError

NO_ADAPTER = "none"
DEFAULT_ADAPTER_NAME = "adapter"  # what ``adapter_weights.onnx_adapter`` (and a candidate's PEFT adapter) is called
DEFAULT_MAX_MODELS = 2
WEIGHT_SUFFIXES = (".onnx", ".data", ".onnx_adapter", ".safetensors", ".bin", ".pt", ".pth", ".gguf")

Message = dict[str, str]
Source = str | Path | dict[str, Any]


class AdapterMismatch(GroveError):
    """An adapter does not fit the model it is meant for. ``adapter`` is the file or folder, ``problems`` the offenders."""

    def __init__(self, adapter: Path | str, problems: list[str], *, what: str, hint: str = "") -> None:
        self.adapter = str(adapter)
        self.problems = problems
        shown = problems[:5]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        super().__init__(
            f"Adapter {self.adapter} does not match the model: {what}: " + "; ".join(shown) + more,
            hint=hint
            or "Use an adapter produced for this model (for ONNX: the adapter_weights.onnx_adapter of a run with "
            "the same base and ModelBuilder settings; adapters from `olive convert-adapters` have PEFT names and "
            "do not fit ModelBuilder graphs).",
        )


class ChatError(GroveError):
    """A chat request cannot be served (unknown adapter, prompt longer than the model's context, ...)."""


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

    @property
    def adapters(self) -> list[str]:
        return [NO_ADAPTER, *self.adapter_files]

    def _adapter_name(self, adapter: str | None) -> str | None:
        if adapter in (None, "", NO_ADAPTER):
            return None
        if adapter not in self.adapter_files:
            raise ChatError(f"adapter {adapter!r} is not loaded for {self.path}; available: {', '.join(self.adapters)}")
        return adapter

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
        return ChatStream(lambda st: self._run(st, msgs, name, sampling, prefill or ""))

    def answer(self, messages: Sequence[Message], **kw: Any) -> tuple[str, ChatStats]:
        """The whole answer at once, and its stats."""
        s = self.stream(messages, **kw)
        text = s.read()
        assert s.stats is not None
        return text, s.stats

    def _run(
        self, st: ChatStream, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
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


def _timings(stats: ChatStats, t0: float, t_first: float | None, t_last: float | None, n: int) -> None:
    stats.new_tokens = n
    stats.total_s = time.perf_counter() - t0
    if t_first is not None:
        stats.ttft_s = t_first - t0
        if n > 1 and t_last is not None and t_last > t_first:
            stats.decode_tokens_per_s = (n - 1) / (t_last - t_first)


class GenaiChatModel(ChatModel):
    """An onnxruntime-genai folder: one ``og.Model``, every ``.onnx_adapter`` of the folder in one ``og.Adapters``."""

    backend = "onnxruntime-genai"

    def __init__(
        self, folder: Path, *, device: str = "cpu", extra_adapters: Sequence[Path | str] = (), strict: bool = True
    ) -> None:
        import onnxruntime_genai as og

        t0 = time.perf_counter()
        folder = Path(folder)
        files = {adapter_name(p): p for p in sorted(folder.glob("*.onnx_adapter"))}
        for p in map(Path, extra_adapters):
            files.setdefault(adapter_name(p), p)
        self._model_file, ctx = _genai_model_file(folder)
        self._inputs = onnx_graph_inputs(self._model_file)
        refused: dict[str, AdapterMismatch] = {}
        for name, p in list(files.items()):
            try:
                check_onnx_adapter(p, self._inputs, self._model_file)  # before onnxruntime ever sees it
            except AdapterMismatch as e:
                if strict:
                    raise
                refused[name] = e
                del files[name]
        super().__init__(folder, device, files, weights_bytes(folder, *files.values()))
        self.refused = refused
        config = og.Config(str(folder))
        config.clear_providers()
        if device.startswith("cuda"):
            config.append_provider("cuda")
            config.set_provider_option("cuda", "device_id", device.partition(":")[2] or "0")
        self.context_length = ctx
        self._model = og.Model(config)
        self._tok = og.Tokenizer(self._model)
        self._adapters = og.Adapters(self._model)
        for name, p in files.items():
            self._adapters.load(str(p), name)
        self._eos = set(_genai_eos(folder))
        self.load_s = time.perf_counter() - t0

    def add_adapter(self, path: Path | str, name: str | None = None) -> str:
        """Check and load one more ``.onnx_adapter``; returns its name. ``AdapterMismatch`` if it does not fit."""
        p = Path(path).resolve()
        name = name or adapter_name(p)
        if name in self.adapter_files or name == NO_ADAPTER:
            raise ChatError(f"an adapter named {name!r} is already loaded for {self.path}")
        check_onnx_adapter(p, self._inputs, self._model_file)
        self._adapters.load(str(p), name)
        self.adapter_files[name] = p
        self.size_bytes += p.stat().st_size
        return name

    def _encode(self, msgs: list[Message]) -> Any:
        prompt = self._tok.apply_chat_template(json.dumps(msgs), add_generation_prompt=True)
        return self._tok.encode(prompt)

    def _run(
        self, st: ChatStream, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        import numpy as np
        import onnxruntime_genai as og

        stats = ChatStats(self.backend, adapter or NO_ADAPTER, self.device)
        t0 = time.perf_counter()
        t_first = t_last = None
        n = 0
        gen = None
        model, tok, adapters = self._model, self._tok, self._adapters  # a close() meanwhile leaves this answer alone
        try:
            msgs, stats.trimmed_messages, ids = _fit_context(msgs, self._encode, self.context_length)
            ids = np.asarray(ids, dtype=np.int32)
            pre = np.asarray(tok.encode(prefill), dtype=np.int32) if prefill else np.zeros(0, np.int32)
            if pre.size and pre[0] == tok.bos_token_id:
                pre = pre[1:]
            ids = np.concatenate([ids, pre])
            stats.prompt_tokens = int(ids.size - pre.size)
            if ids.size >= self.context_length:
                raise ChatError(f"the prompt is {ids.size} tokens; the model's context is {self.context_length} tokens")
            params = og.GeneratorParams(model)
            # An explicit seed also saves ~15 ms a message: without one, genai seeds its sampler from
            # std::random_device, which is slow on some (virtual) CPUs, even for greedy search.
            seed = sampling.seed if sampling.seed is not None else secrets.randbits(31)
            opts: dict[str, Any] = {
                "max_length": min(self.context_length, int(ids.size) + sampling.max_new_tokens),
                "do_sample": sampling.do_sample,
                "batch_size": 1,
                "random_seed": seed,
            }
            if sampling.do_sample:
                opts.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            params.set_search_options(**opts)
            gen = og.Generator(model, params)
            if adapter:
                ts = time.perf_counter()
                gen.set_active_adapter(adapters, adapter)
                stats.adapter_switch_s = time.perf_counter() - ts
            tp = time.perf_counter()
            gen.append_tokens(ids)
            stats.prefill_s = time.perf_counter() - tp
            decoder = tok.create_stream()
            for t in pre:
                text = decoder.decode(int(t))
                if text:
                    yield text
            last = None
            while not gen.is_done():
                gen.generate_next_token()
                last = int(gen.get_next_tokens()[0])
                t_last = time.perf_counter()
                if t_first is None:
                    t_first = t_last
                n += 1
                text = decoder.decode(last)
                if text:
                    yield text
            stats.stop_reason = "eos" if last in self._eos else "length"
        except GeneratorExit:
            stats.stop_reason = "cancelled"
            raise
        except Exception:
            stats.stop_reason = "error"
            raise
        finally:
            del gen
            _timings(stats, t0, t_first, t_last, n)
            st.stats = stats

    def close(self) -> None:
        # adapters before the model; a stream still running holds its own references until it ends
        self.closed = True
        self._adapters = self._tok = self._model = None  # type: ignore[assignment]


class HfChatModel(ChatModel):
    """A Hugging Face folder through transformers; PEFT adapters through peft, switched with ``set_adapter`` and
    ``disable_adapter``. One answer at a time per model (the active adapter is model state)."""

    backend = "transformers"

    def __init__(
        self,
        folder: Path,
        *,
        device: str = "cpu",
        adapters: Sequence[Path | str] = (),
        adapter_names: Sequence[str] = (),
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        threads = os.environ.get("GROVE_CHAT_TORCH_THREADS", "").strip()
        if threads.isdigit() and int(threads) > 0:
            # process-wide; on a small busy CPU one thread decodes a small model several times faster than
            # torch's default (one per core), which spins against the other processes
            torch.set_num_threads(int(threads))
        folder = Path(folder)
        files: dict[str, Path] = {}
        for i, p in enumerate(map(Path, adapters)):
            files[adapter_names[i] if i < len(adapter_names) else p.name] = p
        super().__init__(folder, device, files, weights_bytes(folder, *files.values()))
        self._lock = threading.Lock()
        self._tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.to(device)
        self._module_names = [n for n, _ in model.named_modules()]
        for p in files.values():
            check_peft_adapter(p, self._module_names, folder)
        if files:
            from peft import PeftModel

            for name, p in files.items():
                try:
                    if isinstance(model, PeftModel):
                        model.load_adapter(str(p), adapter_name=name, is_trainable=False)
                    else:
                        model = PeftModel.from_pretrained(model, str(p), adapter_name=name, is_trainable=False)
                except (RuntimeError, ValueError, KeyError) as e:  # shapes that do not fit (size mismatch), bad config
                    raise AdapterMismatch(p, _peft_problems(e), what="peft could not load it") from e
        model.eval()
        self._model = model
        self._eos = _hf_eos(model, self._tok)
        self.load_s = time.perf_counter() - t0

    def add_adapter(self, path: Path | str, name: str | None = None) -> str:
        """Check and load one more PEFT adapter folder; returns its name. ``AdapterMismatch`` if it does not fit."""
        from peft import PeftModel

        p = Path(path).resolve()
        name = name or p.name
        if name in self.adapter_files or name == NO_ADAPTER:
            raise ChatError(f"an adapter named {name!r} is already loaded for {self.path}")
        check_peft_adapter(p, self._module_names, self.path)
        with self._lock:
            try:
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(str(p), adapter_name=name, is_trainable=False)
                else:
                    self._model = PeftModel.from_pretrained(self._model, str(p), adapter_name=name, is_trainable=False)
            except (RuntimeError, ValueError, KeyError) as e:
                raise AdapterMismatch(p, _peft_problems(e), what="peft could not load it") from e
            self._model.eval()
        self.adapter_files[name] = p
        self.size_bytes += weights_bytes(p)
        return name

    def _encode(self, msgs: list[Message]) -> list[int]:
        ids = self._tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def _run(
        self, st: ChatStream, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        stats = ChatStats(self.backend, adapter or NO_ADAPTER, self.device)
        t0 = time.perf_counter()
        cancel = threading.Event()
        streamer = None
        failure: list[BaseException] = []
        thread = None
        try:
            ctx_len = int(getattr(self._model.config, "max_position_embeddings", 0) or 0) or 1 << 30
            msgs, stats.trimmed_messages, ids = _fit_context(msgs, self._encode, ctx_len)
            pre = self._tok.encode(prefill, add_special_tokens=False) if prefill else []
            stats.prompt_tokens = len(ids)
            input_ids = torch.tensor([ids + pre], dtype=torch.long, device=self.device)
            streamer = _TimedStreamer(self._tok)

            class _Cancel(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                    return cancel.is_set()

            kwargs: dict[str, Any] = {
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "max_new_tokens": min(sampling.max_new_tokens, max(1, ctx_len - input_ids.shape[1])),
                "do_sample": sampling.do_sample,
                "streamer": streamer,
                "stopping_criteria": StoppingCriteriaList([_Cancel()]),
                "pad_token_id": self._tok.pad_token_id
                if self._tok.pad_token_id is not None
                else next(iter(self._eos), 0),
                "eos_token_id": sorted(self._eos) or None,
            }
            if sampling.do_sample:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)

            def work() -> None:
                try:
                    with self._lock:
                        model = self._model
                        if sampling.do_sample and sampling.seed is not None:
                            # process-wide: reproducible unless another model samples at the same time
                            torch.manual_seed(sampling.seed)
                        stats.adapter_switch_s = self._activate(model, adapter)
                        ctx = model.disable_adapter() if (adapter is None and self.adapter_files) else nullcontext()
                        with ctx, torch.inference_mode():
                            model.generate(**kwargs)
                except BaseException as e:  # surfaced in the consumer's thread
                    failure.append(e)
                    streamer.end()

            if pre:
                text = self._tok.decode(pre, skip_special_tokens=True)
                if text:
                    yield text
            thread = threading.Thread(target=work, name="grove-chat-hf", daemon=True)
            thread.start()
            for text in streamer:
                if text:
                    yield text
            thread.join()
            if failure:
                raise failure[0]
            last = streamer.tokens[-1] if streamer.tokens else None
            stats.stop_reason = "eos" if last in self._eos else ("cancelled" if cancel.is_set() else "length")
        except GeneratorExit:
            stats.stop_reason = "cancelled"
            raise
        except Exception:
            stats.stop_reason = stats.stop_reason or "error"
            raise
        finally:
            cancel.set()
            if thread is not None:
                thread.join(timeout=5)
            n = len(streamer.tokens) if streamer else 0
            stats.prefill_s = (
                streamer.t_first - streamer.t_start if streamer and streamer.t_first and streamer.t_start else None
            )
            _timings(stats, t0, streamer.t_first if streamer else None, streamer.t_last if streamer else None, n)
            st.stats = stats

    def _activate(self, model: Any, adapter: str | None) -> float:
        if not self.adapter_files or adapter is None:
            return 0.0
        ts = time.perf_counter()
        model.set_adapter(adapter)
        return time.perf_counter() - ts

    def close(self) -> None:
        self.closed = True
        self._model = None


def _TimedStreamer(tokenizer: Any) -> Any:
    """A ``TextIteratorStreamer`` that also records when each generated token arrived."""
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        def __init__(self) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.tokens: list[int] = []
            self.t_start: float | None = None
            self.t_first: float | None = None
            self.t_last: float | None = None
            self._prompt_seen = False

        def put(self, value: Any) -> None:
            now = time.perf_counter()
            if not self._prompt_seen:
                self._prompt_seen = True
                self.t_start = now
            else:
                toks = [int(x) for x in value.reshape(-1).tolist()]
                self.tokens.extend(toks)
                self.t_first = self.t_first or now
                self.t_last = now
            super().put(value)

    return TimedStreamer()


def _fit_context(
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


def _genai_model_file(folder: Path) -> tuple[Path, int]:
    cfg_path = folder / "genai_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
        model = cfg["model"]
        return folder / model["decoder"]["filename"], int(model.get("context_length") or 2048)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{cfg_path}: not a readable onnxruntime-genai config ({e})") from e


def _genai_eos(folder: Path) -> list[int]:
    cfg = json.loads((folder / "genai_config.json").read_text())["model"]
    eos = cfg.get("eos_token_id", [])
    return [int(x) for x in (eos if isinstance(eos, list) else [eos])]


def _hf_eos(model: Any, tok: Any) -> set[int]:
    out: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(src, "eos_token_id", None)
        if eos is not None:
            out.update(eos if isinstance(eos, (list, tuple)) else [eos])
    if tok.eos_token_id is not None:
        out.add(tok.eos_token_id)
    return {int(x) for x in out}


# -- adapter validation ------------------------------------------------------------------------------------
def adapter_name(path: Path | str) -> str:
    """The name an adapter file is listed under: its stem; ``adapter_weights`` (what ExtractAdapters writes) is "adapter"."""
    p = Path(path)
    stem = p.name[: -len(".onnx_adapter")] if p.name.endswith(".onnx_adapter") else p.name
    return DEFAULT_ADAPTER_NAME if stem == "adapter_weights" else stem


_INPUTS_CACHE: dict[tuple[str, float], dict[str, tuple[str, tuple[Any, ...]]]] = {}


def onnx_graph_inputs(model_file: Path) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """``{input name: (type, shape)}`` of an ONNX graph; type like ``tensor(float)``, a shape dim is an int or a
    symbol. Reads the graph only (no external data)."""
    import onnx

    key = (str(model_file), model_file.stat().st_mtime if model_file.exists() else 0.0)
    if key in _INPUTS_CACHE:
        return _INPUTS_CACHE[key]
    try:
        m = onnx.load(str(model_file), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{model_file}: cannot read the ONNX graph ({e})") from e
    out: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for i in m.graph.input:
        tt = i.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        out.setdefault(i.name, (f"tensor({elem})", dims))
    _INPUTS_CACHE[key] = out
    return out


def read_onnx_adapter(path: Path | str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{parameter name: (type, shape)}`` of an ``.onnx_adapter`` file (onnxruntime's adapter format)."""
    import onnxruntime as ort

    try:
        fmt = ort.AdapterFormat.read_adapter(str(path))
        params = fmt.get_parameters()
    except Exception as e:
        raise AdapterMismatch(
            path,
            [f"not a readable .onnx_adapter file ({_first_line(e)})"],
            what="unreadable",
        ) from e
    return {name: (v.data_type(), tuple(v.shape())) for name, v in params.items()}


def check_onnx_adapter(
    adapter: Path | str, inputs: dict[str, tuple[str, tuple[Any, ...]]], model_file: Path | str = ""
) -> list[str]:
    """Refuse (``AdapterMismatch``) an adapter whose parameters are not inputs of the graph with the same type and
    fixed dims; return its parameter names."""
    params = read_onnx_adapter(adapter)
    where = f" of {model_file}" if model_file else ""
    if not params:
        raise AdapterMismatch(adapter, ["it holds no tensors"], what="empty adapter")
    missing = [n for n in params if n not in inputs]
    if missing:
        raise AdapterMismatch(
            adapter, missing, what=f"{len(missing)} of its {len(params)} tensors are not inputs of the graph{where}"
        )
    bad = []
    for name, (typ, shape) in params.items():
        gtyp, gshape = inputs[name]
        fits = len(shape) == len(gshape) and all(
            not isinstance(g, int) or g in (0, s) for g, s in zip(gshape, shape, strict=True)
        )
        if typ != gtyp or not fits:
            bad.append(f"{name}: adapter {typ} {list(shape)}, graph {gtyp} {list(gshape)}")
    if bad:
        raise AdapterMismatch(adapter, bad, what=f"{len(bad)} tensors have another type or shape than the graph{where}")
    for name, (_, shape) in params.items():  # LoRA pairs: A [in, r] then B [r, out] must agree on r
        other = name.replace("lora_A", "lora_B")
        if other != name and other in params and shape and params[other][1] and shape[-1] != params[other][1][0]:
            bad.append(f"{name} {list(shape)} and {other} {list(params[other][1])}")
    if bad:
        raise AdapterMismatch(adapter, bad, what="LoRA A/B pairs of different ranks")
    return list(params)


def check_peft_adapter(adapter: Path | str, module_names: Iterable[str], model_dir: Path | str = "") -> dict[str, Any]:
    """Refuse (``AdapterMismatch``) a PEFT adapter folder whose target modules the model does not have."""
    folder = Path(adapter)
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise AdapterMismatch(folder, [f"{cfg_path} is missing or unreadable"], what="not a PEFT adapter folder") from e
    names = list(module_names)
    targets = cfg.get("target_modules") or []
    where = f" of {model_dir}" if model_dir else ""
    if isinstance(targets, str):
        if targets != "all-linear" and not any(re.fullmatch(targets, n) for n in names):
            raise AdapterMismatch(folder, [f"pattern {targets!r}"], what=f"no module{where} matches its target_modules")
        return cfg
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise AdapterMismatch(folder, missing, what=f"target modules not found in the model{where}")
    return cfg


# -- loading -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """What to load: a resolved folder, its backend, and the adapters beside it."""

    backend: str  # "genai" | "hf"
    path: Path
    adapters: tuple[Path, ...] = ()
    adapter_names: tuple[str, ...] = ()
    candidate_id: int | None = None

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.backend, str(self.path), tuple(map(str, self.adapters)))


def resolve(source: Source, extra_adapters: Sequence[Path | str] = ()) -> ModelRef:
    """A registry candidate or a folder -> ``ModelRef``; ``ModelError`` when it is neither kind of model."""
    cand: dict[str, Any] = source if isinstance(source, dict) else {}
    path = Path(cand.get("path") or "") if cand else Path(source)  # type: ignore[arg-type]
    if not cand.get("path") and cand:
        raise ModelError(f"candidate {cand.get('id')} has no path")
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path}")
    path = path.resolve()
    extra = tuple(Path(p).resolve() for p in extra_adapters)
    if (path / "genai_config.json").is_file():
        adapter_path = cand.get("adapter_path")
        if adapter_path and str(adapter_path).endswith(".onnx_adapter") and Path(adapter_path).resolve().parent != path:
            extra = (Path(adapter_path).resolve(), *extra)
        return ModelRef("genai", path, extra, candidate_id=cand.get("id"))
    if (path / "config.json").is_file():
        adapters: tuple[Path, ...] = ()
        names: tuple[str, ...] = ()
        if cand.get("adapter_path"):
            adapters, names = (Path(cand["adapter_path"]).resolve(),), (DEFAULT_ADAPTER_NAME,)
        adapters += extra
        names += tuple(p.name for p in extra)
        return ModelRef("hf", path, adapters, names, candidate_id=cand.get("id"))
    if cand.get("model_type") == "onnxmodel" or list(path.glob("*.onnx")):
        raise ModelError(
            f"{path} is an ONNX model without genai_config.json: chat needs an onnxruntime-genai folder (ModelBuilder output)"
        )
    raise ModelError(
        f"{path} is neither an onnxruntime-genai folder (genai_config.json) nor a Hugging Face folder (config.json)"
    )


def load(
    source: Source, *, device: str = "cpu", extra_adapters: Sequence[Path | str] = (), strict: bool = True
) -> ChatModel:
    """Load a candidate (registry row) or a folder for chat on ``device`` ("cpu", "cuda", "cuda:N").

    ``strict``: an adapter that does not fit raises ``AdapterMismatch``; with ``strict=False`` (ONNX folders) it is
    left out and listed in ``model.refused`` (name -> the error) so the base and the other adapters stay usable.
    A model that cannot start on the GPU (no CUDA build, out of memory) is loaded on the CPU instead, with the
    reason in ``model.fallback``."""
    ref = source if isinstance(source, ModelRef) else resolve(source, extra_adapters)
    try:
        return _load(ref, device, strict)
    except GroveError:
        raise
    except Exception as e:
        if not device.startswith("cuda"):
            raise
        model = _load(ref, "cpu", strict)
        model.fallback = f"could not load on {device} ({_first_line(e)}): running on the CPU"
        return model


def _load(ref: ModelRef, device: str, strict: bool) -> ChatModel:
    if ref.backend == "genai":
        return GenaiChatModel(ref.path, device=device, extra_adapters=ref.adapters, strict=strict)
    return HfChatModel(ref.path, device=device, adapters=ref.adapters, adapter_names=ref.adapter_names)


def _peft_problems(e: BaseException) -> list[str]:
    """The informative lines of peft's/torch's load error (the "size mismatch for ..." lines when there are some)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return [ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))] or [_first_line(e)]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


def estimate_bytes(source: Source) -> int:
    """The memory a model would take once loaded (its weights on disk), without loading it."""
    ref = source if isinstance(source, ModelRef) else resolve(source)
    return weights_bytes(ref.path, *ref.adapters)


# -- cache -------------------------------------------------------------------------------------------------
@dataclass
class _Entry:
    model: ChatModel
    ref: ModelRef
    device: str
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    hits: int = 0


class ModelCache:
    """Loaded chat models, at most ``max_models`` (``GROVE_CHAT_MAX_MODELS``, default 2), least recently used
    evicted first. Safe to share between threads; two threads asking for the same model load it once."""

    def __init__(self, max_models: int | None = None, loader: Callable[..., ChatModel] = load) -> None:
        env = os.environ.get("GROVE_CHAT_MAX_MODELS", "").strip()
        self.max_models = max(1, int(max_models or (env if env.isdigit() else 0) or DEFAULT_MAX_MODELS))
        self._loader = loader
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._loading: dict[tuple[Any, ...], threading.Lock] = {}
        self.evicted: list[str] = []  # paths, in eviction order (for the UI's notices)

    def get(
        self, source: Source, *, device: str = "cpu", extra_adapters: Sequence[Path | str] = (), strict: bool = True
    ) -> ChatModel:
        """The loaded model for ``source`` (loading it, and evicting the least recently used one, if needed)."""
        ref = source if isinstance(source, ModelRef) else resolve(source, extra_adapters)
        key = (*ref.key, device)
        with self._lock:
            hit = self._touch(key)
            if hit is not None:
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._touch(key)
                if hit is not None:
                    return hit
            try:
                model = self._loader(ref, device=device, strict=strict)
                with self._lock:
                    self._entries[key] = _Entry(model, ref, device)
                    while len(self._entries) > self.max_models:
                        _, old = self._entries.popitem(last=False)
                        self.evicted.append(str(old.ref.path))
                        old.model.close()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return model

    def _touch(self, key: tuple[Any, ...]) -> ChatModel | None:
        e = self._entries.get(key)
        if e is None:
            return None
        self._entries.move_to_end(key)
        e.last_used = time.time()
        e.hits += 1
        return e.model

    def entries(self) -> list[dict[str, Any]]:
        """Held models, least recently used first: path, backend, device, adapters, size_bytes, times, hits."""
        with self._lock:
            return [
                {
                    **e.model.info(),
                    "candidate_id": e.ref.candidate_id,
                    "loaded_at": e.loaded_at,
                    "last_used": e.last_used,
                    "hits": e.hits,
                }
                for e in self._entries.values()
            ]

    def held_bytes(self) -> int:
        with self._lock:
            return sum(e.model.size_bytes for e in self._entries.values())

    def contains(self, source: Source, *, device: str = "cpu") -> bool:
        ref = source if isinstance(source, ModelRef) else resolve(source)
        with self._lock:
            return (*ref.key, device) in self._entries

    def clear(self) -> None:
        with self._lock:
            for e in self._entries.values():
                e.model.close()
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_default_cache: ModelCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ModelCache:
    """The process's one model cache (the UI's and the CLI's)."""
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = ModelCache()
        return _default_cache


# -- GPU policy --------------------------------------------------------------------------------------------
GPU_HEADROOM_BYTES = 512 * 1024**2  # KV cache, activations and the CUDA context beyond the weights


def _busy_gpus() -> dict[int, str]:
    """GPU index -> id of the run using it (best effort: an unreadable registry means none)."""
    try:
        from engine.runs.registry import Registry

        out: dict[int, str] = {}
        for r in Registry().list_runs(status=["running"]):
            for g in json.loads(r.get("gpus") or "[]"):
                out[int(g)] = r["id"]
        return out
    except Exception:
        return {}


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def pick_gpu(required_bytes: int) -> tuple[int | None, str]:
    """The GPU a model of ``required_bytes`` fits on now (None if none), and why."""
    allowed = os.environ.get("GROVE_GPUS")
    if allowed is not None and not allowed.strip():
        return None, "no GPU: GROVE_GPUS is empty, chat runs on the CPU"
    gpus = machine.gpu_memory()
    if not gpus:
        return None, "no GPU: nvidia-smi found no GPU on this machine, chat runs on the CPU"
    if allowed:
        ids = {int(x) for x in allowed.split(",") if x.strip().isdigit()}
        gpus = [g for g in gpus if g["index"] in ids]
        if not gpus:
            return None, f"no GPU: none of GROVE_GPUS={allowed} is present, chat runs on the CPU"
    need = int(required_bytes) + GPU_HEADROOM_BYTES
    busy = _busy_gpus()
    fits = [g for g in gpus if g["free"] >= need]
    if fits:
        g = sorted(fits, key=lambda g: (g["index"] in busy, -g["free"]))[0]
        also = f", shared with run {busy[g['index']]}" if g["index"] in busy else ""
        return g["index"], f"GPU {g['index']}: {_gib(g['free'])} free, chat needs about {_gib(need)}{also}"
    why = "; ".join(
        f"GPU {g['index']}: {_gib(g['free'])} free"
        + (f" (busy with run {busy[g['index']]})" if g["index"] in busy else "")
        for g in gpus
    )
    return None, f"no GPU has room: chat needs about {_gib(need)}; {why}. Chat runs on the CPU"


def can_use_gpu(required_bytes: int) -> tuple[bool, str]:
    """Whether a model of ``required_bytes`` (weights) fits on a GPU now, and a sentence saying why (for the UI).

    A GPU busy with a run is used only if its free memory fits the model with headroom."""
    idx, reason = pick_gpu(required_bytes)
    return idx is not None, reason


def choose_device(required_bytes: int, prefer: str = "cpu") -> tuple[str, str]:
    """``("cpu" | "cuda:N", reason)``: the CPU unless ``prefer`` is "gpu"/"cuda" and a GPU has room."""
    if not prefer.startswith(("gpu", "cuda")):
        return "cpu", "CPU (the default)"
    idx, reason = pick_gpu(required_bytes)
    return (f"cuda:{idx}", reason) if idx is not None else ("cpu", reason)


# -- feedback ----------------------------------------------------------------------------------------------
# Thumbs up/down go to the registry's ``feedback`` table (schema 2), with what chat knows about the answer.


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
) -> int:
    """Save a thumbs up (``1``/``"up"``) or down (``-1``/``"down"``) for one answer; returns the row id."""
    from engine.runs.registry import Registry

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
    }
    reg = registry or Registry()
    with reg.tx() as db:
        return int(db["feedback"].insert(row).last_pk)


def list_feedback(
    *, candidate_id: int | None = None, model_path: str | None = None, limit: int = 1000, registry: Any = None
) -> list[dict[str, Any]]:
    """Saved feedback, newest first (settings and stats decoded; ``{}`` for rows saved without them)."""
    from engine.runs.registry import Registry

    reg = registry or Registry()
    with reg.db() as db:
        sql, where, args = "select * from feedback", [], []
        if candidate_id is not None:
            where.append("candidate_id = ?")
            args.append(candidate_id)
        if model_path:
            where.append("model_path = ?")
            args.append(model_path)
        if where:
            sql += " where " + " and ".join(where)
        rows = list(db.query(sql + " order by id desc limit ?", [*args, limit]))
    for row in rows:
        row["settings"] = json.loads(row.get("settings") or "{}")
        row["stats"] = json.loads(row.get("stats") or "{}")
    return rows

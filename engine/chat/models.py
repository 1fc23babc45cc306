"""Chat with a candidate: onnxruntime-genai folders (all their adapters loaded once, switched per message) and
Hugging Face folders (transformers, + peft for adapters), streamed, with timings.

- ``load(source)`` -> ``ChatModel``: ``source`` is a registry candidate (dict) or a folder. ``GenaiChatModel`` for a
  folder with ``genai_config.json``, ``HfChatModel`` for a folder with ``config.json`` (+ the candidate's PEFT adapter).
  Loading, EOS ids and generation steps are ``engine.evaluate.backends``' (the evaluator runs the same code).
- ``ChatModel.stream(messages, adapter=...)`` -> ``ChatStream``: iterate it for text chunks (``st.write_stream`` takes
  it as is); after the last chunk ``.stats`` holds time to first token, decode tokens/s, token counts, the adapter
  switch cost. ``.text`` is the raw answer: model output is plain text, never HTML (nothing is escaped or stripped;
  ``engine.chat.text`` shows it literally).
- Adapters are checked against the model before anything loads them (``engine.chat.adapters``): one that does not
  fit raises ``AdapterMismatch`` naming the file and the first offenders.

The model cache and GPU placement are ``engine.chat.cache``'s, feedback ``engine.chat.feedback``'s.
onnxruntime-genai, onnx, onnxruntime, torch, transformers and peft are imported inside functions: importing this
module is cheap (the UI process imports it).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.chat.adapters import (
    DEFAULT_ADAPTER_NAME,
    NO_ADAPTER,
    AdapterMismatch,
    adapter_name,
    check_onnx_adapter,
    check_peft_adapter,
    first_line,
    onnx_graph_inputs,
    peft_problems,
)
from engine.chat.text import ChatError, Message, build_messages
from engine.errors import GroveError, ModelError
from engine.evaluate.backends import GENAI, HF, Genai, Hf, form_of, genai_model_file
from engine.runs import devices

WEIGHT_SUFFIXES = (".onnx", ".data", ".onnx_adapter", ".safetensors", ".bin", ".pt", ".pth", ".gguf")

Source = str | Path | dict[str, Any]


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
            with devices.chatting(self.device, f"chat with {self.path.name}"):  # never during a speed measurement
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


def _timings(stats: ChatStats, t0: float, t_first: float | None, t_last: float | None, n: int) -> None:
    stats.new_tokens = n
    stats.total_s = time.perf_counter() - t0
    if t_first is not None:
        stats.ttft_s = t_first - t0
        if n > 1 and t_last is not None and t_last > t_first:
            stats.decode_tokens_per_s = (n - 1) / (t_last - t_first)


class GenaiChatModel(ChatModel):
    """An onnxruntime-genai folder: one ``og.Model``, every ``.onnx_adapter`` of the folder in one ``og.Adapters``."""

    backend = GENAI

    def __init__(
        self, folder: Path, *, device: str = "cpu", extra_adapters: Sequence[Path | str] = (), strict: bool = True
    ) -> None:
        import onnxruntime_genai  # noqa: F401  (imported before the load is timed)

        t0 = time.perf_counter()
        folder = Path(folder)
        files = {adapter_name(p): p for p in sorted(folder.glob("*.onnx_adapter"))}
        for p in map(Path, extra_adapters):
            files.setdefault(adapter_name(p), p)
        self._model_file, _ = genai_model_file(folder)
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
        self._genai = Genai(folder, device=device, adapters=files)
        self.context_length = self._genai.context
        self.load_s = time.perf_counter() - t0

    def add_adapter(self, path: Path | str, name: str | None = None) -> str:
        """Check and load one more ``.onnx_adapter``; returns its name. ``AdapterMismatch`` if it does not fit."""
        p = Path(path).resolve()
        name = self._new_name(name or adapter_name(p))
        check_onnx_adapter(p, self._inputs, self._model_file)
        self._genai.load_adapter(p, name)
        return self._added(name, p, p.stat().st_size)

    def _run(
        self, stats: ChatStats, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        import numpy as np

        t0 = time.perf_counter()
        t_first = t_last = None
        n = 0
        gen = None
        g = self._genai  # a close() meanwhile leaves this answer alone
        try:
            msgs, stats.trimmed_messages, ids = _fit_context(msgs, g.chat_ids, self.context_length)
            ids = np.asarray(ids, dtype=np.int32)
            pre = np.asarray(g.tok.encode(prefill), dtype=np.int32) if prefill else np.zeros(0, np.int32)
            if pre.size and pre[0] == g.tok.bos_token_id:
                pre = pre[1:]
            ids = np.concatenate([ids, pre])
            stats.prompt_tokens = int(ids.size - pre.size)
            if ids.size >= self.context_length:
                raise ChatError(f"the prompt is {ids.size} tokens; the model's context is {self.context_length} tokens")
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
            gen, stats.adapter_switch_s = g.generator(adapter, **opts)
            tp = time.perf_counter()
            gen.append_tokens(ids)
            stats.prefill_s = time.perf_counter() - tp
            decoder = g.tok.create_stream()
            for t in pre:
                text = decoder.decode(int(t))
                if text:
                    yield text
            last = None
            for last in g.tokens(gen):
                t_last = time.perf_counter()
                if t_first is None:
                    t_first = t_last
                n += 1
                text = decoder.decode(last)
                if text:
                    yield text
            stats.stop_reason = "eos" if last in g.eos else "length"
        except GeneratorExit:
            stats.stop_reason = "cancelled"
            raise
        except Exception:
            stats.stop_reason = "error"
            raise
        finally:
            del gen
            _timings(stats, t0, t_first, t_last, n)

    def close(self) -> None:
        # a stream still running holds its own reference until it ends
        self.closed = True
        self._genai = None  # type: ignore[assignment]


class HfChatModel(ChatModel):
    """A Hugging Face folder through transformers; PEFT adapters through peft, switched with ``set_adapter`` and
    ``disable_adapter``. One answer at a time per model (the active adapter is model state)."""

    backend = HF

    def __init__(
        self,
        folder: Path,
        *,
        device: str = "cpu",
        adapters: Sequence[Path | str] = (),
        adapter_names: Sequence[str] = (),
    ) -> None:
        import torch
        import transformers  # noqa: F401  (imported before the load is timed)

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
        hf = Hf(folder, device=device, dtype=torch.float32)
        self._module_names = [n for n, _ in hf.model.named_modules()]
        for p in files.values():
            check_peft_adapter(p, self._module_names, folder)
        for name, p in files.items():
            _attach(hf, p, name)
        hf.model.eval()
        self._hf = hf
        self.load_s = time.perf_counter() - t0

    def add_adapter(self, path: Path | str, name: str | None = None) -> str:
        """Check and load one more PEFT adapter folder; returns its name. ``AdapterMismatch`` if it does not fit."""
        p = Path(path).resolve()
        name = self._new_name(name or p.name)
        check_peft_adapter(p, self._module_names, self.path)
        with self._lock:
            _attach(self._hf, p, name)
            self._hf.model.eval()
        return self._added(name, p, weights_bytes(p))

    def _run(
        self, stats: ChatStats, msgs: list[Message], adapter: str | None, sampling: Sampling, prefill: str
    ) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        t0 = time.perf_counter()
        cancel = threading.Event()
        streamer = None
        failure: list[BaseException] = []
        thread = None
        hf = self._hf  # a close() meanwhile leaves this answer alone
        try:
            ctx_len = hf.context_length(1 << 30)
            msgs, stats.trimmed_messages, ids = _fit_context(msgs, hf.chat_ids, ctx_len)
            pre = hf.tok.encode(prefill, add_special_tokens=False) if prefill else []
            stats.prompt_tokens = len(ids)
            input_ids = torch.tensor([ids + pre], dtype=torch.long, device=self.device)
            streamer = _TimedStreamer(hf.tok)

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
                "pad_token_id": hf.tok.pad_token_id if hf.tok.pad_token_id is not None else next(iter(hf.eos), 0),
                "eos_token_id": sorted(hf.eos) or None,
            }
            if sampling.do_sample:
                kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)

            def work() -> None:
                try:
                    with self._lock:
                        model = hf.model
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
                text = hf.tok.decode(pre, skip_special_tokens=True)
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
            stats.stop_reason = "eos" if last in hf.eos else ("cancelled" if cancel.is_set() else "length")
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

    def _activate(self, model: Any, adapter: str | None) -> float:
        if not self.adapter_files or adapter is None:
            return 0.0
        ts = time.perf_counter()
        model.set_adapter(adapter)
        return time.perf_counter() - ts

    def close(self) -> None:
        self.closed = True
        self._hf = None  # type: ignore[assignment]


def _attach(hf: Hf, path: Path, name: str) -> None:
    try:
        hf.add_adapter(path, name)
    except (RuntimeError, ValueError, KeyError) as e:  # shapes that do not fit (size mismatch), bad config
        raise AdapterMismatch(path, peft_problems(e), what="peft could not load it") from e


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


_ATTACH = threading.Lock()


def ensure_adapter(model: ChatModel, name: str, path: Path | str) -> None:
    """Load adapter ``path`` into a loaded ``model`` under ``name`` unless it is there: many adapters, e.g. from
    other runs, on one base (Olive's multi-LoRA). Each is checked against the base graph first; one that does not
    fit raises ``AdapterMismatch`` with the reason, now and on every later try (``model.refused``)."""
    with _ATTACH:
        if name in model.adapter_files:
            return
        if name in model.refused:
            raise model.refused[name]
        try:
            model.add_adapter(path, name)  # type: ignore[attr-defined]
        except AdapterMismatch as e:
            model.refused[name] = e
            raise


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
    form = form_of(path)
    if form == GENAI:
        adapter_path = cand.get("adapter_path")
        if adapter_path and str(adapter_path).endswith(".onnx_adapter") and Path(adapter_path).resolve().parent != path:
            extra = (Path(adapter_path).resolve(), *extra)
        return ModelRef("genai", path, extra, candidate_id=cand.get("id"))
    if form == HF:
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
        model.fallback = f"could not load on {device} ({first_line(e)}): running on the CPU"
        return model


def _load(ref: ModelRef, device: str, strict: bool) -> ChatModel:
    if ref.backend == "genai":
        return GenaiChatModel(ref.path, device=device, extra_adapters=ref.adapters, strict=strict)
    return HfChatModel(ref.path, device=device, adapters=ref.adapters, adapter_names=ref.adapter_names)


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

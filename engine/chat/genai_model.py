"""Chat with an onnxruntime-genai folder: one ``og.Model``, every ``.onnx_adapter`` of the folder loaded once in one
``og.Adapters`` and switched per message. Loading, EOS ids and generation steps are ``engine.evaluate.backends``'
(the evaluator runs the same code). onnxruntime-genai and numpy are imported inside functions."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.chat.adapters import AdapterMismatch, adapter_name, check_onnx_adapter, onnx_graph_inputs
from engine.chat.base import ChatModel, ChatStats, Sampling, fit_context, set_timings, weights_bytes
from engine.chat.text import ChatError, Message
from engine.evaluate.backends import GENAI, Genai, genai_model_file


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
            msgs, stats.trimmed_messages, ids = fit_context(msgs, g.chat_ids, self.context_length)
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
            set_timings(stats, t0, t_first, t_last, n)

    def close(self) -> None:
        # a stream still running holds its own reference until it ends
        self.closed = True
        self._genai = None  # type: ignore[assignment]

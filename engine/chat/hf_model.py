"""Chat with a Hugging Face folder through transformers, PEFT adapters through peft (switched with ``set_adapter``
and ``disable_adapter``). Generation runs in a thread and streams through a timed ``TextIteratorStreamer``.
torch, transformers and peft are imported inside functions."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from engine.chat.adapters import AdapterMismatch, check_peft_adapter, peft_problems
from engine.chat.base import ChatModel, ChatStats, Sampling, fit_context, set_timings, weights_bytes
from engine.chat.text import Message
from engine.evaluate.backends import HF, Hf


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
            msgs, stats.trimmed_messages, ids = fit_context(msgs, hf.chat_ids, ctx_len)
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
            set_timings(stats, t0, streamer.t_first if streamer else None, streamer.t_last if streamer else None, n)

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

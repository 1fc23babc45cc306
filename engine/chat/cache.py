"""Loaded chat models and where they run.

- ``ModelCache``: loaded models, at most ``GROVE_CHAT_MAX_MODELS`` (default 2), least recently used evicted; each
  entry states its weights' size on disk (what the UI shows as memory). Thread-safe. ``default_cache()`` is the
  process's one, shared by every browser session: an evicted model that another session is answering with is
  closed only when that answer ends, and a session whose model was evicted gets it loaded again on its next message.
- ``estimate_bytes``: what a model would take once loaded, without loading it.
- ``pick_gpu`` / ``can_use_gpu`` / ``choose_device``: the CPU by default; a GPU only when asked for and when its free
  memory (``engine.machine.gpu_memory``) fits the model, also while a run uses it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import machine
from engine.chat.base import ChatModel, weights_bytes
from engine.chat.models import ModelRef, Source, load, resolve

DEFAULT_MAX_MODELS = 2


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
                        old.model.retire()  # another session may be mid-answer with it: closed when that ends
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
        from engine.runs.registry import Registry  # here: sqlite_utils (and pandas) only when a GPU is asked for

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

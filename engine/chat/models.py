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

Modules: ``engine.chat.base`` (``ChatModel``, ``ChatStream``, ``ChatStats``), ``engine.chat.genai_model`` and
``engine.chat.hf_model`` (the two backends), this one (which backend a source is, loading, adding adapters later).
The model cache and GPU placement are ``engine.chat.cache``'s, feedback ``engine.chat.feedback``'s.
onnxruntime-genai, onnx, onnxruntime, torch, transformers and peft are imported inside functions: importing this
module is cheap (the UI process imports it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.chat.adapters import DEFAULT_ADAPTER_NAME, AdapterMismatch, first_line
from engine.chat.base import ChatModel
from engine.chat.genai_model import GenaiChatModel
from engine.chat.hf_model import HfChatModel
from engine.errors import GroveError, ModelError
from engine.evaluate.backends import GENAI, HF, OPENVINO, form_of

Source = str | Path | dict[str, Any]


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

    backend: str  # "genai" | "hf" | "openvino"
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
    if form == OPENVINO:  # answered in the OpenVINO target's environment (engine.chat.ov_model)
        return ModelRef("openvino", path, candidate_id=cand.get("id"))
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
    if ref.backend == "openvino":
        from engine.chat.ov_model import OvChatModel

        return OvChatModel(ref.path)
    if ref.backend == "genai":
        return GenaiChatModel(ref.path, device=device, extra_adapters=ref.adapters, strict=strict)
    return HfChatModel(ref.path, device=device, adapters=ref.adapters, adapter_names=ref.adapter_names)

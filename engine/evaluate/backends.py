"""The two model forms Grove runs, loaded and driven one way for the evaluator and for chat.

- ``Genai``: an onnxruntime-genai folder: ``og.Model`` on the CPU or a CUDA device (or the providers its
  ``genai_config.json`` names), its tokenizer, named ``.onnx_adapter`` files in one ``og.Adapters``, EOS ids and
  context length from the config; ``generator(...)`` starts a search with an adapter active, ``tokens(gen)`` steps it.
- ``Hf``: a Hugging Face folder through transformers on a device and dtype; ``add_adapter`` puts a PEFT adapter on
  it (under a name); EOS ids from the generation config, the model config and the tokenizer.
- ``Ov``: an OpenVINO LLM folder (Olive's OpenVINOEncapsulation output, or optimum-intel's ``openvino_model.xml``):
  the stateful OpenVINO IR compiled by the OpenVINO runtime on the CPU, stepped token by token with its logits, and
  the folder's Hugging Face tokenizer. It runs in the OpenVINO target's environment (engine.targets).
- ``form_of(folder)``: which of the three a folder is (None for none).

The evaluator (``engine.evaluate.evaluator``) adds scoring and timing on top, chat (``engine.chat.models``) streaming
and per-message adapter switching. onnxruntime-genai, torch, transformers and peft are imported inside functions:
importing this module is cheap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import ModelError

GENAI = "onnxruntime-genai"
HF = "transformers"
OPENVINO = "openvino"
DEFAULT_CONTEXT = 2048


def openvino_ir(folder: Path) -> Path | None:
    """The OpenVINO IR (``.xml``) of an OpenVINO LLM folder: the one the EPContext model of the folder's
    ``genai_config.json`` stands for when that config runs on OpenVINO (Olive's OpenVINOEncapsulation writes
    ``<name>.onnx`` beside ``<name>.xml``), else optimum-intel's ``openvino_model.xml``; None for other folders."""
    try:
        model = json.loads((folder / "genai_config.json").read_text())["model"]
        dec = model["decoder"]
        opts = (dec.get("session_options") or {}).get("provider_options") or []
        if any(isinstance(o, dict) and "OpenVINO" in o for o in opts):
            xml = folder / (Path(dec["filename"]).stem + ".xml")
            if xml.is_file():
                return xml
    except (OSError, ValueError, KeyError, TypeError):
        pass
    xml = folder / "openvino_model.xml"
    if xml.is_file():
        return xml
    found = sorted(folder.glob("openvino_model*.xml"))  # OpenVINOIoUpdate's openvino_model_dy.xml
    return found[0] if found else None


def form_of(folder: Path) -> str | None:
    """``"openvino"`` (an OpenVINO IR LLM), ``"onnxruntime-genai"`` (genai_config.json), ``"transformers"``
    (config.json), or None."""
    if openvino_ir(folder) is not None:
        return OPENVINO
    if (folder / "genai_config.json").is_file():
        return GENAI
    if (folder / "config.json").is_file():
        return HF
    return None


def genai_settings(folder: Path) -> dict[str, Any]:
    """The ``model`` section of a folder's ``genai_config.json``; ``ModelError`` when it cannot be read."""
    try:
        return json.loads((folder / "genai_config.json").read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _unreadable(folder, e) from e


def genai_model_file(folder: Path) -> tuple[Path, int]:
    """The decoder's ONNX file and the context length a genai folder declares (before onnxruntime opens it)."""
    model = genai_settings(folder)
    try:
        return folder / model["decoder"]["filename"], _context(model)
    except (ValueError, KeyError, TypeError) as e:
        raise _unreadable(folder, e) from e


def _unreadable(folder: Path, e: Exception) -> ModelError:
    return ModelError(f"{folder / 'genai_config.json'}: not a readable onnxruntime-genai config ({e})")


def _context(model: dict[str, Any]) -> int:
    return int(model.get("context_length") or DEFAULT_CONTEXT)


def _ids(value: Any) -> set[int]:
    """Token ids given as one id, a list of them, or None."""
    if value is None:
        return set()
    return {int(x) for x in (value if isinstance(value, (list, tuple)) else [value])}


class Genai:
    """An onnxruntime-genai folder, loaded: ``model``, ``tok``, ``adapters`` (None until one is loaded), ``eos``,
    ``context``. ``device``: "cpu", "cuda" or "cuda:N"; None keeps the providers of the folder's config."""

    form = GENAI

    def __init__(self, folder: Path, *, device: str | None = "cpu", adapters: dict[str, Path] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime_genai as og

        self.og = og
        config = og.Config(str(folder))
        self.threads = threads  # onnxruntime's intra-op threads (None: the folder's setting, one per core by default)
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}}))
        if device is not None:
            config.clear_providers()
            if device.startswith("cuda"):
                config.append_provider("cuda")
                config.set_provider_option("cuda", "device_id", device.partition(":")[2] or "0")
        model = og.Model(config)
        # set in this order so that dropping the object releases adapters, then tokenizer, then model
        self.adapters: Any = None
        self.tok = og.Tokenizer(model)
        self.model = model
        for name, path in (adapters or {}).items():
            self.load_adapter(path, name)
        settings = genai_settings(folder)
        self.context = _context(settings)
        self.eos = _ids(settings.get("eos_token_id"))

    def load_adapter(self, path: Path, name: str) -> None:
        """Load an ``.onnx_adapter`` under ``name`` (checking that it fits the graph is the caller's part)."""
        if self.adapters is None:
            self.adapters = self.og.Adapters(self.model)
        self.adapters.load(str(path), name)

    def chat_ids(self, msgs: list[dict[str, str]]) -> Any:
        """The prompt ids of a conversation through the model's own chat template, ready for the answer."""
        return self.tok.encode(self.tok.apply_chat_template(json.dumps(msgs), add_generation_prompt=True))

    def generator(self, adapter: str | None = None, **search: Any) -> tuple[Any, float]:
        """An ``og.Generator`` with these search options and ``adapter`` active (None: the base model), and the
        seconds activating the adapter took."""
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(**search)
        gen = self.og.Generator(self.model, params)
        if not adapter:
            return gen, 0.0
        t = time.perf_counter()
        gen.set_active_adapter(self.adapters, adapter)
        return gen, time.perf_counter() - t

    @staticmethod
    def tokens(gen: Any) -> Iterator[int]:
        """Generate until the search is done, yielding each new token id as it comes."""
        while not gen.is_done():
            gen.generate_next_token()
            yield int(gen.get_next_tokens()[0])


class Ov:
    """An OpenVINO LLM folder, loaded with the OpenVINO runtime: ``compiled`` (the stateful model on ``device``),
    ``tok`` (the folder's Hugging Face tokenizer), ``eos``, ``context``. ``step(ids)`` feeds tokens after those
    already fed and returns their logits; ``reset()`` starts a new sequence."""

    form = OPENVINO

    def __init__(self, folder: Path, *, device: str = "CPU") -> None:
        import numpy as np
        import openvino as ov
        from transformers import AutoTokenizer

        xml = openvino_ir(folder)
        if xml is None:
            raise ModelError(f"{folder}: no OpenVINO IR (openvino_model.xml, or an OpenVINO genai_config.json)")
        self.np = np
        self.folder = folder
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(xml)), device)
        self.req = self.compiled.create_infer_request()
        self.inputs = {i.get_any_name() for i in self.compiled.inputs}
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        cfg: dict[str, Any] = {}
        for name in ("config.json", "generation_config.json"):
            try:
                cfg[name] = json.loads((folder / name).read_text())
            except (OSError, ValueError):
                cfg[name] = {}
        self.eos = (_ids(cfg["generation_config.json"].get("eos_token_id")) | _ids(cfg["config.json"].get("eos_token_id"))
                    | _ids(self.tok.eos_token_id))
        self.context = int(cfg["config.json"].get("max_position_embeddings") or DEFAULT_CONTEXT)
        self.past = 0

    def reset(self) -> None:
        self.req.reset_state()
        self.past = 0

    def step(self, ids: list[int]) -> Any:
        """Logits (len(ids) x vocab) of ``ids`` fed after the tokens of this sequence so far."""
        np = self.np
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = np.ones((1, self.past + n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(self.past, self.past + n, dtype=np.int64)[None, :]
        if "beam_idx" in self.inputs:
            feed["beam_idx"] = np.zeros(1, dtype=np.int32)
        self.req.infer(feed)
        self.past += n
        return self.req.get_tensor("logits").data[0]

    def chat_ids(self, msgs: list[dict[str, str]]) -> list[int]:
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def tokens(self, ids: list[int], max_new: int) -> Iterator[int]:
        """Greedy tokens after the prompt ``ids`` (a new sequence), one at a time, at most ``max_new``."""
        self.reset()
        logits = self.step(ids)
        for _ in range(max_new):
            t = int(logits[-1].argmax())
            yield t
            logits = self.step([t])


class Hf:
    """A Hugging Face folder through transformers, loaded on ``device`` in ``dtype``: ``model``, ``tok``, ``eos``.
    ``add_adapter`` wraps the model in peft (``model`` is then the ``PeftModel``)."""

    form = HF

    def __init__(self, folder: Path, *, device: str = "cpu", dtype: Any = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
        self.model = model.to(device)
        self.eos = self._eos()

    def _eos(self) -> set[int]:
        out: set[int] = set()
        for src in (getattr(self.model, "generation_config", None), getattr(self.model, "config", None)):
            out |= _ids(getattr(src, "eos_token_id", None))
        return out | _ids(self.tok.eos_token_id)

    def context_length(self, default: int) -> int:
        """The model's ``max_position_embeddings``, or ``default`` when it states none."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or default

    def add_adapter(self, path: Path | str, name: str) -> None:
        """Put the PEFT adapter folder ``path`` on the model under ``name`` (not trainable); peft's own errors
        surface (``RuntimeError``/``ValueError``/``KeyError`` for one that does not fit)."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)

    def chat_ids(self, msgs: list[dict[str, str]]) -> list[int]:
        """The prompt ids of a conversation through the tokenizer's chat template, ready for the answer."""
        ids = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

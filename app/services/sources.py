"""Models and datasets: the pickers' choices and allowed roots, the default model, model cards, local and Hub dataset
previews, uploads, the rendered training texts and split statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from app.services import access
from app.services.core import TTL, _mtime, clear, home, registry
from engine import access as engine_access
from engine.data import formats as data_formats
from engine.data import inspect as dataview
from engine.errors import DataError
from engine.models import default as default_models
from engine.runs import submit as service
from engine.spec.schema import DatasetSpec
from engine.views import dataset as dataset_view
from engine.views import estimate
from engine.views import runs as views

UPLOAD_LIMIT_MB = 200


def default_model() -> str:
    """The default model's folder ('' before it is set up)."""
    m = default_models.current()
    return str(m) if m else ""


def default_model_label(path: str) -> str | None:
    """How the picker names a built-in model, or None when ``path`` is not one."""
    return default_models.label(path)


def model_fallback_reason() -> str:
    return default_models.fallback_reason()


# -- models and data ----------------------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def _inputs(h: str) -> dict[str, list[str]]:
    return views.input_choices(registry())


def inputs() -> dict[str, list[str]]:
    """Model folders and dataset files under the allowed roots, recently used first (with sign-in on, without other
    people's uploads)."""
    found = _inputs(home())
    me = access.person()
    if me["local"]:
        return found
    return {k: [p for p in v if not engine_access.foreign_upload(p, me["user"])] for k, v in found.items()}


def allowed_roots() -> list[str]:
    return [str(r) for r in dataview.allowed_roots()]


def is_allowed(path: str) -> bool:
    return dataview.is_allowed(path)


@st.cache_data(ttl=60, show_spinner=False)
def model_card(model: str) -> dict[str, Any] | None:
    return estimate.model_card(model) if model else None


@st.cache_data(ttl=60, show_spinner=False)
def _page(path: str, mtime: float, page: int, size: int) -> tuple[list[dict[str, Any]], int]:
    return dataview.read_page(path, page, size)


def dataset_page(path: str, page: int, size: int = 20) -> tuple[list[dict[str, Any]], int]:
    """One page of a local dataset (raises DataError; AccessError for another person's upload)."""
    access.own_inputs(access.person(), {"dataset.path": path})
    return _page(path, _mtime(path), page, size)


@st.cache_data(ttl=600, show_spinner=False)
def _hub(ds_json: str, n: int) -> list[dict[str, Any]]:
    return dataview.hub_preview(DatasetSpec.model_validate_json(ds_json), n)


def hub_preview(ds: dict[str, Any], n: int = 20) -> list[dict[str, Any]]:
    return _hub(DatasetSpec.model_validate(ds).model_dump_json(), n)


def save_upload(name: str, data: bytes) -> str:
    """Store an uploaded dataset in the uploader's own folder, GROVE_HOME/uploads/<person> (content-addressed name),
    and return its path."""
    me = access.require("upload")
    if len(data) > UPLOAD_LIMIT_MB * 2**20:
        raise DataError(
            f"{name} is larger than the {UPLOAD_LIMIT_MB} MB upload limit: put it under an allowed root instead"
        )
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[:100]
    d = engine_access.upload_dir(me["user"])
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{hashlib.sha256(data).hexdigest()[:10]}-{safe}"
    if not p.exists():
        p.write_bytes(data)
    clear()
    return str(p)


def chat_template(model: str) -> str | None:
    return dataview.chat_template_of(model) if model else None


@st.cache_data(ttl=60, show_spinner=False)
def _texts(ds_json: str, mtime: float, model: str, limit: int) -> dict[str, Any]:
    return dataset_view.rendered(DatasetSpec.model_validate_json(ds_json), model, limit)


def rendered(ds: dict[str, Any], model: str, limit: int = 5000) -> dict[str, Any]:
    """Rendered training texts (first 50) and tokens per example (first ``limit`` rows). Raises DataError."""
    spec = DatasetSpec.model_validate({k: v for k, v in ds.items() if v is not None and not k.startswith("_")})
    return _texts(spec.model_dump_json(), _mtime(spec.path or ""), model, limit)


@st.cache_data(ttl=60, show_spinner=False)
def _split(ds_json: str, mtime: float) -> dict[str, Any]:
    return dataview.split_stats(DatasetSpec.model_validate_json(ds_json))


@st.cache_data(ttl=60, show_spinner=False)
def _format(path: str, mtime: float) -> str | None:
    return dataview.format_of(path)


def dataset_format(path: str | None) -> str | None:
    """The format the local file's rows have (messages, sharegpt, alpaca, prompt_response, text), or None."""
    return _format(path, _mtime(path)) if path else None


FORMAT_WORDS = data_formats.DESCRIBE
CONVERSATION_FORMATS = data_formats.CONVERSATION_FORMATS


def path_bases() -> list[str]:
    """Where a relative path typed on the pages is read from, in order (engine.runs.submit.ui_bases)."""
    return [str(p) for p in service.ui_bases()]


def split_stats(ds: dict[str, Any]) -> dict[str, Any]:
    spec = DatasetSpec.model_validate({k: v for k, v in ds.items() if v is not None and not k.startswith("_")})
    return _split(spec.model_dump_json(), _mtime(spec.path or ""))


PRESETS = dataview.PRESETS
TOKENIZER_PRESET = dataview.TOKENIZER_PRESET
FREE_PRESET = dataview.FREE_PRESET

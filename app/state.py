"""Session-state keys in one place. Only plain, JSON-serializable values live here.

The draft (a RunSpec-shaped dict, see engine.spec.drafts) is what Model & data and Workflow edit. Widgets are keyed
with ``key(name)``, which carries a form version: replacing the draft (recipe, import, clone) bumps the version so
every widget starts again from the new draft instead of keeping its old value.
"""

from __future__ import annotations

import itertools
from typing import Any

import streamlit as st

DRAFT = "draft"
FORM_VERSION = "form_version"
FLASH = "flash"
IMPORT_NOTES = "import_notes"
OLIVE_CONFIG = "olive_config_text"

_uids = itertools.count(1)


def draft() -> dict[str, Any]:
    if DRAFT not in st.session_state:
        from app import services

        st.session_state[DRAFT] = services.new_draft()
    d = st.session_state[DRAFT]
    for p in d.get("passes") or []:
        p.setdefault("uid", f"p{next(_uids)}")
    return d


def set_draft(d: dict[str, Any]) -> None:
    """Replace the draft (clone, recipe, import): widgets start again from it."""
    st.session_state[DRAFT] = d
    st.session_state[FORM_VERSION] = st.session_state.get(FORM_VERSION, 0) + 1
    st.session_state.pop(OLIVE_CONFIG, None)


def key(name: str) -> str:
    return f"{name}@{st.session_state.get(FORM_VERSION, 0)}"


def flash(message: str, level: str = "success") -> None:
    """A message shown once, on the next page drawn (survives st.switch_page)."""
    st.session_state[FLASH] = (level, message)


def show_flash() -> None:
    if FLASH in st.session_state:
        level, message = st.session_state.pop(FLASH)
        getattr(st, level, st.info)(message)

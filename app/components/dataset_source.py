"""Choose the dataset (a file under the allowed roots, an upload, or a Hugging Face name + split) and page through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from app import services, state
from engine.errors import DataError

OTHER = "Other path…"
SOURCES = ["File under the allowed roots", "Upload a file", "Hugging Face dataset"]
PAGE = 20


def _base(ds: dict[str, Any] | None) -> dict[str, Any]:
    phi3 = next(iter(services.PRESETS))
    return dict(ds or {"text_template": services.PRESETS[phi3], "_preset": phi3, "max_seq_len": 512, "eval_split": 0.1})


def pick(draft: dict[str, Any]) -> None:
    ds = draft.get("dataset")
    src_i = 2 if ds and ds.get("hf_name") else (1 if ds and "/uploads/" in (ds.get("path") or "") else 0)
    src = st.radio("Source", SOURCES, index=src_i, horizontal=True, key=state.key("ds-src"))
    path: str | None = None
    if src == SOURCES[0]:
        options = services.inputs()["datasets"] + [OTHER]
        cur = (ds or {}).get("path")
        idx = options.index(cur) if cur in options else (len(options) - 1 if cur else None)
        choice = st.selectbox(
            "Dataset file (.jsonl, .json, .csv, .parquet; recently used first)",
            options,
            index=idx,
            placeholder="Choose a dataset file",
            key=state.key("ds-file"),
        )
        path = st.text_input("File path", value=cur or "", key=state.key("ds-path")) if choice == OTHER else choice
        if path and not services.is_allowed(path):
            st.error(
                f"`{path}` is outside the allowed roots ({', '.join(services.allowed_roots())}). "
                "Add its folder to GROVE_ALLOWED_ROOTS, or upload the file."
            )
            path = None
    elif src == SOURCES[1]:
        up = st.file_uploader(
            f"Upload a dataset (at most {services.UPLOAD_LIMIT_MB} MB; kept under GROVE_HOME/uploads)",
            type=["jsonl", "json", "csv", "parquet"],
            max_upload_size=services.UPLOAD_LIMIT_MB,
            key=state.key("ds-upload"),
        )
        if up is not None:
            try:
                path = services.save_upload(up.name, up.getvalue())
            except DataError as e:
                st.error(services.markdown_literal(str(e)))
        elif ds and ds.get("path"):
            path = ds["path"]
            st.caption(f"Current file: `{path}`")
    else:
        c = st.columns(3)
        name = c[0].text_input(
            "Dataset name",
            value=(ds or {}).get("hf_name") or "",
            key=state.key("ds-hf"),
            placeholder="e.g. tatsu-lab/alpaca",
        )
        subset = c[1].text_input("Subset (optional)", value=(ds or {}).get("hf_subset") or "", key=state.key("ds-sub"))
        split = c[2].text_input("Split", value=(ds or {}).get("hf_split") or "train", key=state.key("ds-split"))
        if name:
            new = _base(ds)
            new.update(
                path=None, hf_name=name.strip(), hf_subset=subset.strip() or None, hf_split=split.strip() or "train"
            )
            draft["dataset"] = new
        return
    if path:
        new = _base(ds)
        new.update(path=str(Path(path).expanduser()), hf_name=None, hf_subset=None)
        draft["dataset"] = new


def preview(draft: dict[str, Any]) -> list[str]:
    """A paged preview of the chosen dataset; returns its columns."""
    ds = draft.get("dataset")
    if not ds:
        st.info("Choose a dataset to preview it.")
        return []
    if ds.get("hf_name"):
        want = json.dumps([ds["hf_name"], ds.get("hf_subset"), ds.get("hf_split")])
        if st.button("Fetch a preview (downloads from the Hub)", key=state.key("ds-hub-fetch")):
            st.session_state["hub_preview_for"] = want
        if st.session_state.get("hub_preview_for") != want:
            st.caption("Hub datasets are fetched and checked when the run starts; fetch a preview to map columns now.")
            return []
        try:
            rows = services.hub_preview({k: v for k, v in ds.items() if not k.startswith("_")})
        except Exception as e:  # noqa: BLE001 - network, missing dataset: shown, not raised
            st.error(f"Could not fetch a preview: {e}")
            return []
        st.dataframe(rows, hide_index=True, width="stretch")
        return list(rows[0]) if rows else []
    try:
        first, total = services.dataset_page(ds["path"], 0, PAGE)
    except DataError as e:
        st.error(services.markdown_literal(str(e)))
        return []
    pages = max(1, -(-total // PAGE))
    c = st.columns([1, 4])
    page = c[0].number_input(f"Page (of {pages})", 1, pages, 1, key=state.key("ds-page") + ds["path"]) - 1
    c[1].caption(f"{total} rows · columns: {', '.join(first[0]) if first else '—'}")
    rows = first if page == 0 else services.dataset_page(ds["path"], page, PAGE)[0]
    st.dataframe(rows, hide_index=True, width="stretch", height=260)
    cols: list[str] = []
    for r in first:
        cols += [k for k in r if k not in cols]
    return cols

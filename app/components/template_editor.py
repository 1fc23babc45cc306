"""Column mapping, the training-text template (presets or free), a live preview, tokens per example and the split."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import services, state
from engine.errors import DataError

GUESS = {
    "prompt": ("prompt", "question", "instruction", "input", "query", "user"),
    "response": ("response", "answer", "output", "completion", "assistant", "target"),
}


def _guess(field: str, columns: list[str]) -> int:
    for cand in (field, *GUESS.get(field, ())):
        if cand in columns:
            return columns.index(cand)
    return 0


def _mapping(fields: list[str], columns: list[str], ds: dict[str, Any]) -> None:
    if not columns:
        return
    current = {v: k for k, v in (ds.get("columns") or {}).items()}
    cols = st.columns(max(1, len(fields)))
    mapping: dict[str, str] = {}
    for i, f in enumerate(fields):
        idx = columns.index(current[f]) if f in current and current[f] in columns else _guess(f, columns)
        col = cols[i].selectbox(f"Column for {{{f}}}", columns, index=idx, key=state.key(f"map-{f}"))
        if col != f:
            mapping[col] = f
    ds["columns"] = mapping


def _to_free(ds: dict[str, Any], preset: str) -> None:
    """An edited preset becomes the free template (it runs before the page, so the preset box can follow)."""
    if preset == services.FREE_PRESET:
        return
    ds["text_template"] = st.session_state[state.key(f"tpl-text-{preset}")]
    ds["_preset"] = services.FREE_PRESET
    st.session_state[state.key("tpl-preset")] = services.FREE_PRESET


def preset_of(ds: dict[str, Any]) -> str:
    """The preset a dataset's settings correspond to (a cloned or imported draft has none recorded)."""
    if ds.get("_preset") in services.PRESETS:
        return ds["_preset"]
    if ds.get("chat_template"):
        return services.TOKENIZER_PRESET
    for name, tpl in services.PRESETS.items():
        if tpl and tpl == ds.get("text_template"):
            return name
    return services.FREE_PRESET if ds.get("text_template") else next(iter(services.PRESETS))


def _format_offer(draft: dict[str, Any]) -> bool:
    """Offer (or show) the chat format the file's rows are in; True when a conversation format is in use (the
    template is then the tokenizer's, and only the assistant turns are trained)."""
    ds = draft["dataset"]
    found = services.dataset_format(ds.get("path"))
    if ds.get("format") and ds["format"] != found and found is not None:
        ds.pop("format")  # another file was chosen: its own format decides
    if found in services.CONVERSATION_FORMATS and ds.get("format") != found:
        st.info(f"The rows are {services.FORMAT_WORDS[found]}. Render them with the model's chat template and train "
                "on the assistant turns only (multi-turn included)?")
        if st.button(f"Use format: {found}", key=state.key("tpl-format"), type="primary"):
            ds.update(format=found, chat_template=True, text_template=None, columns={},
                      _preset=services.TOKENIZER_PRESET)
    elif found == "text" and not ds.get("chat_template") and ds.get("text_template") != "{text}":
        st.info(f"The rows are {services.FORMAT_WORDS['text']}: train on the text as is?")
        if st.button("Use text_template: '{text}'", key=state.key("tpl-text-offer"), type="primary"):
            ds.update(text_template="{text}", chat_template=False, _preset=services.FREE_PRESET, columns={})
            st.session_state[state.key("tpl-preset")] = services.FREE_PRESET
            st.session_state[state.key(f"tpl-text-{services.FREE_PRESET}")] = "{text}"
    if ds.get("format") not in services.CONVERSATION_FORMATS:
        return False
    st.markdown(f"**Format: {ds['format']}** — {services.FORMAT_WORDS[ds['format']]}, rendered with the tokenizer's "
                "chat template. Only the assistant turns are trained (highlighted in the preview below); the "
                "evaluation asks for each conversation's last assistant turn, given the turns before it.")
    if not services.chat_template(draft["model"].get("name", "")):
        st.warning("This model's tokenizer has no chat template: pick a model that has one.")
    if st.button("Use a text template instead", key=state.key("tpl-format-off"), type="tertiary"):
        ds.pop("format", None)
        ds.update(chat_template=False, _preset=next(iter(services.PRESETS)))
        ds["text_template"] = services.PRESETS[ds["_preset"]]
        st.rerun()
    ds.update(chat_template=True, text_template=None, columns={})
    ds["system_prompt"] = (
        st.text_input("System prompt (optional; for conversations that have none)", value=ds.get("system_prompt") or "",
                      key=state.key("tpl-sys")) or None
    )
    return True


def edit(draft: dict[str, Any], columns: list[str]) -> None:
    ds = draft["dataset"]
    if _format_offer(draft):
        _sizes(ds)
        return
    ds["_preset"] = preset_of(ds)
    names = list(services.PRESETS)
    preset = st.selectbox(
        "Template preset", names, index=names.index(ds.get("_preset", names[0])), key=state.key("tpl-preset")
    )
    ds["_preset"] = preset
    if preset == services.TOKENIZER_PRESET:
        ds.update(chat_template=True, text_template=None)
        if not services.chat_template(draft["model"].get("name", "")):
            st.warning("This model's tokenizer has no chat template: pick another preset.")
        c = st.columns(2)
        if columns:
            ds["prompt_column"] = c[0].selectbox(
                "User turn column", columns, index=_guess("prompt", columns), key=state.key("tpl-pc")
            )
            ds["response_column"] = c[1].selectbox(
                "Assistant turn column", columns, index=_guess("response", columns), key=state.key("tpl-rc")
            )
        ds["columns"] = {}
        ds["system_prompt"] = (
            st.text_input("System prompt (optional)", value=ds.get("system_prompt") or "", key=state.key("tpl-sys"))
            or None
        )
    else:
        default = services.PRESETS[preset] if preset != services.FREE_PRESET else (ds.get("text_template") or "{text}")
        text = st.text_area(
            "Template (a Python format string over the columns; editing a preset makes it free text)",
            value=default,
            height=130,
            key=state.key(f"tpl-text-{preset}"),
            on_change=_to_free,
            args=(ds, preset),
        )
        ds.update(chat_template=False, text_template=text)
        try:
            _mapping(services.template_fields(text), columns, ds)
        except DataError as e:
            st.error(services.markdown_literal(str(e)))
            return
    _sizes(ds)


def _sizes(ds: dict[str, Any]) -> None:
    c = st.columns(4)
    ds["max_seq_len"] = c[0].number_input(
        "max_seq_len (tokens)", 8, 131072, int(ds.get("max_seq_len") or 512), step=64, key=state.key("tpl-seq")
    )
    ds["eval_split"] = c[1].number_input(
        "Eval fraction", 0.01, 0.89, float(ds.get("eval_split") or 0.1), step=0.05, key=state.key("tpl-eval")
    )
    ds["split_seed"] = c[2].number_input(
        "Split seed", 0, 2**31 - 1, int(ds.get("split_seed") or 0), key=state.key("tpl-seed")
    )
    ds["max_samples"] = (
        c[3].number_input("Max train rows (empty: all)", 1, None, ds.get("max_samples"), key=state.key("tpl-max"))
        or None
    )


def preview(draft: dict[str, Any]) -> None:
    ds = draft["dataset"]
    if ds.get("hf_name"):
        st.caption("The rendered text, token counts and split of a Hub dataset are shown in the run.")
        return
    try:
        r = services.rendered(ds, draft["model"].get("name", ""))
        stats = services.split_stats(ds)
    except (DataError, ValueError) as e:
        st.error(services.markdown_literal(str(e)))
        return
    n = len(r["texts"])
    rows = st.multiselect(
        "Rows to preview",
        list(range(n)),
        default=[0] if n else [],
        key=state.key("tpl-rows"),
        format_func=lambda i: f"row {i + 1}",
    )
    for i in rows:
        parts = r.get("parts") or []
        if i < len(parts) and not all(t for _, t in parts[i]):
            _marked(parts[i])
        else:
            st.code(r["texts"][i], language=None, wrap_lines=True)
    lens, limit = r["lengths"], int(ds["max_seq_len"])
    cut = sum(n > limit for n in lens)
    c = st.columns(5)
    c[0].metric("Train rows", stats["train_rows"])
    c[1].metric("Eval rows", stats["eval_rows"])
    c[2].metric(
        "Duplicates train↔eval",
        stats["duplicates_train_eval"],
        help="eval prompts that also appear in train (case and spacing ignored)",
    )
    c[3].metric("Tokens (max)", max(lens) if lens else 0)
    c[4].metric(f"Cut at {limit}", cut, help="examples longer than max_seq_len lose their end")
    if stats["duplicates_train_eval"]:
        st.warning("Some eval prompts also appear in train: " + "; ".join(stats["duplicate_examples"][:3]))
    _histogram(lens, limit, r["exact"])


def _marked(parts: list) -> None:
    """A training text with its trained parts (the assistant turns) highlighted."""
    import html

    body = "".join(
        f'<mark style="background:#c8f7c5">{html.escape(t)}</mark>' if trained else
        f'<span style="color:#888">{html.escape(t)}</span>' for t, trained in parts)
    st.markdown(f'<pre style="white-space:pre-wrap">{body}</pre>', unsafe_allow_html=True)
    st.caption("Highlighted: trained (assistant turns); grey: context only, masked from the loss (labels -100).")


def _histogram(lens: list[int], limit: int, exact: bool) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=lens, nbinsx=40, name="examples"))
    fig.add_vline(x=limit, line_dash="dash", line_color="red", annotation_text=f"max_seq_len {limit}")
    fig.update_layout(
        height=260,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        bargap=0.05,
        title="Tokens per example" + ("" if exact else " (estimated: no tokenizer.json)"),
        xaxis_title="tokens",
        yaxis_title="examples",
    )
    st.plotly_chart(fig, key="token-hist", width="stretch")

"""The ordered pass list: add from Olive's catalog, reorder, remove; each pass's form generated from the catalog's
parameter metadata (common parameters first, the rest folded), any parameter searchable with its values.
Passes imported from an Olive config that the form cannot show are edited as raw JSON."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from app import services, state
from app.components import badges

COMMON = {
    "LoRA": ["r", "alpha", "lora_dropout", "torch_dtype", "training_args", "target_modules"],
    "QLoRA": ["r", "alpha", "quant_type", "double_quant", "compute_dtype", "training_args"],
    "DoRA": ["r", "alpha", "lora_dropout", "torch_dtype", "training_args"],
    "ModelBuilder": ["precision", "int4_block_size", "int4_accuracy_level", "int4_is_symmetric", "int4_algo_config"],
    "AutoAWQQuantizer": ["bits", "q_group_size", "zero_point", "apply_clip", "max_calib_samples", "n_grid"],
    "ExtractAdapters": ["adapter_type", "save_format", "make_inputs"],
    "OnnxDynamicQuantization": ["precision", "per_channel", "op_types_to_quantize"],
}
HIDDEN = {"train_data_config", "eval_data_config", "user_script", "script_dir"}
UNSET = object()


def _find(uid: str) -> tuple[list[dict[str, Any]], int]:
    passes = state.draft()["passes"]
    return passes, next(i for i, p in enumerate(passes) if p["uid"] == uid)


def _move(uid: str, step: int) -> None:
    passes, i = _find(uid)
    j = i + step
    if 0 <= j < len(passes):
        passes[i], passes[j] = passes[j], passes[i]


def _remove(uid: str) -> None:
    passes, i = _find(uid)
    passes.pop(i)


def add(ptype: str) -> None:
    passes = state.draft()["passes"]
    keys = {p.get("name") or p["type"].lower() for p in passes}
    name = None
    if ptype.lower() in keys:
        n = 2
        while f"{ptype.lower()}{n}" in keys:
            n += 1
        name = f"{ptype.lower()}{n}"
    passes.append({"type": ptype, "name": name, "params": {}, "search": {}})
    state.draft()


def _field(name: str, meta: dict[str, Any], current: Any, key: str) -> Any:
    default, t = meta.get("default"), meta.get("type", "")
    value = default if current is UNSET else current
    label, help_ = name, (meta.get("description") or "")[:400] or None
    choices = meta.get("choices")
    if t == "bool" and default is None:
        # three states: Olive's (or Grove's) default, on, off. A checkbox would store "off" for every such option
        # the moment the form is shown (ModelBuilder's enable_cuda_graph, int4_is_symmetric, exclude_lm_head...)
        choices = [True, False]
    if choices:
        options = ([None] if default is None else []) + list(choices)
        if value not in options:
            options.append(value)
        return st.selectbox(
            label,
            options,
            index=options.index(value),
            key=key,
            help=help_,
            format_func=lambda v: "(Olive default)" if v is None else str(v),
        )
    if t == "bool":
        return st.checkbox(label, value=bool(value), key=key, help=help_)
    if t in ("int", "Optional[int]") and (value is None or isinstance(value, int)):
        return st.number_input(label, value=value, step=1, key=key, help=help_, placeholder="(Olive default)")
    if t in ("float", "Optional[float]") and (value is None or isinstance(value, (int, float))):
        return st.number_input(
            label,
            value=None if value is None else float(value),
            format="%g",
            key=key,
            help=help_,
            placeholder="(Olive default)",
        )
    if t in ("str", "Optional[str]") and (value is None or isinstance(value, str)):
        return st.text_input(label, value=value or "", key=key, help=help_, placeholder="(Olive default)") or None
    text = st.text_input(
        f"{label} (JSON)",
        value="" if value is None else json.dumps(value),
        key=key,
        help=help_,
        placeholder="(Olive default)" if default is None else json.dumps(default),
    )
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        st.error(f"{name}: not valid JSON; the previous value is kept")
        return value


def _form(p: dict[str, Any], params: dict[str, Any], prefix: str) -> None:
    names = [k for k in params if k not in HIDDEN]
    common = [k for k in COMMON.get(p["type"], []) if k in params]
    if not common:
        common = [k for k in names if params[k].get("required") or params[k].get("search_values") is not None][:6]
    common += [k for k in p["params"] if k in names and k not in common]
    rest = [k for k in names if k not in common]
    searched = set(p.get("search") or {})
    new = {k: v for k, v in p["params"].items() if k not in names}  # hidden or unknown: kept verbatim

    def one(k: str) -> None:
        if k in searched:
            return
        v = _field(k, params[k], p["params"].get(k, UNSET), f"{prefix}-p-{k}")
        if v is not None and v != params[k].get("default"):
            new[k] = v

    cols = st.columns(3)
    for i, k in enumerate(common):
        with cols[i % 3]:
            one(k)
    if rest:
        with st.expander(f"More parameters ({len(rest)})"):
            cols = st.columns(3)
            for i, k in enumerate(rest):
                with cols[i % 3]:
                    one(k)
    _search(p, params, names, new, prefix)
    p["params"] = new


def _search(p: dict[str, Any], params: dict[str, Any], names: list[str], new: dict[str, Any], prefix: str) -> None:
    marked = st.multiselect(
        "Searchable parameters",
        names,
        default=[k for k in p.get("search") or {} if k in names],
        key=f"{prefix}-searchable",
        help="Olive tries each value listed; set the search settings below.",
    )
    search: dict[str, list[Any]] = {}
    for k in marked:
        seed = (
            p.get("search", {}).get(k)
            or params[k].get("search_values")
            or params[k].get("choices")
            or [params[k].get("default")]
        )
        text = st.text_input(f"Values for {k} (JSON list)", value=json.dumps(seed), key=f"{prefix}-sv-{k}")
        try:
            vals = json.loads(text)
            if not isinstance(vals, list) or not vals:
                raise ValueError
            search[k] = vals
        except ValueError:
            st.error(f"{k}: give a JSON list with at least one value, e.g. [16, 32]")
        new.pop(k, None)
    p["search"] = search


def _raw(p: dict[str, Any], prefix: str) -> None:
    st.caption("Kept as imported: Grove passes these parameters to Olive unchanged.")
    text = st.text_area(
        "Parameters (raw JSON)", value=json.dumps(p["params"], indent=2), height=160, key=f"{prefix}-raw"
    )
    try:
        val = json.loads(text)
        if not isinstance(val, dict):
            raise ValueError
        p["params"] = val
    except ValueError:
        st.error("Not a JSON object; the previous parameters are kept.")


def show(draft: dict[str, Any], catalog: dict[str, Any] | None) -> None:
    passes, target, has_ds = draft["passes"], draft["target"], bool(draft.get("dataset"))
    if not passes:
        st.info("No passes: a baseline run that measures the model as it is (enable evaluation below), or apply a "
                "recipe above, or add passes from Olive's catalog below.")
    for i, p in enumerate(passes):
        p["type"] = services.pass_type(p["type"], catalog)  # Olive reads pass types without regard to case
        meta = (catalog or {}).get(p["type"])
        uid, prefix = p["uid"], state.key(f"pass-{p['uid']}")
        with st.container(border=True):
            head, btn = st.columns([3, 2], vertical_alignment="center")
            title = f"**{i + 1}. {p['type']}**" + (f" · `{p['name']}`" if p.get("name") else "")
            extra = " :violet-badge[raw JSON]" if p.get("raw") else ""
            extra += f" :blue-badge[search: {', '.join(p['search'])}]" if p.get("search") else ""
            head.markdown(
                f"{title}{extra}  \n{badges.markdown(badges.fit(p['type'], meta, target, has_ds)) if catalog else ''}"
            )
            b = btn.columns([1, 1, 1, 2], vertical_alignment="center")
            b[0].button(
                "",
                icon=":material/arrow_upward:",
                key=f"{prefix}-up",
                on_click=_move,
                args=(uid, -1),
                disabled=i == 0,
                help="Move up",
            )
            b[1].button(
                "",
                icon=":material/arrow_downward:",
                key=f"{prefix}-down",
                on_click=_move,
                args=(uid, 1),
                disabled=i == len(passes) - 1,
                help="Move down",
            )
            b[2].button("", icon=":material/delete:", key=f"{prefix}-rm", on_click=_remove, args=(uid,), help="Remove")
            editing = b[3].toggle("Edit", key=f"{prefix}-edit", help="Edit this pass's parameters")
            if not editing:
                shown = {**p["params"], **{k: f"search {v}" for k, v in (p.get("search") or {}).items()}}
                st.caption(", ".join(f"{k}={json.dumps(v)[:60]}" for k, v in shown.items()) or "Olive's defaults")
            elif p.get("raw") or meta is None:
                _raw(p, prefix)
            else:
                _form(p, meta.get("params") or {}, prefix)
    if catalog:
        _adder(catalog, target, has_ds)


def _adder(catalog: dict[str, Any], target: dict[str, Any], has_ds: bool) -> None:
    c = st.columns([3, 2, 1], vertical_alignment="bottom")
    fits_only = c[1].checkbox("Only passes that fit the target", value=True, key="pass-fit-only")
    names = sorted(catalog)
    fit = {n: badges.ok(badges.fit(n, catalog[n], target, has_ds)) for n in names}
    options = [n for n in names if fit[n] or not fits_only]
    choice = c[0].selectbox(
        "Add a pass from Olive's catalog",
        options,
        index=None,
        placeholder="Pass type",
        format_func=lambda n: n + ("" if fit[n] else "  ✗ does not fit the target"),
        key="pass-add-type",
    )
    c[2].button("Add", icon=":material/add:", disabled=choice is None, on_click=add, args=(choice,), key="pass-add")

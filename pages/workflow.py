"""Workflow: recipe presets (the baseline one has no passes: it measures the model as it is) or a custom ordered
pass list, parameters, target, evaluation and search; a pre-flight check; launch; the Olive config to download; an
existing Olive config to import (as written, or as a CPU or CUDA version of it)."""

from __future__ import annotations

import streamlit as st

from app import nav, services, state
from app.components import model_picker, pass_editor, preflight_view, run_settings, targets_view
from app.components.errors import grove_error
from engine.errors import GroveError

st.title("Workflow")
state.show_flash()
draft = state.draft()
catalog = services.catalog_passes()

m = draft["model"].get("name") or "no model yet"
ds = draft.get("dataset") or {}
st.caption(f"Model: `{m}` · dataset: `{ds.get('path') or ds.get('hf_name') or 'none'}`")
st.page_link(nav.path("model_data.py"), label="Change model & data", icon=":material/dataset:")
draft["name"] = st.text_input("Run name", value=draft.get("name") or "my run", key=state.key("wf-name"))

c = st.columns([3, 1], vertical_alignment="bottom")
recipe = c[0].selectbox("Recipe", list(services.RECIPES), format_func=services.RECIPES.get, key="wf-recipe")
if c[1].button("Apply recipe", type="primary", key="wf-apply"):
    state.set_draft(services.apply_recipe(draft, recipe))
    state.flash(f"Applied the recipe: {services.RECIPES[recipe]}")
    st.rerun()

# a run for a target with an environment of its own (OpenVINO) runs there: create it here when it is missing
targets_view.show(expanded=(draft.get("target") or {}).get("execution_provider", "CPUExecutionProvider")
                  not in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"))

with st.expander("Import an Olive config (JSON or YAML)"):
    up = st.file_uploader("Olive workflow config", type=["json", "yaml", "yml"], key="wf-import-file")
    allow_code = st.checkbox(
        "Allow code from the config (user_script, script_dir, trust_remote_code)", key="wf-import-code",
        help="Such a config runs its own Python code in the run. Import it only if you trust where it came from.",
    )
    if allow_code:
        st.warning("The imported run may execute the config's own Python code and the model's remote code.")
    as_target = st.radio(
        "Target", ["as written", "cpu", "cuda"], horizontal=True, key="wf-import-target",
        format_func={"as written": "as the config says", "cpu": "a CPU version", "cuda": "a CUDA version"}.get,
        help="A config for a target Grove knows (OpenVINO; QNN, VitisAI, NvTensorRTRTX, which this machine cannot "
        "run) imports for that target as written; a CPU or CUDA version of it drops the passes that exist only for "
        "that target, each named below.",
    )
    if up is not None and st.button("Import into the form", key="wf-import"):
        try:
            new, notes = services.import_olive(up.getvalue().decode("utf-8", "replace"), allow_code=allow_code,
                                               target=None if as_target == "as written" else as_target)
        except GroveError as e:
            grove_error(e)
        else:
            state.set_draft(new)
            st.session_state[state.IMPORT_NOTES] = notes
            st.rerun()
    for n in st.session_state.get(state.IMPORT_NOTES, []):
        (st.warning if n.startswith("WARNING") else st.caption)(f"• {services.markdown_literal(n)}")

st.subheader("Passes", divider="gray")
if catalog is None:
    st.info("Reading Olive's pass catalog in the background (about 10 s the first time)…")
    st.fragment(lambda: services.catalog_passes() and st.rerun(scope="app"), run_every=2)()
pass_editor.show(draft, catalog)

st.subheader("Target", divider="gray")
run_settings.target(draft, services.gpus_available())
st.subheader("Evaluation", divider="gray")
run_settings.evaluation(draft)
st.subheader("Search", divider="gray")
run_settings.search(draft)

st.subheader("Pre-flight check", divider="gray")
ready = preflight_view.show(services.preflight_check(draft))
rt = services.template_round_trip(draft)
if rt is None:  # rendered in a child process: look again until it is there
    st.fragment(lambda: services.template_round_trip(draft) is not None and st.rerun(scope="app"), run_every=1)()
preflight_view.round_trip(rt)
model_picker.memory(draft)

c = st.columns(3)
if c[0].button("Launch", icon=":material/rocket_launch:", type="primary", disabled=not ready, key="wf-launch"):
    try:
        run = services.submit_draft(draft)
    except GroveError as e:
        grove_error(e)
    else:
        state.flash(f"Queued {run['id']} ({run['name']}).")
        st.switch_page(nav.path("runs.py"), query_params={"run": run["id"]})
if c[1].button("Build the Olive config", key="wf-build-config"):
    try:
        st.session_state[state.OLIVE_CONFIG] = [services.spec_json(draft), services.draft_olive_config(draft)]
    except GroveError as e:
        grove_error(e)
built = st.session_state.get(state.OLIVE_CONFIG)
if built and built[0] == services.spec_json(draft):
    c[2].download_button(
        "Download olive_config.json",
        built[1],
        file_name="olive_config.json",
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
    )
with st.expander("Run spec (what Launch submits)"):
    st.code(services.spec_json(draft), language="json")

"""Model & data: the input model (with its card and memory estimate), the dataset, and the training-text template."""

from __future__ import annotations

import streamlit as st

from app import nav, services, state
from app.components import dataset_source, model_picker, template_editor

st.title("Model & data")
state.show_flash()
draft = state.draft()
st.caption("A relative path typed here is read from " + " or, failing that, ".join(f"`{b}`" for b in services.path_bases())
           + ", and stored absolute when the run is launched.")

st.subheader("Model", divider="gray")
model_picker.pick(draft)
model_picker.card(draft)

st.subheader("Dataset", divider="gray")
dataset_source.pick(draft)
columns = dataset_source.preview(draft)
if draft.get("dataset") and st.button("Remove the dataset", key=state.key("ds-remove"), type="tertiary"):
    state.set_draft({**draft, "dataset": None})
    st.rerun()

if draft.get("dataset"):
    st.subheader("Training text", divider="gray")
    template_editor.edit(draft, columns)
    template_editor.preview(draft)

st.divider()
st.page_link(nav.path("workflow.py"), label="Next: build the workflow", icon=":material/arrow_forward:")
with st.expander("The draft so far (what Launch will submit)"):
    st.code(services.spec_json(draft), language="json")

"""Find a neuron: go to one by number, step or jump at random, or pick from a table filtered by layer, sorted by
score, density or maximum activation, and searched by explanation text.

Data: core.views.neuron_list (cached per filter for every session)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import views
from core.types import NeuronId
from dashboard import render, widgets
from dashboard.state import page_context

TABLE_ROWS = 500
"""Most neurons the table lists at once."""

ctx = page_context()
layers, neurons_per_layer = ctx.info.layers, ctx.info.neurons_per_layer
st.title("Find a neuron")


def go_typed() -> None:
    """Callback of Go: read "layer:neuron" from the box and move there (a message when it is not a neuron)."""
    text = st.session_state.get("picker_go", "")
    try:
        target = NeuronId.parse(text)
    except ValueError as error:
        st.session_state["picker_error"] = str(error)
        return
    if not (0 <= target.layer < layers and 0 <= target.neuron < neurons_per_layer):
        st.session_state["picker_error"] = (f"{target} is out of range: layers 0-{layers - 1}, "
                                            f"neurons 0-{neurons_per_layer - 1}")
        return
    st.session_state["picker_error"] = ""
    widgets.go_to(target.layer, target.neuron)


with st.form("picker_form", border=False):
    box, go = st.columns([3, 1], vertical_alignment="bottom")
    box.text_input("Go to a neuron (layer:neuron)", key="picker_go", placeholder="e.g. 3:42")
    go.form_submit_button("Go", on_click=go_typed, type="primary", width="stretch")
if st.session_state.get("picker_error"):
    st.error(render.plain(st.session_state["picker_error"]))
prev, lucky, nxt, _ = st.columns([1, 1, 1, 3])
prev.button("Previous", icon=":material/chevron_left:", on_click=widgets.step, args=(-1, layers, neurons_per_layer),
            width="stretch")
lucky.button("Random", icon=":material/shuffle:", on_click=widgets.random_neuron, args=(layers, neurons_per_layer),
             width="stretch")
nxt.button("Next", icon=":material/chevron_right:", on_click=widgets.step, args=(1, layers, neurons_per_layer),
           width="stretch")
st.markdown(f"Showing **neuron {ctx.neuron}** on every page — open it in:")
links = [("insights", "Insights"), ("scoring", "Scoring details"), ("related", "Related neurons"),
         ("try", "Try your own text")]
for column, (page, title) in zip(st.columns(4), links, strict=True):
    with column:
        widgets.page_link(page, title)

st.subheader("All neurons")
f_layer, f_sort, f_dir, f_search = st.columns([1, 1, 1, 3])
layer = f_layer.selectbox("Layer", ["all", *range(layers)], key="picker_layer")
order = f_sort.selectbox("Sort by", ["score", "density", "max", "min", "neuron"], key="picker_order",
                         format_func={"score": "score", "density": "density", "max": "max activation",
                                      "min": "min activation", "neuron": "layer, index"}.__getitem__)
descending = f_dir.toggle("Descending", value=True, key="picker_desc")
search = f_search.text_input("Search explanations", key="picker_search", placeholder="e.g. return, numbers, code")
found = ctx.view(views.neuron_list, None if layer == "all" else int(layer), search, order, descending, TABLE_ROWS)
st.caption(f"{found.count:,} neurons match" + (f"; showing the first {found.limit}" if found.count > found.limit
                                               else "") + ". Select a row to move there.")
shown = [row.neuron for row in found.rows]


def picked() -> None:
    """Callback of the table: move to the selected row's neuron."""
    selection = st.session_state["picker_table"].selection.rows
    if selection and selection[0] < len(shown):
        widgets.go_to(shown[selection[0]].layer, shown[selection[0]].neuron)


frame = pd.DataFrame({
    "layer": [r.neuron.layer for r in found.rows],
    "neuron": [r.neuron.neuron for r in found.rows],
    "score": [r.score for r in found.rows],
    "explanation": [r.explanation or "" for r in found.rows],
    "density": [r.density for r in found.rows],
    "max": [r.max_activation for r in found.rows],
    "min": [r.min_activation for r in found.rows],
})
st.dataframe(
    frame, key="picker_table", on_select=picked, selection_mode="single-row", hide_index=True, width="stretch",
    column_config={
        "score": st.column_config.NumberColumn(format="%.2f"),
        "density": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0),
        "max": st.column_config.NumberColumn(format="%.3f"),
        "min": st.column_config.NumberColumn(format="%.3f"),
        "explanation": st.column_config.TextColumn(width="large"),
    },
)
widgets.page_end()

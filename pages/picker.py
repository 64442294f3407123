"""Find a neuron: go to one by number, step or jump at random, or pick from a table filtered by layer, sorted by
score, density or maximum activation, and searched by explanation text."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import components as ui
from core.types import NeuronId

ctx = ui.page_context()
store = ctx.store
st.title("Find a neuron")


def go_typed() -> None:
    """Callback of Go: read "layer:neuron" from the box and move there (a message when it is not a neuron)."""
    text = st.session_state.get("picker_go", "")
    try:
        target = NeuronId.parse(text)
    except ValueError as error:
        st.session_state["picker_error"] = str(error)
        return
    if not (0 <= target.layer < ctx.layers and 0 <= target.neuron < ctx.width):
        st.session_state["picker_error"] = (f"{target} is out of range: layers 0-{ctx.layers - 1}, "
                                            f"neurons 0-{ctx.width - 1}")
        return
    st.session_state["picker_error"] = ""
    ui.go_to(target.layer, target.neuron)


with st.form("picker_form", border=False):
    box, go = st.columns([3, 1], vertical_alignment="bottom")
    box.text_input("Go to a neuron (layer:neuron)", key="picker_go", placeholder="e.g. 3:42")
    go.form_submit_button("Go", on_click=go_typed, type="primary", width="stretch")
if st.session_state.get("picker_error"):
    st.error(st.session_state["picker_error"])
prev, lucky, nxt, _ = st.columns([1, 1, 1, 3])
width = ctx.width
index = ctx.neuron.layer * width + ctx.neuron.neuron
total = ctx.layers * width
prev.button("Previous", icon=":material/chevron_left:", on_click=ui.go_to, args=divmod((index - 1) % total, width),
            width="stretch")
lucky.button("Random", icon=":material/shuffle:", on_click=ui.random_neuron, args=(ctx.layers, width),
             width="stretch")
nxt.button("Next", icon=":material/chevron_right:", on_click=ui.go_to, args=divmod((index + 1) % total, width),
           width="stretch")
st.markdown(f"Showing **neuron {ctx.neuron.layer}:{ctx.neuron.neuron}** on every page — open it in:")
links = st.columns(4)
for column, (page, title) in zip(links, [("insights", "Insights"), ("scoring", "Scoring details"),
                                         ("related", "Related neurons"), ("try", "Try your own text")], strict=True):
    with column:
        ui.page_link_here(page, title)

st.subheader("All neurons")
f_layer, f_sort, f_dir, f_search = st.columns([1, 1, 1, 3])
layer = f_layer.selectbox("Layer", ["all", *range(ctx.layers)], key="picker_layer")
order = f_sort.selectbox("Sort by", ["score", "density", "max", "min", "neuron"], key="picker_order",
                         format_func={"score": "score", "density": "density", "max": "max activation",
                                      "min": "min activation", "neuron": "layer, index"}.__getitem__)
descending = f_dir.toggle("Descending", value=True, key="picker_desc")
search = f_search.text_input("Search explanations", key="picker_search", placeholder="e.g. return, numbers, code")
layer_filter = None if layer == "all" else int(layer)
limit = 500
count = store.count_neurons(layer=layer_filter, search=search)
rows = store.neuron_table(layer=layer_filter, search=search, order=order, descending=descending, limit=limit)
st.caption(f"{count:,} neurons match" + (f"; showing the first {limit}" if count > limit else "")
           + ". Select a row to move there.")
st.session_state["_picker_rows"] = [(r.neuron.layer, r.neuron.neuron) for r in rows]


def picked() -> None:
    """Callback of the table: move to the selected row's neuron."""
    selection = st.session_state["picker_table"].selection.rows
    shown = st.session_state.get("_picker_rows", [])
    if selection and selection[0] < len(shown):
        ui.go_to(*shown[selection[0]])


frame = pd.DataFrame({
    "layer": [r.neuron.layer for r in rows],
    "neuron": [r.neuron.neuron for r in rows],
    "score": [r.score for r in rows],
    "explanation": [r.explanation or "" for r in rows],
    "density": [r.density for r in rows],
    "max": [r.max_activation for r in rows],
    "min": [r.min_activation for r in rows],
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
ui.page_end()

"""Find a neuron: go to one by number, step or jump at random, or pick from a table filtered by layer, sorted by
score, density or maximum activation, and searched by explanation text.

Data: core.views.neuron_list_on_view (cached per filter for every session until the notes change): explanations
made on view (kept in the notes) fill the rows the command line has not explained, searched and sorted with them
and marked (none are made here: a list holds up to 500 neurons)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import views
from core.types import NeuronId
from dashboard import onview, render, widgets
from dashboard.i18n import _, number, number_columns
from dashboard.state import page_context

TABLE_ROWS = 500  # most neurons the table lists at once (a comment: Streamlit would show a bare string)

ctx = page_context()
layers, neurons_per_layer = ctx.info.layers, ctx.info.neurons_per_layer
st.title(_("Find a neuron"))


def go_typed() -> None:
    """Callback of Go: read "layer:neuron" from the box and move there (a message when it is not a neuron)."""
    text = st.session_state.get("picker_go", "")
    try:
        target = NeuronId.parse(text)
    except ValueError:
        st.session_state["picker_error"] = _("“{text}” is not a neuron: write it as layer:neuron, e.g. 3:42",
                                             text=text)
        return
    if not (0 <= target.layer < layers and 0 <= target.neuron < neurons_per_layer):
        st.session_state["picker_error"] = _("{neuron} is out of range: layers 0-{last_layer}, neurons 0-{last_neuron}",
                                             neuron=target, last_layer=layers - 1, last_neuron=neurons_per_layer - 1)
        return
    st.session_state["picker_error"] = ""
    widgets.go_to(target.layer, target.neuron)


with st.form("picker_form", border=False):
    box, go = st.columns([3, 1], vertical_alignment="bottom")
    box.text_input(_("Go to a neuron (layer:neuron)"), key="picker_go", placeholder=_("e.g. 3:42"))
    go.form_submit_button(_("Go"), on_click=go_typed, type="primary", width="stretch")
if st.session_state.get("picker_error"):
    st.error(render.plain(st.session_state["picker_error"]))
prev, lucky, nxt, _spare = st.columns([1, 1, 1, 3])
prev.button(_("Previous"), icon=":material/chevron_left:", on_click=widgets.step, args=(-1, layers, neurons_per_layer),
            width="stretch")
lucky.button(_("Random"), icon=":material/shuffle:", on_click=widgets.random_neuron, args=(layers, neurons_per_layer),
             width="stretch")
nxt.button(_("Next"), icon=":material/chevron_right:", on_click=widgets.step, args=(1, layers, neurons_per_layer),
           width="stretch")
st.markdown(_("Showing **neuron {neuron}** on every page — open it in:", neuron=ctx.neuron))
links = [("insights", _("Insights")), ("scoring", _("Scoring details")), ("related", _("Related neurons")),
         ("try", _("Try your own text"))]
for column, (page, title) in zip(st.columns(4), links, strict=True):
    with column:
        widgets.page_link(page, title)

st.subheader(_("All neurons"))
f_layer, f_sort, f_dir, f_search = st.columns([1, 1, 1, 3])
# options' labels are looked up now, not in format_func (AppTest calls it after the run, outside the session)
layer_names: dict[str | int, str] = {"all": _("all"), **{index: str(index) for index in range(layers)}}
layer = f_layer.selectbox(_("Layer"), ["all", *range(layers)], key="picker_layer", format_func=layer_names.__getitem__)
order = f_sort.selectbox(_("Sort by"), ["score", "density", "max", "min", "neuron"], key="picker_order",
                         format_func={"score": _("score"), "density": _("density"), "max": _("max activation"),
                                      "min": _("min activation"), "neuron": _("layer, index")}.__getitem__)
descending = f_dir.toggle(_("Descending"), value=True, key="picker_desc")
search = f_search.text_input(_("Search explanations"), key="picker_search",
                             placeholder=_("e.g. return, numbers, code"))
found = ctx.notes_view(views.neuron_list_on_view, None if layer == "all" else int(layer), search, order, descending,
                       TABLE_ROWS)
if found.count > found.limit:
    st.caption(_("{count} neurons match; showing the first {limit}. Select a row to move there.",
                 count=number(found.count, ","), limit=number(found.limit, ",")))
else:
    st.caption(_("{count} neurons match. Select a row to move there.", count=number(found.count, ",")))
shown = [row.neuron for row in found.rows]
explained = [onview.shown_explanation(r, None) or ("", r.score) for r in found.rows]


def picked() -> None:
    """Callback of the table: move to the selected row's neuron."""
    selection = st.session_state["picker_table"].selection.rows
    if selection and selection[0] < len(shown):
        widgets.go_to(shown[selection[0]].layer, shown[selection[0]].neuron)


frame = pd.DataFrame({
    "layer": [r.neuron.layer for r in found.rows],
    "neuron": [r.neuron.neuron for r in found.rows],
    "score": [score for _text, score in explained],
    "explanation": [text for text, _score in explained],
    "density": [r.density for r in found.rows],
    "max": [r.max_activation for r in found.rows],
    "min": [r.min_activation for r in found.rows],
})
st.dataframe(
    number_columns(frame, score=2, max=3, min=3), key="picker_table", on_select=picked, selection_mode="single-row",
    hide_index=True, width="stretch",
    column_config={
        "layer": _("layer"), "neuron": _("neuron"),
        "score": st.column_config.NumberColumn(_("score")),
        "density": st.column_config.ProgressColumn(_("density"), format="percent", min_value=0.0, max_value=1.0),
        "max": st.column_config.NumberColumn(_("max")),
        "min": st.column_config.NumberColumn(_("min")),
        "explanation": st.column_config.TextColumn(_("explanation"), width="large"),
    },
)
if any(r.made for r in found.rows):
    st.caption(_(onview.ON_VIEW_LEGEND))
widgets.page_end()

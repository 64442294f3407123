"""Try your own text: the chosen neuron's activation on every token of a text you type, and which neurons of its
layer fire most on a token you pick. Forward passes are queued: one at a time for every session.

Data: core.live.text_activations (the forward pass), core.views.stats and core.views.neuron_rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import views
from core.live import LiveError, text_activations
from core.types import NeuronId
from dashboard import imported, onview, render, roles, widgets
from dashboard.i18n import _, number, number_columns
from dashboard.render import HeatmapRow, display_token
from dashboard.state import live_work, page_context

MAX_TOKENS = 256  # longest text (in tokens) one forward pass here reads (a comment: Streamlit would show a string)

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — try your own text", neuron=neuron))
if (missing := imported.missing_model(ctx)) is not None:
    imported.needs_model(ctx, missing, _("the activations of your own text"), _("and reload this page."))
    widgets.page_end()
    st.stop()
st.caption(_("Runs the cache's model ({model}) on your text, up to layer {layer}.", model=render.plain(ctx.info.model),
             layer=neuron.layer))
with st.form("try_form"):
    text = st.text_area(_("Text"), key="try_text", height=120, max_chars=4000,
                        value="def add(a, b):\n    return a + b\n\nThe cat sat on the mat on Monday morning.")
    run = st.form_submit_button(_("Run the model"), type="primary")
if run and text.strip() and roles.live_allowed():
    try:
        st.session_state["try_result"] = (neuron.layer, text_activations(ctx.info.model, neuron.layer, text,
                                                                         MAX_TOKENS, live_work))
    except LiveError as error:
        widgets.live_failed(_("The model could not run on your text."), error)

found = st.session_state.get("try_result")
if found is None or found[0] != neuron.layer:
    st.caption(_("Press **Run the model** to see activations."))
    widgets.page_end()
    st.stop()
layer, result = found
tokens, acts = result.tokens, result.activations  # acts: float32 [tokens, neurons_per_layer] of this layer
if result.cut:
    st.info(_("Your text is longer than {limit} tokens: only its first {count} tokens were read. Shorten it, or try "
              "the rest as a text of its own.", limit=MAX_TOKENS, count=len(tokens)))
stats = ctx.view(views.stats, neuron)
recorded_max = stats.max_activation if stats else 0.0
column = acts[:, neuron.neuron]
positive = max(recorded_max, float(column.max(initial=0.0)), 1e-9)
negative = max(-(stats.min_activation if stats else 0.0), float(-column.min(initial=0.0)), 0.0)
st.subheader(_("This neuron on your text"))
widgets.heatmap_legend(positive, negative)
widgets.heatmap([HeatmapRow(tokens, column.tolist(), _("{tokens} tokens · max {max} (this neuron's max in the "
                                                       "cache: {recorded})", tokens=len(tokens),
                                                       max=number(column.max(), ".3g"),
                                                       recorded=number(recorded_max, ".3g")))],
                positive_scale=positive, negative_scale=negative)

st.subheader(_("Which neurons of layer {layer} fire most on one token", layer=layer))
position = st.selectbox(_("Token"), range(len(tokens)), index=int(np.argmax(column)), key="try_position",
                        format_func=lambda i: f"{i}: {display_token(tokens[i])!r}")
top = tuple(NeuronId(layer, int(i)) for i in np.argsort(-acts[position])[:10])
rows = ctx.view(views.neuron_rows, top)
made = ctx.neuron_notes_view(views.on_view_explanations, top)  # those already made on view (none are made here)


def explained(n: NeuronId) -> tuple[str, str]:
    """A listed neuron's explanation and score as shown: the command line's, else one made on view (marked)."""
    shown = onview.shown_explanation(rows.get(n), made.get(n))
    if shown is None:
        return _("(not explained yet: open it to explain it)"), _("no score")
    return shown[0], onview.score_text(shown[1])


st.dataframe(number_columns(pd.DataFrame([{"neuron": str(n), "activation": float(acts[position, n.neuron]),
                                           "explanation": explained(n)[0], "score": explained(n)[1]} for n in top]),
                            activation=3),
             hide_index=True, width="stretch",
             column_config={"neuron": _("neuron"), "activation": _("activation"), "explanation": _("explanation"),
                            "score": _("score")})
if any(n in made and not (n in rows and rows[n].explanation) for n in top):
    st.caption(_(onview.ON_VIEW_LEGEND))
for slot, other in zip(st.columns(5), top[:5], strict=True):
    with slot:
        widgets.neuron_button(other, key=f"try_go_{other.neuron}")
widgets.page_end()

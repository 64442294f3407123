"""Try your own text: the chosen neuron's activation on every token of a text you type, and which neurons of its
layer fire most on a token you pick. Forward passes are queued: one at a time for every session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

import components as ui
from core.types import NeuronId

MAX_TOKENS = 256  # longest text (in tokens) one forward pass here reads

ctx = ui.page_context()
store, neuron = ctx.store, ctx.neuron
st.title(f"Neuron {neuron.layer}:{neuron.neuron} — try your own text")
st.caption(f"Runs the cache's model ({ctx.model}) on your text, up to layer {neuron.layer}.")
with st.form("try_form"):
    text = st.text_area("Text", key="try_text", height=120, max_chars=4000,
                        value="def add(a, b):\n    return a + b\n\nThe cat sat on the mat on Monday morning.")
    run = st.form_submit_button("Run the model", type="primary")
if run and text.strip():
    result = ui.text_activations(ctx, text, MAX_TOKENS)
    if isinstance(result, str):
        st.error(result)
    else:
        st.session_state["try_result"] = (text, neuron.layer, *result)

found = st.session_state.get("try_result")
if found is None or found[1] != neuron.layer:
    st.caption("Press **Run the model** to see activations.")
    ui.page_end()
    st.stop()
_, layer, tokens, acts = found  # acts: float32 [pos, n_neurons] of this layer
stats = store.neuron_stats(neuron)
column = acts[:, neuron.neuron]
positive = max(stats.max_activation if stats else 0.0, float(column.max(initial=0.0)), 1e-9)
negative = max(-(stats.min_activation if stats else 0.0), float(-column.min(initial=0.0)), 0.0)
st.subheader("This neuron on your text")
ui.heatmap_legend(positive, negative)
ui.heatmap([ui.HeatmapRow(tokens, column.tolist(), f"{len(tokens)} tokens · max {column.max():.3g} "
                          f"(this neuron's max in the cache: {stats.max_activation if stats else 0:.3g})")],
           positive_scale=positive, negative_scale=negative)

st.subheader(f"Which neurons of layer {layer} fire most on one token")
position = st.selectbox("Token", range(len(tokens)), index=int(np.argmax(column)), key="try_position",
                        format_func=lambda i: f"{i}: {ui.display_token(tokens[i])!r}")
top = [NeuronId(layer, int(i)) for i in np.argsort(-acts[position])[:10]]
rows = store.neuron_rows(top)
st.dataframe(pd.DataFrame([{"neuron": f"{n.layer}:{n.neuron}", "activation": float(acts[position, n.neuron]),
                            "explanation": rows[n].explanation if n in rows else None,
                            "score": rows[n].score if n in rows else None} for n in top]),
             hide_index=True, width="stretch")
buttons = st.columns(5)
for slot, other in enumerate(top[:5]):
    with buttons[slot]:
        ui.neuron_button(other, key=f"try_go_{other.neuron}")
ui.page_end()

"""Home: what a neuron is and how explanations are scored, the cache in use, how well each layer is explained,
the best, worst and surprising neurons, and where people's ratings and the score disagree."""

from __future__ import annotations

import streamlit as st

from core import views
from core.score import format_score
from dashboard import charts, classroom, render, widgets
from dashboard.state import PAGES, current_frame, no_cache_message

st.title("Neuron Atlas")
classroom.join_panel()
st.markdown(
    "A **neuron** here is one unit inside a transformer block's MLP: for every token the model reads it outputs "
    "one number, its *activation*. Some neurons fire on something a person can name. Neuron Atlas finds out "
    "which, in three steps:"
)
st.html(render.steps_html([
    ("1. Explain", "An explainer reads the excerpts where the neuron fires most and writes one sentence: what does "
                   "it look for?"),
    ("2. Simulate", "A simulator reads only that sentence and guesses the activation (0-10) of every token of "
                    "other excerpts."),
    ("3. Score", "The score is the correlation between guessed and real activations: 1 is perfect, 0 is no better "
                 "than chance."),
]))
frame = current_frame()
if frame.context is None:
    st.warning(no_cache_message(frame.problem))
    st.stop()
ctx = frame.context
home = ctx.view(views.home)
info = home.info
cols = st.columns([2.2, 1.4, 1, 1, 1])
cols[0].metric("Model", render.plain(info.model))  # metric values render Markdown
cols[1].metric("Corpus", render.plain(info.corpus))
cols[2].metric("Tokens", f"{info.tokens:,}")
cols[3].metric("Neurons", f"{info.layers * info.neurons_per_layer:,}",
               help=f"{info.layers} layers x {info.neurons_per_layer:,}")
cols[4].metric("Explained", f"{info.explanations:,}")
st.button("Start at layer 0, neuron 0 →", type="primary", on_click=widgets.go_to, args=(0, 0), key="start")
if st.session_state.get("start"):
    st.switch_page(PAGES["insights"])

if not home.layer_scores:
    widgets.not_computed("Explanations and scores",
                         f"python -m core explain {ctx.reader.path} --layers 0 --explainer baseline")
else:
    st.subheader("How well each layer is explained")
    st.altair_chart(charts.scores_by_layer_chart(home.layer_scores), width="stretch")
    lists = (("best", "Best explained", home.best), ("worst", "Worst explained", home.worst),
             ("surprising", "Surprising: deep yet well explained", home.surprising))
    for column, (name, title, rows) in zip(st.columns(3), lists, strict=True):
        with column:
            st.markdown(f"**{title}**")
            for row in rows:
                widgets.neuron_button(row.neuron, f"{row.neuron} · {format_score(row.score)} · "
                                      f"{(row.explanation or '')[:60]}", key=f"home_{name}_{row.neuron}")

disagreements = ctx.notes_view(views.disagreements)
st.subheader("Where people and the score disagree")
if not disagreements:
    st.caption("No disagreements yet: rate explanations on the Scoring page (right / partly / wrong).")
for index, item in enumerate(disagreements):  # one neuron can have several disagreeing explanations
    verdict = "people say wrong" if item.rated_wrong > item.rated_right else "people say right"
    widgets.neuron_button(item.neuron, f"{item.neuron} · score {format_score(item.score)} but {verdict} "
                          f"({item.rated_right}✓ {item.rated_partly}~ {item.rated_wrong}✗) · "
                          f"{item.explanation_text[:60]}", key=f"home_disagree_{index}_{item.neuron}")
widgets.page_end()

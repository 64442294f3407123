"""Home: what a neuron is and how explanations are scored, the cache in use, how well each layer is explained,
the best, worst and surprising neurons, and where people's ratings and the score disagree."""

from __future__ import annotations

import streamlit as st

from core import views
from dashboard import charts, classroom, onview, render, widgets
from dashboard.i18n import _, number
from dashboard.i18n import score as score_text
from dashboard.state import PAGES, current_frame, no_cache_message

st.title("Neuron Atlas")
classroom.join_panel()
st.markdown(_(
    "A **neuron** is one small unit inside the language model. Each time the model reads a token (a word or a "
    "piece of a word), every neuron answers with one number, its *activation*. Some neurons respond strongly to "
    "something you could name: numbers, the word \"return\", the end of a sentence. Neuron Atlas finds out which "
    "ones, in three steps:"
))
st.html(render.steps_html([
    (_("1. Explain"), _("A program, the explainer, reads the pieces of text where the neuron responds most and "
                        "writes one short sentence: what is this neuron looking for?")),
    (_("2. Simulate"), _("A second program, the simulator, reads only that sentence, never the neuron. For every "
                         "token of new text it guesses how strongly the neuron will respond, from 0 to 10.")),
    (_("3. Score"), _("We compare the guesses with the neuron's real activations. The score is their correlation: "
                      "1 means the sentence predicts the neuron perfectly, 0 means it does no better than chance.")),
]))
frame = current_frame()
if frame.context is None:
    st.warning(no_cache_message(frame.problem))
    st.stop()
ctx = frame.context
home = ctx.notes_view(views.home_on_view)
info = home.info
cols = st.columns([2.2, 1.4, 1, 1, 1])
cols[0].metric(_("Model"), render.plain(info.model))  # metric values render Markdown
cols[1].metric(_("Corpus"), render.plain(info.corpus))
cols[2].metric(_("Tokens"), number(info.tokens, ","))
cols[3].metric(_("Neurons"), number(info.layers * info.neurons_per_layer, ","),
               help=_("{layers} layers × {neurons} neurons", layers=info.layers,
                      neurons=number(info.neurons_per_layer, ",")))
cols[4].metric(_("Explained"), number(info.explanations, ","))
st.button(_("Start at layer 0, neuron 0 →"), type="primary", on_click=widgets.go_to, args=(0, 0), key="start")
if st.session_state.get("start"):
    st.switch_page(PAGES["insights"])

if not home.layer_scores:
    widgets.not_computed(_("Explanations and scores"),
                         f"python -m core explain {ctx.reader.path} --layers 0 --explainer baseline")
else:
    st.subheader(_("How well each layer is explained"))
    st.altair_chart(charts.scores_by_layer_chart(home.layer_scores), width="stretch")
    lists = (("best", _("Best explained"), home.best), ("worst", _("Worst explained"), home.worst),
             ("surprising", _("Surprising: deep yet well explained"), home.surprising))
    for column, (name, title, rows) in zip(st.columns(3), lists, strict=True):
        with column:
            st.markdown(f"**{title}**")
            for row in rows:
                shown, score = onview.shown_explanation(row, None, limit=60) or ("", row.score)
                widgets.neuron_button(row.neuron, f"{row.neuron} · {score_text(score)} · {shown}",
                                      key=f"home_{name}_{row.neuron}")
    if any(row.made for _name, _title, rows in lists for row in rows):
        st.caption(_(onview.ON_VIEW_LEGEND))

disagreements = ctx.notes_view(views.disagreements)
st.subheader(_("Where people and the score disagree"))
if not disagreements:
    st.caption(_("No disagreements yet: rate explanations on the Scoring details page (right / partly / wrong)."))
for index, item in enumerate(disagreements):  # one neuron can have several disagreeing explanations
    label = (_("{neuron} · score {score} but people say wrong ({right}✓ {partly}~ {wrong}✗) · {explanation}")
             if item.rated_wrong > item.rated_right else
             _("{neuron} · score {score} but people say right ({right}✓ {partly}~ {wrong}✗) · {explanation}"))
    widgets.neuron_button(item.neuron, label.format(neuron=item.neuron, score=score_text(item.score),
                                                    right=item.rated_right, partly=item.rated_partly,
                                                    wrong=item.rated_wrong, explanation=item.explanation_text[:60]),
                          key=f"home_disagree_{index}_{item.neuron}")
widgets.page_end()

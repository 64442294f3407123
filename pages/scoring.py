"""Scoring details: the explanation and its scores, real against simulated activations token by token on the
scoring excerpts, a scatter and per-excerpt scores; suggest a better explanation (scored live); human review."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import components as ui
from core.types import ExcerptKind, ExplanationStatus, Rating

ctx = ui.page_context()
store, neuron = ctx.store, ctx.neuron
st.title(f"Neuron {neuron.layer}:{neuron.neuron} — scoring details")
stats = store.neuron_stats(neuron)
if stats is None:
    st.warning(f"Neuron {neuron} was not recorded in this cache.")
    st.stop()

# --- the explanation(s) and their scores ------------------------------------------------------------------------
explained = [e for e in store.explanations(neuron) if e.status == ExplanationStatus.OK and e.text]
suggestions = store.suggestions(neuron)
current = None
if explained:
    if len(explained) > 1:
        current = st.selectbox("Explanation", explained, key="scoring_explanation",
                               format_func=lambda e: f"{ui.fmt_score(e.score_all)} · {e.explainer} · {e.text}"[:120])
    else:
        current = explained[0]
    ui.explanation_card(current.text, f"{current.explainer}{f' ({current.model})' if current.model else ''} · "
                        f"prompt {current.prompt_version or '-'} · scored by {current.simulator}")
    cols = st.columns(3)
    cols[0].metric("Score: top and random", ui.fmt_score(current.score_all))
    cols[1].metric("Top excerpts only", ui.fmt_score(current.score_top))
    cols[2].metric("Random excerpts only", ui.fmt_score(current.score_random))
else:
    ui.not_computed("An explanation and its scores",
                    f"python -m core explain {store.path} --neurons {neuron} --explainer baseline")

# --- real against simulated, token by token ---------------------------------------------------------------------
st.subheader("Real and simulated activations on the scoring excerpts")
sources: dict[str, object] = {}
if current is not None:
    sources[f"the explanation above ({current.simulator})"] = current
for s in suggestions:
    if s.score is not None:
        sources[f"suggestion #{s.suggestion_id} by {s.author} ({s.score.simulator}, {ui.fmt_score(s.score.score_all)})"
                f": {s.text[:60]}"] = s
left, right = st.columns([3, 1])
shown = left.selectbox("Simulation shown", list(sources), key="scoring_source") if sources else None
mode = right.radio("View", ["side by side", "overlaid"], horizontal=True, key="scoring_mode")
view = ui.simulation_view(store, neuron, sources.get(shown) if shown else None)
if not view.rows:
    st.caption("No scoring excerpts are stored for this neuron.")
else:
    positive = max(stats.max_activation, 1e-9)
    ui.heatmap_legend(positive, simulated=view.simulated and mode == "overlaid")
    if view.simulated and mode == "side by side":
        st.caption("Each excerpt: the real activations, then the simulated ones on the same 0-10 colour scale.")
    for kind, title in ((ExcerptKind.TOP, "Top scoring excerpts"), (ExcerptKind.RANDOM, "Random scoring excerpts")):
        rows = [row for row, k in zip(view.rows, view.kinds, strict=True) if k == kind]
        if rows:
            st.markdown(f"**{title}**")
            ui.heatmap(rows, positive_scale=positive, mode=mode if view.simulated else "real")
    if view.simulated:
        chart, table = st.columns([3, 2])
        chart.altair_chart(ui.scatter_chart(view.scatter), width="stretch")
        table.dataframe(view.per_excerpt, hide_index=True, width="stretch")
    else:
        st.caption("Simulated activations appear here once the neuron has a scored explanation or a suggestion.")

# --- suggest a better explanation ------------------------------------------------------------------------------
st.subheader("Suggest a better explanation")
st.caption(f"It is simulated and scored live with the **{ctx.live.spec}** simulator (change it in the sidebar), on the "
           "same scoring excerpts, and kept with your name.")
with st.form("suggest_form"):
    text = st.text_area("Your explanation", key="suggest_text", max_chars=500,
                        placeholder="e.g. the word 'return' in Python code")
    author = st.text_input("Your name", key="suggest_author", max_chars=60)
    submitted = st.form_submit_button("Score it", type="primary")
if submitted:
    if not text.strip():
        st.error("Type an explanation first.")
    else:
        result = ui.suggest_live(ctx, text.strip(), author.strip())
        if isinstance(result, str):
            st.error(result)
        else:
            st.session_state["suggest_result"] = (neuron, result)
last = st.session_state.get("suggest_result")
if last and last[0] == neuron:
    mine, baseline_score = last[1]
    left, right = st.columns(2)
    with left:
        st.markdown("**Current explanation**")
        if baseline_score is not None:
            ui.explanation_card(baseline_score.text, f"live score with {baseline_score.simulator}",
                                f"score {ui.fmt_score(baseline_score.score_all)}")
        else:
            st.caption("none yet")
    with right:
        st.markdown("**Yours**")
        score = mine.score
        ui.explanation_card(mine.text, f"by {mine.author} · live score with {score.simulator if score else '-'}",
                            f"score {ui.fmt_score(score.score_all if score else None)}")
if suggestions:
    st.dataframe(pd.DataFrame([{"suggestion": s.text, "by": s.author, "source": s.source,
                                "score": s.score.score_all if s.score else None,
                                "top": s.score.score_top if s.score else None,
                                "random": s.score.score_random if s.score else None,
                                "simulator": s.score.simulator if s.score else "", "when (UTC)": s.created_at}
                               for s in suggestions]), hide_index=True, width="stretch")

# --- human review ------------------------------------------------------------------------------------------------
st.subheader("Human review")
choices = [(f"explanation:{e.explanation_id}", e.text, e.score_all) for e in explained]
choices += [(f"suggestion:{s.suggestion_id}", s.text, s.score.score_all if s.score else None) for s in suggestions]
if not choices:
    st.caption("Nothing to rate yet: this neuron has no explanation or suggestion.")
else:
    with st.form("review_form"):
        picked = st.selectbox("Explanation", range(len(choices)), key="review_choice",
                              format_func=lambda i: f"{ui.fmt_score(choices[i][2])} · {choices[i][1]}"[:120])
        verdict = st.radio("Does it say what the neuron does?", [r.value for r in Rating], horizontal=True,
                           key="review_rating", format_func={"right": "✓ right", "partly": "~ partly",
                                                             "wrong": "✗ wrong"}.__getitem__)
        note = st.text_input("Note (why?)", key="review_note", max_chars=300)
        reviewer = st.text_input("Your name", key="review_author", max_chars=60)
        if st.form_submit_button("Save rating"):
            ref, rated_text, rated_score = choices[picked]
            store.add_rating(neuron, rated_text, Rating(verdict), note=note.strip(), author=reviewer.strip(),
                             explanation_ref=ref, score=rated_score)
            st.success("Rating saved.")
ratings = store.ratings(neuron)
if ratings:
    st.dataframe(pd.DataFrame([{"rating": r.rating.value, "explanation": r.explanation_text, "score": r.score,
                                "note": r.note, "by": r.author, "when (UTC)": r.created_at} for r in ratings]),
                 hide_index=True, width="stretch")
ui.page_end()

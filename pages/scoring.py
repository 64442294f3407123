"""Scoring details: the explanation and its scores, real against simulated activations token by token on the
scoring excerpts, a scatter and per-excerpt scores; suggest a better explanation (scored live); human review.

Data: core.views.scoring, core.views.people and core.views.simulation or live_simulation (cached for every
session)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import views
from core.live import LiveError, suggest
from core.score import format_score
from core.types import ExcerptKind, ExplanationRecord, Rating, Suggestion
from dashboard import onview, render, roles, svg, widgets
from dashboard.render import HeatmapRow
from dashboard.state import live_work, page_context

ctx = page_context()
neuron = ctx.neuron
st.title(f"Neuron {neuron} — scoring details")
view = ctx.view(views.scoring, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.notes_view(views.people, neuron)

# --- the explanation(s) and their scores ------------------------------------------------------------------------
explained, suggestions = view.explained, people.suggestions
current: ExplanationRecord | None = None
made: Suggestion | None = None  # the on-view explanation, when the command line has not explained the neuron
if explained:
    if len(explained) > 1:
        current = st.selectbox("Explanation", explained, key="scoring_explanation",
                               format_func=lambda e: f"{format_score(e.score_all)} · {e.explainer} · {e.text}"[:120])
    else:
        current = explained[0]
    assert current is not None and current.text is not None  # explained ones have text
    widgets.explanation_card(current.text, f"{current.explainer}{f' ({current.model})' if current.model else ''} · "
                             f"prompt {current.prompt_version or '-'} · scored by {current.simulator}")
    cols = st.columns(3)
    cols[0].metric("Score: top and random", format_score(current.score_all))
    cols[1].metric("Top excerpts only", format_score(current.score_top))
    cols[2].metric("Random excerpts only", format_score(current.score_random))
elif (made := onview.on_view(ctx, neuron)) is not None:
    onview.explanation_card(made)
    cols = st.columns(3)
    cols[0].metric("Score: top and random", onview.score_text(made.score.score_all if made.score else None))
    cols[1].metric("Top excerpts only", onview.score_text(made.score.score_top if made.score else None))
    cols[2].metric("Random excerpts only", onview.score_text(made.score.score_random if made.score else None))
    suggestions = ctx.notes_view(views.people, neuron).suggestions  # with the one kept now
else:
    widgets.not_computed("An explanation and its scores",
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")

# --- real against simulated, token by token ---------------------------------------------------------------------
st.subheader("Real and simulated activations on the scoring excerpts")
sources: dict[str, ExplanationRecord | Suggestion] = {}
if current is not None:
    sources[f"the explanation above ({current.simulator})"] = current
elif made is not None and made.score is not None:
    sources[f"the explanation above, made on view ({made.score.simulator})"] = made
for s in suggestions:
    if s.score is not None and (made is None or s.suggestion_id != made.suggestion_id):
        sources[f"suggestion #{s.suggestion_id} by {s.author} ({s.score.simulator}, {format_score(s.score.score_all)})"
                f": {s.text[:60]}"] = s
left, right = st.columns([3, 1])
shown = left.selectbox("Simulation shown", list(sources), key="scoring_source") if sources else None
mode = right.radio("View", ["side by side", "overlaid"], horizontal=True, key="scoring_mode")
source = sources.get(shown) if shown else None
if isinstance(source, Suggestion) and source.score is not None:
    score_id = source.score.score_id  # a live score never changes once kept: cached by its id
    shown_key: tuple[object, ...] = ("live", score_id)
    simulated = ctx.rendered("scoring.live_simulation", (neuron, score_id),
                             lambda: views.live_simulation(ctx.reader, ctx.notes, neuron, score_id))
else:
    explanation_id = source.explanation_id if isinstance(source, ExplanationRecord) else None
    shown_key = ("stored", explanation_id)
    simulated = ctx.view(views.simulation, neuron, explanation_id)
KIND_TITLES = {ExcerptKind.TOP: "Top scoring excerpts", ExcerptKind.RANDOM: "Random scoring excerpts"}


def scoring_heatmaps() -> str:
    """The top and the random scoring excerpts, real and simulated (built once per simulation and view)."""
    def label(item: views.SimulatedExcerpt) -> str:
        excerpt = item.excerpt
        if item.predictions is None:
            return (f"{excerpt.kind} #{excerpt.rank + 1} · excerpt {excerpt.excerpt.excerpt_id} · max "
                    f"{max(excerpt.activations):.3g}")
        return (f"{excerpt.kind} #{excerpt.rank + 1} · excerpt {excerpt.excerpt.excerpt_id} · max "
                f"{max(excerpt.activations):.3g} · excerpt score {format_score(item.score)}")

    return render.sections_html([(title, render.heatmap_html(
        [HeatmapRow(item.excerpt.excerpt.tokens, item.excerpt.activations, label(item), item.predictions)
         for item in simulated.excerpts if item.excerpt.kind == kind],
        positive_scale=positive, mode=mode if simulated.simulated else "real")) for kind, title in KIND_TITLES.items()])


def excerpt_scores() -> str:
    """Each scoring excerpt's own score."""
    return render.table_html(["excerpt", "kind", "score", "max activation"], [
        [item.excerpt.excerpt.excerpt_id, str(item.excerpt.kind), format_score(item.score),
         f"{max(item.excerpt.activations):.4g}"] for item in simulated.excerpts])


if not simulated.excerpts:
    st.caption("No scoring excerpts are stored for this neuron.")
else:
    positive = max(stats.max_activation, 1e-9)
    widgets.heatmap_legend(positive, simulated=simulated.simulated and mode == "overlaid")
    if simulated.simulated and mode == "side by side":
        st.caption("Each excerpt: the real activations, then the simulated ones on the same 0-10 colour scale.")
    widgets.html(ctx.rendered("scoring.heatmaps", (neuron, shown_key, mode), scoring_heatmaps))
    if simulated.simulated:
        chart, table = st.columns([3, 2])
        with chart:
            widgets.html(ctx.rendered("scoring.scatter", (neuron, shown_key), lambda: svg.scatter_svg(
                simulated, x_title="real activation (0-10 of the neuron's max)", y_title="simulated (0-10)",
                point_title="{token}: real {real}, simulated {simulated}")))
        with table:
            widgets.html(ctx.rendered("scoring.excerpt_scores", (neuron, shown_key), excerpt_scores))
    else:
        st.caption("Simulated activations appear here once the neuron has a scored explanation or a suggestion.")

# --- suggest a better explanation ------------------------------------------------------------------------------
st.subheader("Suggest a better explanation")
if roles.may_configure():
    st.caption(f"It is simulated and scored live with the **{render.plain(ctx.live.spec)}** simulator (change it in "
               "the sidebar), on the same scoring excerpts, and kept with your name.")
else:
    st.caption(f"It is simulated and scored live with the **{render.plain(ctx.live.spec)}** simulator, on the same "
               "scoring excerpts, and kept with your name.")
with st.form("suggest_form"):
    text = st.text_area("Your explanation", key="suggest_text", max_chars=500,
                        placeholder="e.g. the word 'return' in Python code")
    author = st.text_input("Your name", key="suggest_author", max_chars=60)
    submitted = st.form_submit_button("Score it", type="primary")
if submitted:
    if not text.strip():
        st.error("Type an explanation first.")
    elif roles.live_allowed():
        try:
            st.session_state["suggest_result"] = (neuron, suggest(ctx.reader, ctx.notes, neuron, text.strip(),
                                                                  author.strip(), ctx.live, live_work))
        except LiveError as error:
            st.error(render.plain(error))
last = st.session_state.get("suggest_result")
if last and last[0] == neuron:
    result = last[1]
    left, right = st.columns(2)
    with left:
        st.markdown("**Current explanation**")
        if result.current is not None:
            widgets.explanation_card(result.current.text, f"live score with {result.current.simulator}",
                                     widgets.score_badge(result.current.score_all))
        else:
            st.caption("none yet")
    with right:
        st.markdown("**Yours**")
        mine, score = result.suggestion, result.suggestion.score
        widgets.explanation_card(mine.text, f"by {mine.author} · live score with {score.simulator if score else '-'}"
                                 + (f" · {onview.seen_note(score)}" if onview.seen_note(score) else ""),
                                 widgets.score_badge(score.score_all if score else None))
        if onview.seen_note(score):
            st.caption("You wrote it on this page, which shows the scoring excerpts, so its score is optimistic: it "
                       "is kept as a suggestion and never picks the neuron's best explanation.")
suggestions = ctx.notes_view(views.people, neuron).suggestions  # with one kept above
if suggestions:
    st.dataframe(pd.DataFrame([{"suggestion": s.text, "by": s.author, "source": s.source,
                                "score": s.score.score_all if s.score else None,
                                "top": s.score.score_top if s.score else None,
                                "random": s.score.score_random if s.score else None,
                                "simulator": s.score.simulator if s.score else "",
                                "scoring excerpts": onview.seen_note(s.score), "when (UTC)": s.created_at}
                               for s in suggestions]), hide_index=True, width="stretch")

# --- human review ------------------------------------------------------------------------------------------------
st.subheader("Human review")
choices = [(f"explanation:{e.explanation_id}", e.text or "", e.score_all) for e in explained]
choices += [(f"suggestion:{s.suggestion_id}", s.text, s.score.score_all if s.score else None) for s in suggestions]
if not choices:
    st.caption("Nothing to rate yet: this neuron has no explanation or suggestion.")
else:
    with st.form("review_form"):
        picked = st.selectbox("Explanation", range(len(choices)), key="review_choice",
                              format_func=lambda i: f"{format_score(choices[i][2])} · {choices[i][1]}"[:120])
        verdict = st.radio("Does it say what the neuron does?", [r.value for r in Rating], horizontal=True,
                           key="review_rating", format_func={"right": "✓ right", "partly": "~ partly",
                                                             "wrong": "✗ wrong"}.__getitem__)
        note = st.text_input("Note (why?)", key="review_note", max_chars=300)
        reviewer = st.text_input("Your name", key="review_author", max_chars=60)
        if st.form_submit_button("Save rating"):
            ref, rated_text, rated_score = choices[picked]
            ctx.notes.add_rating(neuron, rated_text, Rating(verdict), note=note.strip(), author=reviewer.strip(),
                                 explanation_ref=ref, score=rated_score)
            st.success("Rating saved.")
ratings = ctx.notes_view(views.people, neuron).ratings  # a rating saved above is in it (the notes changed)
if ratings:
    st.dataframe(pd.DataFrame([{"rating": r.rating.value, "explanation": r.explanation_text, "score": r.score,
                                "note": r.note, "by": r.author, "when (UTC)": r.created_at} for r in ratings]),
                 hide_index=True, width="stretch")
widgets.page_end()

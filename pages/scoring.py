"""Scoring details: the explanation and its scores, real against simulated activations token by token on the
scoring excerpts, a scatter and per-excerpt scores; suggest a better explanation (scored live); human review.

Data: core.views.scoring, core.views.people and core.views.simulation or live_simulation (cached for every
session)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core import views
from core.live import LiveError, suggest
from core.types import ExcerptKind, ExplanationRecord, Rating, Suggestion
from dashboard import onview, render, roles, svg, widgets
from dashboard.i18n import N_, _, number, number_columns
from dashboard.i18n import score as score_text
from dashboard.render import EXCERPT_KINDS, RATINGS, HeatmapRow, named
from dashboard.state import live_work, page_context

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — scoring details", neuron=neuron))
view = ctx.view(views.scoring, neuron)
stats = widgets.recorded(neuron, view.stats)
people = ctx.neuron_notes_view(views.people, neuron)

# --- the explanation(s) and their scores ------------------------------------------------------------------------
SCORE_FIGURES = (N_("Score: top and random"), N_("Top excerpts only"), N_("Random excerpts only"))


def score_figures(scores: tuple[float | None, float | None, float | None],
                  shown: Callable[[float | None], str]) -> None:
    """The explanation's three scores in a row; `shown` words a missing one (undefined, or no score at all)."""
    widgets.stats([(_(label), shown(value), "") for label, value in zip(SCORE_FIGURES, scores, strict=True)])


explained, suggestions = view.explained, people.suggestions
current: ExplanationRecord | None = None
made: Suggestion | None = None  # the on-view explanation, when the command line has not explained the neuron
if explained:
    if len(explained) > 1:
        # labels made now, not in format_func (AppTest calls it after the run, outside the session's language)
        explanation_labels = {
            e.explanation_id: f"{score_text(e.score_all)} · {e.explainer} · {render.visible_blanks(e.text or '')}"[:120]
            for e in explained}
        current = st.selectbox(_("Explanation"), explained, key="scoring_explanation",
                               format_func=lambda e: explanation_labels[e.explanation_id])
    else:
        current = explained[0]
    assert current is not None and current.text is not None  # explained ones have text
    explainer = f"{current.explainer}{f' ({current.model})' if current.model else ''}"
    widgets.explanation_card(current.text, _("{explainer} · prompt {prompt} · scored by {simulator}",
                                             explainer=explainer, prompt=current.prompt_version or "-",
                                             simulator=current.simulator))
    score_figures((current.score_all, current.score_top, current.score_random), score_text)
elif (made := onview.on_view(ctx, neuron)) is not None:
    onview.explanation_card(made)
    scored = made.score
    score_figures((scored.score_all, scored.score_top, scored.score_random) if scored else (None, None, None),
                  onview.score_text)
    suggestions = ctx.neuron_notes_view(views.people, neuron).suggestions  # with the one kept now
else:
    widgets.not_computed(_("An explanation and its scores"),
                         f"python -m core explain {ctx.reader.path} --neurons {neuron} --explainer baseline")

# --- real against simulated, token by token ---------------------------------------------------------------------
st.subheader(_("Real and simulated activations on the scoring excerpts"))
sources: dict[str, ExplanationRecord | Suggestion] = {}
if current is not None:
    sources[_("the explanation above ({simulator})", simulator=current.simulator)] = current
elif made is not None and made.score is not None:
    sources[_("the explanation above, made on view ({simulator})", simulator=made.score.simulator)] = made
for s in suggestions:
    if s.score is not None and (made is None or s.suggestion_id != made.suggestion_id):
        sources[_("suggestion #{number} by {author} ({simulator}, {score}): {text}", number=s.suggestion_id,
                  author=s.author, simulator=s.score.simulator, score=score_text(s.score.score_all),
                  text=s.text[:60])] = s
left, right = st.columns([3, 1])
shown = left.selectbox(_("Simulation shown"), list(sources), key="scoring_source") if sources else None
mode = right.radio(_("View"), ["side by side", "overlaid"], horizontal=True, key="scoring_mode",
                   format_func={"side by side": _("side by side"), "overlaid": _("overlaid")}.__getitem__)
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
KIND_TITLES = {ExcerptKind.TOP: N_("Top scoring excerpts"), ExcerptKind.RANDOM: N_("Random scoring excerpts")}


def scoring_heatmaps() -> str:
    """The top and the random scoring excerpts, real and simulated (built once per simulation and view)."""
    def label(item: views.SimulatedExcerpt) -> str:
        excerpt = item.excerpt
        values = {"kind": named(EXCERPT_KINDS, excerpt.kind), "rank": excerpt.rank + 1,
                  "excerpt": excerpt.excerpt.excerpt_id, "max": number(max(excerpt.activations), ".3g")}
        if item.predictions is None:
            return _("{kind} #{rank} · excerpt {excerpt} · max {max}", **values)
        return _("{kind} #{rank} · excerpt {excerpt} · max {max} · excerpt score {score}", **values,
                 score=score_text(item.score))

    return render.sections_html([(_(title), render.heatmap_html(
        [HeatmapRow(item.excerpt.excerpt.tokens, item.excerpt.activations, label(item), item.predictions)
         for item in simulated.excerpts if item.excerpt.kind == kind],
        positive_scale=positive, mode=mode if simulated.simulated else "real")) for kind, title in KIND_TITLES.items()])


def excerpt_scores() -> str:
    """Each scoring excerpt's own score."""
    return render.table_html([_("excerpt"), _("kind"), _("score"), _("max activation")], [
        [item.excerpt.excerpt.excerpt_id, named(EXCERPT_KINDS, item.excerpt.kind), score_text(item.score),
         number(max(item.excerpt.activations), ".4g")] for item in simulated.excerpts])


if not simulated.excerpts:
    st.caption(_("No scoring excerpts are stored for this neuron."))
else:
    positive = max(stats.max_activation, 1e-9)
    widgets.heatmap_legend(positive, simulated=simulated.simulated and mode == "overlaid")
    if simulated.simulated and mode == "side by side":
        st.caption(_("Each excerpt: the real activations, then the simulated ones on the same 0-10 colour scale."))
    widgets.html(ctx.rendered("scoring.heatmaps", (neuron, shown_key, mode), scoring_heatmaps))
    if simulated.simulated:
        chart, table = st.columns([3, 2])
        with chart:
            widgets.chart(ctx.rendered("scoring.scatter", (neuron, shown_key), lambda: svg.scatter_svg(
                simulated, x_title=_("real activation (0-10 of the neuron's max)"), y_title=_("simulated (0-10)"),
                point_title=_("{token}: real {real}, simulated {simulated}"))))
        with table:
            widgets.html(ctx.rendered("scoring.excerpt_scores", (neuron, shown_key), excerpt_scores))
    else:
        st.caption(_("Simulated activations appear here once the neuron has a scored explanation or a suggestion."))

# --- suggest a better explanation ------------------------------------------------------------------------------
st.subheader(_("Suggest a better explanation"))
if roles.may_configure():
    st.caption(_("It is simulated and scored live with the **{simulator}** simulator (change it in the sidebar), on "
                 "the same scoring excerpts, and kept with your name.", simulator=render.plain(ctx.live.spec)))
else:
    st.caption(_("It is simulated and scored live with the **{simulator}** simulator, on the same scoring excerpts, "
                 "and kept with your name.", simulator=render.plain(ctx.live.spec)))
with st.form("suggest_form"):
    text = st.text_area(_("Your explanation"), key="suggest_text", max_chars=500,
                        placeholder=_("e.g. the word 'return' in Python code"))
    author = st.text_input(_("Your name"), key="suggest_author", max_chars=60)
    submitted = st.form_submit_button(_("Score it"), type="primary")
if submitted:
    if not text.strip():
        st.error(_("Type an explanation first."))
    elif roles.live_allowed():
        try:
            st.session_state["suggest_result"] = (neuron, suggest(ctx.reader, ctx.notes, neuron, text.strip(),
                                                                  author.strip(), ctx.live, live_work))
        except LiveError as error:
            widgets.live_failed(_("Your explanation could not be scored."), error)
last = st.session_state.get("suggest_result")
if last and last[0] == neuron:
    result = last[1]
    left, right = st.columns(2)
    with left:
        st.markdown(_("**Current explanation**"))
        if result.current is not None:
            widgets.explanation_card(result.current.text,
                                     _("live score with {simulator}", simulator=result.current.simulator),
                                     widgets.score_badge(result.current.score_all))
        else:
            st.caption(_("none yet"))
    with right:
        st.markdown(_("**Yours**"))
        mine, score = result.suggestion, result.suggestion.score
        widgets.explanation_card(mine.text, _("by {author} · live score with {simulator}", author=mine.author,
                                              simulator=score.simulator if score else "-")
                                 + (f" · {onview.seen_note(score)}" if onview.seen_note(score) else ""),
                                 widgets.score_badge(score.score_all if score else None))
        if onview.seen_note(score):
            st.caption(_("You wrote it on this page, which shows the scoring excerpts, so its score is optimistic: "
                         "it is kept as a suggestion and never picks the neuron's best explanation."))
suggestions = ctx.neuron_notes_view(views.people, neuron).suggestions  # with one kept above
if suggestions:
    st.dataframe(number_columns(pd.DataFrame([{"suggestion": s.text, "by": s.author, "source": s.source,
                                "score": s.score.score_all if s.score else None,
                                "top": s.score.score_top if s.score else None,
                                "random": s.score.score_random if s.score else None,
                                "simulator": s.score.simulator if s.score else "",
                                "scoring excerpts": onview.seen_note(s.score), "when (UTC)": s.created_at}
                               for s in suggestions]), score=2, top=2, random=2), hide_index=True, width="stretch",
                 column_config={"suggestion": _("suggestion"), "by": _("by"), "source": _("source"),
                                "score": _("score"), "top": _("top"), "random": _("random"),
                                "simulator": _("simulator"), "scoring excerpts": _("scoring excerpts"),
                                "when (UTC)": _("when (UTC)")})

# --- human review ------------------------------------------------------------------------------------------------
st.subheader(_("Human review"))
choices = [(f"explanation:{e.explanation_id}", e.text or "", e.score_all) for e in explained]
choices += [(f"suggestion:{s.suggestion_id}", s.text, s.score.score_all if s.score else None) for s in suggestions]
if not choices:
    st.caption(_("Nothing to rate yet: this neuron has no explanation or suggestion."))
else:
    with st.form("review_form"):
        review_labels = [f"{score_text(score)} · {text}"[:120] for _ref, text, score in choices]
        picked = st.selectbox(_("Explanation"), range(len(choices)), key="review_choice",
                              format_func=review_labels.__getitem__)
        verdict = st.radio(_("Does it say what the neuron does?"), [r.value for r in Rating], horizontal=True,
                           key="review_rating", format_func={"right": _("✓ right"), "partly": _("~ partly"),
                                                             "wrong": _("✗ wrong")}.__getitem__)
        note = st.text_input(_("Note (why?)"), key="review_note", max_chars=300)
        reviewer = st.text_input(_("Your name"), key="review_author", max_chars=60)
        if st.form_submit_button(_("Save rating")):
            ref, rated_text, rated_score = choices[picked]
            ctx.notes.add_rating(neuron, rated_text, Rating(verdict), note=note.strip(), author=reviewer.strip(),
                                 explanation_ref=ref, score=rated_score)
            st.success(_("Rating saved."))
ratings = ctx.neuron_notes_view(views.people, neuron).ratings  # a rating saved above is in it (the notes changed)
if ratings:
    st.dataframe(number_columns(pd.DataFrame([{"rating": named(RATINGS, r.rating.value),
                                               "explanation": r.explanation_text, "score": r.score, "note": r.note,
                                               "by": r.author, "when (UTC)": r.created_at} for r in ratings]),
                                score=2),
                 hide_index=True, width="stretch",
                 column_config={"rating": _("rating"), "explanation": _("explanation"), "score": _("score"),
                                "note": _("note"), "by": _("by"), "when (UTC)": _("when (UTC)")})
widgets.page_end()

"""Every neuron on screen has an explanation (issue 8): a neuron the command line has not explained gets one from the
offline default when it is first viewed (core.live.explain_on_view), kept in the notes and marked as such wherever
it is shown; and the token statistics shown beside an explanation as evidence."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import streamlit as st

from core import views
from core.live import LiveError, explain_on_view
from core.types import LiveScore, NeuronId, NeuronRow, Suggestion
from dashboard import render, widgets
from dashboard.i18n import N_, _, number_columns
from dashboard.i18n import score as localized_score
from dashboard.state import PageContext, live_work

ON_VIEW_NOTE = N_("made when first viewed, by the offline default (baseline explainer and simulator) — not by "
                  "`python -m core explain`; kept in the notes")
"""Where an on-view explanation came from, under it wherever it is shown (marked: `_` at use)."""

ON_VIEW_MARK = " ◦"
"""After an on-view explanation in a list (the list's caption says what it means)."""

ON_VIEW_LEGEND = N_("◦ made when first viewed, by the offline default (not by `python -m core explain`)")
"""The caption under a list with on-view explanations (marked: `_` at use)."""

SEEN_MARK = N_("👁 author saw the scoring excerpts")
"""Beside a live score whose text was written on the page that shows the scoring excerpts (an optimistic score)."""


def score_text(score: float | None) -> str:
    """A score in a list: "no score" where there is none."""
    return _("no score") if score is None else localized_score(score)


def seen_note(score: LiveScore | None) -> str:
    """SEEN_MARK for a live score whose author saw the scoring excerpts, else ""."""
    return _(SEEN_MARK) if score is not None and score.author_saw_score_excerpts else ""


def on_view(ctx: PageContext, neuron: NeuronId) -> Suggestion | None:
    """The neuron's on-view explanation, made now (in the live queue) when it has none; None when the offline
    default has nothing to say. Call only for a neuron without a finished explanation from the command line."""
    kept = ctx.notes_view(views.on_view_explanations, (neuron,)).get(neuron)
    if kept is not None:
        return kept
    try:
        return explain_on_view(ctx.reader, ctx.notes, neuron, live_work)
    except LiveError as error:
        widgets.live_failed(_("No explanation could be made for this neuron."), error)
        return None


def explanation_card(made: Suggestion) -> None:
    """An on-view explanation in a card, marked as made on view by the offline default."""
    widgets.explanation_card(made.text, _(ON_VIEW_NOTE), widgets.score_badge(made.score.score_all if made.score
                                                                          else None))


def fill_rows(ctx: PageContext, rows: dict[NeuronId, NeuronRow], neurons: Iterable[NeuronId]
              ) -> dict[NeuronId, Suggestion]:
    """On-view explanations of the listed neurons that have no explanation in `rows` (made now, with progress, for
    those that have none yet): what a list of related neurons shows for them."""
    wanted = tuple(dict.fromkeys(n for n in neurons if not (n in rows and rows[n].explanation)))
    found = dict(ctx.notes_view(views.on_view_explanations, wanted)) if wanted else {}
    missing = [n for n in wanted if n not in found]
    if missing:
        bar = st.progress(0.0, text=_("Explaining {count} listed neurons with the offline default",
                                      count=len(missing)))
        for done, neuron in enumerate(missing, 1):
            try:
                made = explain_on_view(ctx.reader, ctx.notes, neuron, live_work)
            except LiveError as error:
                widgets.live_failed(_("No explanation could be made for the listed neurons."), error)
                break
            if made is not None:
                found[neuron] = made
            bar.progress(done / len(missing), text=_("Explained {done} of {count} listed neurons", done=done,
                                                     count=len(missing)))
        bar.empty()
    return found


def evidence_table(ctx: PageContext, neuron: NeuronId) -> None:
    """"Tokens it fires on most": the evidence beside the explanation (levels 0-10 against the neuron's max)."""
    found = ctx.view(views.evidence, neuron)
    st.markdown(_("**Tokens it fires on most** (evidence from the excerpts explanations are written from, not an "
                  "explanation)"))
    if not found:
        st.caption(_("No token reaches above zero in those excerpts."))
        return
    st.dataframe(number_columns(pd.DataFrame({
        "token": [f'"{render.display_token(s.token)}"' for s in found],
        "mean level (0-10)": [round(float(s.mean_level), 1) for s in found],
        "count": [s.count for s in found],
        "at half max or more": [s.high for s in found],
    }), **{"mean level (0-10)": 1}), hide_index=True, width="stretch", column_config={
        "token": _("token"), "mean level (0-10)": _("mean level (0-10)"), "count": _("count"),
        "at half max or more": _("at half max or more")})

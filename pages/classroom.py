"""Explain it together (classroom mode): the neuron's top excerpts, a box where each student writes what the neuron
looks for, and the class board: every explanation scored live with the offline simulator and ranked by score, the
class's ratings beside each, real against simulated one click away. The teacher pins one, closes or clears the
board (cleared explanations are hidden, never deleted).

Data: core.views.insights (the excerpts, cached per neuron for every session), core.classroom.board and
core.views.live_simulation (cached per notes version); writes through core.live.suggest and NotesStore.add_rating.
"""

from __future__ import annotations

import streamlit as st

from core import classroom, views
from core.live import LiveError, suggest
from core.types import ExcerptKind, NeuronId, Rating, Split, Suggestion
from dashboard import render, roles, widgets
from dashboard.i18n import _, number
from dashboard.i18n import score as score_text
from dashboard.render import EXCERPT_KINDS, HeatmapRow, named
from dashboard.state import PageContext, live_work, page_context

# (comments, not docstrings: Streamlit would show a string standing alone in a page)
BOARD_POLL_S = 5.0  # seconds between two refreshes of the board while the page is open (reads changed notes only)
EXCERPTS_SHOWN = 5  # top excerpts shown as evidence

ctx = page_context()
neuron = ctx.neuron
st.title(_("Neuron {neuron} — explain it together", neuron=neuron))
view = ctx.view(views.insights, neuron)
stats = widgets.recorded(neuron, view.stats)

# --- the evidence: the top excerpts the explainers see ---------------------------------------------------------
st.markdown(_("**Where it fires most** (the top excerpts an explainer reads; hover a token for its activation)"))
top = next((g.excerpts for g in view.groups if g.kind == ExcerptKind.TOP), ())
shown = [r for r in top if r.split == Split.EXPLAIN][:EXCERPTS_SHOWN] or list(top[:EXCERPTS_SHOWN])
positive = max(stats.max_activation, 1e-9)
widgets.heatmap([HeatmapRow(r.excerpt.tokens, r.activations, _("#{rank} · max {max}", rank=r.rank + 1,
                                                                max=number(max(r.activations), ".3g")))
                 for r in shown], positive_scale=positive, negative_scale=max(-stats.min_activation, 0.0))


# --- write one --------------------------------------------------------------------------------------------------
def submit(ctx: PageContext, neuron: NeuronId) -> None:
    """Score the student's explanation live and put it on the board (a message says what happened)."""
    author = st.session_state.get("board_author", "").strip()
    try:
        text = classroom.check_explanation(st.session_state.get("board_text", ""))
    except ValueError as error:
        widgets.live_failed(_("Your explanation was not put on the board."), error)
        return
    if not author:
        st.error(_("Type your name or a nickname, so the class knows whose it is."))
        return
    if not ctx.notes.board_settings(neuron).open:
        st.error(_("The teacher has just closed the board for this neuron."))
        return
    if not roles.live_allowed():
        return
    try:
        made = suggest(ctx.reader, ctx.notes, neuron, text, author[:classroom.MAX_NAME_CHARS], roles.CLASS_BACKEND,
                       live_work)
    except LiveError as error:
        widgets.live_failed(_("Your explanation could not be scored."), error)
        return
    score = made.suggestion.score
    st.success(_("On the board with a score of {score}.", score=score_text(score.score_all if score else None)))


st.subheader(_("What does it look for?"))
if not ctx.neuron_notes_view(classroom.board, neuron).settings.open:
    st.info(_("The teacher has closed the board for this neuron: it is shown below, but takes no new explanations."))
else:
    with st.form("board_form", clear_on_submit=False):
        st.text_input(_("Your explanation (one short phrase)"), key="board_text",
                      max_chars=classroom.MAX_EXPLANATION_CHARS, placeholder=_("e.g. the word 'return' in Python code"))
        st.text_input(_("Your name or nickname"), key="board_author", max_chars=classroom.MAX_NAME_CHARS)
        sent = st.form_submit_button(_("Put it on the board"), type="primary")
    if sent:
        submit(ctx, neuron)


# --- the board ---------------------------------------------------------------------------------------------------
def votes_text(votes: classroom.Votes) -> str:
    return f"{votes.right}✓ {votes.partly}~ {votes.wrong}✗"


def change_board(ctx: PageContext, neuron: NeuronId, **change: object) -> None:
    """Widget callback of the teacher's controls (NotesStore.set_board's keywords; open=None reads the toggle)."""
    if "open" in change and change["open"] is None:
        change["open"] = bool(st.session_state[f"board_open_{neuron}"])
    if "pin" in change and change["pin"] is None:
        change["pin"] = st.session_state.get(f"board_pin_{neuron}")
    ctx.notes.set_board(neuron, **change)  # type: ignore[arg-type]


def teacher_controls(ctx: PageContext, board: classroom.Board) -> None:
    """Open or close the board, pin one explanation, clear the board."""
    neuron = board.neuron
    with st.expander(_("Teacher: the board"), expanded=True):
        opened, pin, clear = st.columns(3)
        opened.toggle(_("Open for explanations"), value=board.settings.open, key=f"board_open_{neuron}",
                      on_change=change_board, args=(ctx, neuron), kwargs={"open": None})
        choices = {e.suggestion.suggestion_id: f"#{e.rank} {e.suggestion.text[:50]}" for e in board.entries}
        if choices:
            pin.selectbox(_("Pin"), list(choices), format_func=choices.__getitem__, key=f"board_pin_{neuron}")
            left, right = pin.columns(2)
            left.button(_("Pin it"), key=f"board_pin_go_{neuron}", on_click=change_board, args=(ctx, neuron),
                        kwargs={"pin": None})
            right.button(_("Unpin"), key=f"board_unpin_{neuron}", disabled=board.settings.pinned_suggestion is None,
                         on_click=change_board, args=(ctx, neuron), kwargs={"unpin": True})
        sure = clear.checkbox(_("Clear the board"), key=f"board_clear_sure_{neuron}",
                              help=_("Hides every explanation and rating on this board; they stay in the notes."))
        clear.button(_("Clear it now"), key=f"board_clear_{neuron}", disabled=not sure, on_click=change_board,
                     args=(ctx, neuron), kwargs={"clear": True})


def rate_form(ctx: PageContext, board: classroom.Board) -> None:
    """Rate one explanation on the board: right, partly or wrong."""
    options = [(e.ref, e.suggestion.text, e.score) for e in board.entries]
    if board.reference is not None and board.reference.text:
        options.insert(0, (board.reference_ref, board.reference.text, board.reference.score_all))
    if not options:
        return
    with st.form(f"board_rate_{board.neuron}", border=False):
        st.markdown(_("**Rate one**"))
        which = st.selectbox(_("Explanation"), range(len(options)), format_func=lambda i: options[i][1][:100],
                             key=f"board_rate_choice_{board.neuron}")
        verdicts = {Rating.RIGHT: _("✓ right"), Rating.PARTLY: _("~ partly"), Rating.WRONG: _("✗ wrong")}
        verdict = st.radio(_("Does it say what the neuron does?"), list(verdicts), format_func=verdicts.__getitem__,
                           horizontal=True, key=f"board_rate_verdict_{board.neuron}")
        if st.form_submit_button(_("Rate")):
            ref, text, score = options[which]
            ctx.notes.add_rating(board.neuron, text, Rating(verdict), explanation_ref=ref, score=score,
                                 author=st.session_state.get("board_author", "").strip()[:classroom.MAX_NAME_CHARS])
            st.success(_("Rating counted."))


def real_against_simulated(ctx: PageContext, board: classroom.Board) -> None:
    """One explanation's simulation beside the real activations on the scoring excerpts."""
    scored = {e.suggestion.score.score_id: f"#{e.rank} {e.suggestion.text[:60]}" for e in board.entries
              if e.suggestion.score is not None}
    if not scored:
        return
    choose = _("(choose an explanation)")  # made now: AppTest calls format_func after the run
    picked = st.selectbox(_("Real against simulated for"), [None, *scored],
                          format_func=lambda i: choose if i is None else scored[i],
                          key=f"board_simulated_{board.neuron}")
    if picked is None:
        return
    simulated = ctx.neuron_notes_view(views.live_simulation, board.neuron, picked)
    scale = simulated.scale
    widgets.heatmap([HeatmapRow(item.excerpt.excerpt.tokens, item.excerpt.activations,
                                _("{kind} #{rank} · excerpt score {score}",
                                  kind=named(EXCERPT_KINDS, item.excerpt.kind), rank=item.excerpt.rank + 1,
                                  score=score_text(item.score)), item.predictions)
                     for item in simulated.excerpts], positive_scale=scale, mode="side by side")


def saw_scoring(suggestion: Suggestion) -> bool:
    """Whether the suggestion's author could have seen the scoring excerpts (its score is then optimistic)."""
    return suggestion.score is not None and suggestion.score.author_saw_score_excerpts


@st.fragment(run_every=BOARD_POLL_S)
def class_board(ctx: PageContext, neuron: NeuronId) -> None:
    """The board, refreshed while the page is open."""
    board = ctx.neuron_notes_view(classroom.board, neuron)
    st.subheader(_("The class board"))
    rows = [[f"{'📌 ' if e.pinned else ''}{e.rank}", e.suggestion.text, e.suggestion.author, votes_text(e.votes),
             f"{score_text(e.score)}{'*' if saw_scoring(e.suggestion) else ''}"] for e in board.entries]
    scores = [e.score or 0.0 for e in board.entries]
    reference = board.reference
    if reference is not None and reference.text:
        rows.append(["atlas", reference.text, reference.explainer, votes_text(board.reference_votes),
                     score_text(reference.score_all)])
        scores.append(reference.score_all or 0.0)
    if rows:
        st.html(render.table_html(["#", _("explanation"), _("by"), _("class rating"), _("score")], rows, bars=scores,
                                  widths=[7, 55, 14, 12, 12]))
        st.caption(_("Ranked by score: how well the offline simulator, reading only the explanation, predicts the "
                     "neuron on the scoring excerpts. * written by someone who could see the scoring excerpts (they "
                     "are on the Scoring page), so not a held-out score. Last row: the atlas's own explanation."))
    else:
        st.caption(_("Nothing on the board yet: be the first."))
    if board.hidden:
        st.caption(_("{count} earlier explanation(s) cleared by the teacher (kept in the notes).", count=board.hidden))
    if roles.is_teacher():
        teacher_controls(ctx, board)
    if board.settings.open:
        rate_form(ctx, board)
    real_against_simulated(ctx, board)


class_board(ctx, neuron)
widgets.page_end()

"""The classroom without Streamlit (core/classroom.py) and its state in the notes file: shares, boards, ranking,
ratings, clearing without losing anything, the state surviving a restart, rate limits, passcodes; on the tiny real
cache."""

from __future__ import annotations

import duckdb
import pytest

from core import classroom
from core.backends import BackendKind, BackendSpec
from core.classroom import Follow, RateLimit, Votes, follow_action
from core.live import LiveBackend, suggest
from core.paths import notes_path
from core.store import DashboardCache
from core.types import ClassShare, NeuronId, Rating, Scores

BASELINE = LiveBackend(BackendSpec(BackendKind.BASELINE))


@pytest.fixture
def cache(tiny_dashboard):
    return tiny_dashboard


def test_a_share_is_where_the_class_is_and_counts_the_class_version(cache):
    notes = cache.notes
    assert notes.class_share() is None and notes.class_version == 0
    notes.share(NeuronId(0, 1), "insights")
    latest = notes.share(NeuronId(1, 5), "classroom")
    assert notes.class_version == 2 and notes.version == 2
    found = notes.class_share()
    assert found == latest and (found.neuron, found.page, found.share_id) == (NeuronId(1, 5), "classroom", 2)
    assert found.created_at


def test_the_class_state_survives_a_restart_of_the_server(tiny_explained_cache, tmp_path):
    from core.paths import copy_cache

    path = tmp_path / "class.duckdb"
    copy_cache(tiny_explained_cache, path)
    first = DashboardCache(path)
    neuron = NeuronId(0, 1)
    first.notes.share(neuron, "classroom")
    kept = first.notes.add_suggestion(neuron, "cats", "Ada")
    first.notes.set_board(neuron, open=False, pin=kept.suggestion_id)
    first.close()
    again = DashboardCache(path)  # a new process would open the file the same way
    try:
        assert again.notes.class_share().neuron == neuron
        settings = again.notes.board_settings(neuron)
        assert (settings.open, settings.pinned_suggestion) == (False, kept.suggestion_id)
    finally:
        again.close()


def test_the_board_ranks_by_live_score_with_the_pinned_one_first(cache):
    notes, neuron = cache.notes, NeuronId(1, 5)
    ids = {}
    for text, score in (("low", 0.1), ("high", 0.9), ("middle", 0.5)):
        live = notes.add_live_score(neuron, text, "baseline", Scores(score, score, score, 8), [])
        ids[text] = notes.add_suggestion(neuron, text, text.upper(), score_id=live.score_id).suggestion_id
    notes.add_suggestion(neuron, "unscored", "U")
    notes.add_suggestion(neuron, "generated", "", source="openai:gpt-4o-mini")  # not the class's: not on the board
    board = classroom.board(cache.reader, notes, neuron)
    assert [e.suggestion.text for e in board.entries] == ["high", "middle", "low", "unscored"]
    assert [e.rank for e in board.entries] == [1, 2, 3, 4] and board.hidden == 0
    assert board.reference is not None and board.reference.text == "the word return"  # the atlas's best
    notes.set_board(neuron, pin=ids["low"])
    pinned = classroom.board(cache.reader, notes, neuron)
    assert [(e.suggestion.text, e.pinned) for e in pinned.entries][:2] == [("low", True), ("high", False)]
    notes.set_board(neuron, unpin=True)
    assert not any(e.pinned for e in classroom.board(cache.reader, notes, neuron).entries)


def test_ratings_count_on_the_board_and_clearing_hides_without_deleting(cache):
    notes, neuron = cache.notes, NeuronId(0, 1)
    before = notes.add_suggestion(neuron, "cats", "Ada")
    board = classroom.board(cache.reader, notes, neuron)
    entry = board.entries[0]
    for verdict in (Rating.RIGHT, Rating.RIGHT, Rating.WRONG):
        notes.add_rating(neuron, entry.suggestion.text, verdict, author="class", explanation_ref=entry.ref)
    notes.add_rating(neuron, board.reference.text, Rating.PARTLY, explanation_ref=board.reference_ref)
    board = classroom.board(cache.reader, notes, neuron)
    assert board.entries[0].votes == Votes(2, 0, 1) and board.reference_votes == Votes(0, 1, 0)

    notes.set_board(neuron, clear=True)
    after = notes.add_suggestion(neuron, "mats", "Bob")
    cleared = classroom.board(cache.reader, notes, neuron)
    assert [e.suggestion.text for e in cleared.entries] == ["mats"] and cleared.hidden == 1
    assert cleared.reference_votes == Votes() and cleared.entries[0].votes == Votes()
    # nothing people wrote is lost: the cleared suggestion and every rating are still in the notes
    assert {s.suggestion_id for s in notes.suggestions(neuron)} == {before.suggestion_id, after.suggestion_id}
    assert len(notes.ratings(neuron)) == 4 and notes.count_rows("ratings") == 4
    other = classroom.board(cache.reader, notes, NeuronId(0, 2))
    assert other.settings.cleared_suggestions == 0  # a board is cleared per neuron


def test_a_closed_board_stays_closed_until_opened(cache):
    neuron = NeuronId(0, 2)
    assert cache.notes.board_settings(neuron).open
    assert not cache.notes.set_board(neuron, open=False).open
    assert not cache.notes.set_board(neuron, pin=None).open  # other changes keep it closed
    assert cache.notes.set_board(neuron, open=True).open


def test_a_students_suggestion_is_scored_live_and_marked_as_written_with_the_scoring_excerpts_in_view(cache):
    neuron = NeuronId(0, 1)
    made = suggest(cache.reader, cache.notes, neuron, "the word 'cat'", "Ada", BASELINE)
    score = made.suggestion.score
    assert score is not None and score.simulator == "baseline" and score.author_saw_score_excerpts
    assert cache.notes.live_score_by_id(score.score_id).author_saw_score_excerpts
    entry = classroom.board(cache.reader, cache.notes, neuron).entries[0]
    assert entry.suggestion.score.author_saw_score_excerpts and entry.score == score.score_all


def test_an_older_notes_file_gets_the_classroom_tables_and_its_live_scores_read_as_seen(tiny_explained_cache, tmp_path):
    from core.paths import copy_cache

    path = tmp_path / "old.duckdb"
    copy_cache(tiny_explained_cache, path)
    with duckdb.connect(str(notes_path(path))) as con:  # the notes file as version 2 wrote it
        con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value JSON NOT NULL)")
        con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        con.execute("CREATE TABLE live_scores (score_id BIGINT PRIMARY KEY, layer SMALLINT NOT NULL, neuron INTEGER "
                    "NOT NULL, text VARCHAR NOT NULL, simulator VARCHAR NOT NULL, score_all DOUBLE, score_top DOUBLE, "
                    "score_random DOUBLE, created_at TIMESTAMP NOT NULL)")
        con.execute("INSERT INTO live_scores VALUES (1, 0, 1, 'cats', 'baseline', 0.5, 0.5, 0.5, now())")
    opened = DashboardCache(path)
    try:
        old = opened.notes.live_score_by_id(1)
        assert old is not None and old.author_saw_score_excerpts and old.text == "cats"
        new = opened.notes.add_live_score(NeuronId(0, 1), "mats", "baseline", Scores(0.1, 0.1, 0.1, 4), [],
                                          author_saw_score_excerpts=False)
        assert not opened.notes.live_score_by_id(new.score_id).author_saw_score_excerpts
        assert opened.notes.class_share() is None  # the classroom's tables were made too
    finally:
        opened.close()


SHARE = ClassShare(3, NeuronId(3, 42), "insights", "2026-12-01 10:00:00")


@pytest.mark.parametrize(("here", "page", "follow", "followed", "expected"), [
    (NeuronId(3, 42), "insights", False, 0, Follow.NOTHING),  # already there
    (NeuronId(0, 0), "insights", False, 0, Follow.OFFER),
    (NeuronId(3, 42), "scoring", False, 0, Follow.OFFER),  # the right neuron on another page
    (NeuronId(0, 0), "insights", True, 0, Follow.MOVE),
    (NeuronId(0, 0), "insights", True, 2, Follow.MOVE),  # a newer share than the one followed
    (NeuronId(0, 0), "insights", True, 3, Follow.OFFER),  # wandered off after following: offered, not dragged
])
def test_a_student_follows_each_share_once_and_may_wander_off(here, page, follow, followed, expected):
    assert follow_action(SHARE, here, page, follow=follow, followed=followed) == expected
    assert follow_action(None, here, page, follow=True, followed=0) == Follow.NOTHING


def test_the_rate_limit_counts_jobs_per_student_in_a_sliding_minute():
    limit = RateLimit(3)
    assert [limit.take("ada", now) for now in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert limit.take("ada", 10.0) == pytest.approx(50.0)  # the first job leaves the window at 60 s
    assert limit.take("bob", 10.0) == 0.0  # every student has their own
    assert limit.take("ada", 60.0) == 0.0 and limit.take("ada", 60.5) == pytest.approx(0.5)


def test_the_limit_comes_from_the_environment_with_a_clear_message(monkeypatch):
    monkeypatch.delenv(classroom.STUDENT_LIVE_ENV, raising=False)
    assert classroom.student_live_per_minute() == classroom.STUDENT_LIVE_PER_MINUTE
    monkeypatch.setenv(classroom.STUDENT_LIVE_ENV, "12")
    assert classroom.student_live_per_minute() == 12
    monkeypatch.setenv(classroom.STUDENT_LIVE_ENV, "lots")
    with pytest.raises(ValueError, match="whole number"):
        classroom.student_live_per_minute()


def test_passcodes_are_readable_and_compared_loosely_but_never_empty():
    code = classroom.new_passcode()
    assert len(code) == 9 and code[4] == "-" and set(code.replace("-", "")) <= set(classroom.PASSCODE_ALPHABET)
    assert classroom.new_passcode() != code
    assert classroom.passcode_matches(code.lower().replace("-", " "), code)
    assert not classroom.passcode_matches("WRONG-CODE", code)
    assert not classroom.passcode_matches("", "") and not classroom.passcode_matches("x", None)


def test_explanations_for_the_board_are_one_short_phrase():
    assert classroom.check_explanation("  the word\n'cat'  ") == "the word 'cat'"
    with pytest.raises(ValueError, match="Type an explanation"):
        classroom.check_explanation("   ")
    with pytest.raises(ValueError, match="at most 100"):
        classroom.check_explanation("x" * 101)


def test_the_join_link_becomes_a_qr_code_made_here():
    png = classroom.qr_png("http://192.168.1.20:8501")
    assert png.startswith(b"\x89PNG") and len(png) > 100

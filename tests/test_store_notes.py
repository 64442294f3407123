"""The notes file: what people write in the dashboard (live scores, suggestions, ratings) and LLM answers."""

from __future__ import annotations

import math

import duckdb
import pytest

from core.paths import copy_cache, notes_path
from core.store import DashboardCache, open_results_writer
from core.types import LiveSimulation, NeuronId, Rating, Scores


@pytest.fixture
def cache(tiny_dashboard):
    return tiny_dashboard


def test_the_notes_file_is_made_on_first_use_and_the_rest_stays_read_only(cache):
    assert notes_path(cache.reader.path).exists()
    with pytest.raises(duckdb.Error):
        cache.reader._db.cursor().execute("DELETE FROM results.explanations")
    assert cache.notes.version == 0


def test_live_scores_are_kept_and_found_again(cache):
    notes, neuron = cache.notes, NeuronId(0, 1)
    sims = [LiveSimulation(3, (0.0, 5.5, 10.0), 0.7), LiveSimulation(1, (1.0, 2.0), None)]
    kept = notes.add_live_score(neuron, "cats", "baseline", Scores(0.5, float("nan"), None, 5), sims)
    assert kept.score_top is None and notes.version == 1  # NaN is stored as undefined
    found = notes.live_score(neuron, "cats", "baseline")
    assert found is not None and found.score_id == kept.score_id
    assert (found.score_all, found.score_top, found.score_random) == (0.5, None, None)
    assert [(s.excerpt_id, s.normalized_predictions, s.score) for s in found.simulations] == [
        (1, (1.0, 2.0), None), (3, (0.0, 5.5, 10.0), pytest.approx(0.7))]
    assert notes.live_score(neuron, "cats", "openai:x") is None
    assert notes.live_score(NeuronId(0, 2), "cats", "baseline") is None



@pytest.mark.parametrize("version", [1, 2])
def test_live_scores_record_whether_their_author_saw_the_scoring_excerpts(tiny_explained_cache, tmp_path, version):
    """A suggestion typed on the scoring page has seen the SCORE excerpts: the flag is kept with its live score.
    Notes files from before the flag (version 1, and version 2 before this column) get the column on first use,
    and their rows read as seen."""
    path = tmp_path / "tiny.duckdb"
    copy_cache(tiny_explained_cache, path)
    old = duckdb.connect(str(notes_path(path)))
    predictions = "normalized_activations" if version == 1 else "normalized_predictions"
    old.execute("CREATE TABLE live_scores (score_id BIGINT PRIMARY KEY, layer SMALLINT NOT NULL, neuron INTEGER NOT "
                "NULL, text VARCHAR NOT NULL, simulator VARCHAR NOT NULL, score_all DOUBLE, score_top DOUBLE, "
                "score_random DOUBLE, created_at TIMESTAMP NOT NULL)")
    old.execute(f"CREATE TABLE live_simulations (score_id BIGINT NOT NULL, excerpt_id INTEGER NOT NULL, {predictions} "
                "FLOAT[] NOT NULL, score DOUBLE)")
    if version == 2:
        old.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value JSON NOT NULL)")
        old.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    old.execute("INSERT INTO live_scores VALUES (1, 0, 1, 'old', 'baseline', 0.5, 0.5, NULL, now())")
    old.execute("INSERT INTO live_simulations VALUES (1, 3, [1.0, 2.0], 0.5)")
    old.close()
    cache = DashboardCache(path)
    try:
        notes, neuron = cache.notes, NeuronId(0, 1)
        found = notes.live_score_by_id(1)
        assert found is not None and found.author_saw_score_excerpts is True
        assert [s.normalized_predictions for s in found.simulations] == [(1.0, 2.0)]
        unseen = notes.add_live_score(neuron, "commas", "baseline", Scores(0.4, 0.5, 0.1, 5), [],
                                      author_saw_score_excerpts=False)
        seen = notes.add_live_score(neuron, "numbers", "baseline", Scores(0.3, 0.2, 0.1, 5), [])
        assert unseen.author_saw_score_excerpts is False and seen.author_saw_score_excerpts is True
        assert notes.live_score_by_id(unseen.score_id).author_saw_score_excerpts is False
        assert notes.live_score_by_id(seen.score_id).author_saw_score_excerpts is True
        notes.add_suggestion(neuron, "commas", "Ada", score_id=unseen.score_id)
        [suggestion] = notes.suggestions(neuron)
        assert suggestion.score is not None and suggestion.score.author_saw_score_excerpts is False
    finally:
        cache.close()

def test_suggestions_list_best_score_first_with_author(cache):
    notes, neuron = cache.notes, NeuronId(1, 5)
    low = notes.add_live_score(neuron, "low", "baseline", Scores(0.1, 0.1, 0.1, 5), [])
    high = notes.add_live_score(neuron, "high", "baseline", Scores(0.9, 0.8, 0.7, 5), [])
    notes.add_suggestion(neuron, "low", "Ada", score_id=low.score_id)
    notes.add_suggestion(neuron, "unscored <b>x</b>", "")
    made = notes.add_suggestion(neuron, "high", "Bob", source="openai:gpt-4o-mini", score_id=high.score_id)
    assert made.score is not None and made.score.score_all == 0.9 and made.created_at
    listed = notes.suggestions(neuron)
    assert [(s.text, s.author, s.source) for s in listed] == [
        ("high", "Bob", "openai:gpt-4o-mini"), ("low", "Ada", "person"), ("unscored <b>x</b>", "anonymous", "person")]
    assert listed[0].score is not None and listed[0].score.score_top == 0.8 and listed[2].score is None
    assert notes.suggestions(NeuronId(0, 0)) == []


def test_suggestions_from_one_source_are_found_for_many_neurons_latest_first(cache):
    notes, a, b = cache.notes, NeuronId(1, 5), NeuronId(0, 3)
    seen = notes.add_live_score(a, "old", "baseline", Scores(0.2, 0.2, 0.2, 5), [], author_saw_score_excerpts=False)
    notes.add_suggestion(a, "old", "x", source="on view", score_id=seen.score_id)
    newer = notes.add_suggestion(a, "new", "x", source="on view")
    notes.add_suggestion(b, "a person's", "Ada")
    found = notes.suggestions_from("on view", [a, b, NeuronId(0, 9)])
    assert list(found) == [a] and found[a] == newer and found[a].score is None
    live = notes.add_live_score(b, "scored", "baseline", Scores(0.2, 0.2, 0.2, 5), [], author_saw_score_excerpts=False)
    scored = notes.add_suggestion(b, "scored", "x", source="on view", score_id=live.score_id)
    found = notes.suggestions_from("on view", [a, b])
    assert found[b] == scored and found[b].score is not None and found[b].score.score_all == 0.2
    assert found[b].score.author_saw_score_excerpts is False and notes.suggestions_from("on view", []) == {}
    assert notes.suggestions_from("person", [b])[b].author == "Ada"


def test_ratings_are_stored_and_disagreements_found(cache):
    notes = cache.notes
    a, b, c = NeuronId(0, 1), NeuronId(0, 2), NeuronId(1, 5)
    for verdict in ("wrong", "wrong", "partly"):  # scored high, people say wrong
        notes.add_rating(a, "cats and mats", Rating(verdict), note="no", author="T", explanation_ref="explanation:1",
                         score=0.61)
    notes.add_rating(b, "100% literal", Rating.RIGHT, score=0.12)  # scored low, people say right
    notes.add_rating(c, "the word return", Rating.RIGHT, score=0.48)  # agreement
    notes.add_rating(c, "unscored", Rating.WRONG, score=None)  # no score: never a disagreement
    assert [(r.rating, r.note, r.author) for r in notes.ratings(a)] == [(Rating.PARTLY, "no", "T")] + [
        (Rating.WRONG, "no", "T")] * 2
    assert notes.ratings(b)[0].author == "anonymous"
    found = notes.disagreements()
    assert {(d.neuron, d.rated_right, d.rated_partly, d.rated_wrong) for d in found} == {(a, 0, 1, 2), (b, 1, 0, 0)}
    assert all(math.isfinite(d.score) for d in found)
    with pytest.raises(ValueError):
        notes.add_rating(a, "x", "maybe")  # type: ignore[arg-type]


def test_llm_answers_stay_in_the_file_of_whoever_asked(cache, tiny_explained_cache, tmp_path):
    cache.notes.responses.put("k", "chat.completions", "m", '{"a": 1}')
    cache.notes.responses.put("k", "chat.completions", "m", '{"a": 2}')  # a repeated key keeps the first answer
    assert cache.notes.responses.get("k") == '{"a": 1}' and cache.notes.responses.get("other") is None
    path = tmp_path / "cli.duckdb"
    copy_cache(tiny_explained_cache, path)
    with open_results_writer(path) as writer:
        assert writer.responses.get("k") is None  # the command line's answers are its own
        writer.responses.put("k", "completions", "m", '{"b": 1}')
    with open_results_writer(path) as writer:
        assert writer.responses.get("k") == '{"b": 1}'


def test_each_write_counts_for_its_neuron_so_views_of_other_neurons_stay_valid(cache):
    notes, a, b = cache.notes, NeuronId(1, 5), NeuronId(0, 3)
    assert (notes.version, notes.neuron_version(a), notes.neuron_version(b)) == (0, 0, 0)
    live = notes.add_live_score(a, "x", "baseline", Scores(0.2, 0.2, 0.2, 5), [])
    notes.add_suggestion(a, "x", "Ada", score_id=live.score_id)
    notes.add_rating(a, "x", Rating.RIGHT)
    assert (notes.version, notes.neuron_version(a), notes.neuron_version(b)) == (3, 3, 0)
    notes.share(b, "insights")
    notes.set_board(b, open=True)
    assert (notes.version, notes.neuron_version(a), notes.neuron_version(b), notes.class_version) == (5, 3, 2, 2)

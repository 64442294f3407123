"""The store's dashboard section: the notes file (live scores, suggestions, ratings), the neuron table and search."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import duckdb
import pytest

from core.corpus import build_corpus
from core.record import BuildPlan, RecordConfig, record_corpus
from core.store import NOTES_TABLES, Store, StoreError, like_pattern, neuron_table_filter, notes_path
from core.types import ExplanationStatus, LiveSimulation, NeuronId, Rating, Scores

CORPUS = ("The cat sat on the mat. def f(x):\n    return x + 1\n100% of_the values. " * 30)


@pytest.fixture(scope="module")
def tiny_cache(tiny_subject, tmp_path_factory) -> Path:
    """A real cache of the tiny Llama (2 layers x 48 neurons) with three scored explanations in it."""
    folder = tmp_path_factory.mktemp("dash-store")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS)
    cache = folder / "tiny.duckdb"
    plan = BuildPlan(model=tiny_subject.name, corpus=str(corpus), tokens=512, excerpt_len=16, settings={})
    record_corpus(tiny_subject, lambda: build_corpus(str(corpus), tiny_subject.tokenizer, max_tokens=512,
                                                     excerpt_len=16), cache, plan, RecordConfig(top_k=4),
                  progress=False)
    with Store.open(cache, writable=True) as store:
        for neuron, text, score in [(NeuronId(0, 1), "cats and mats", 0.61), (NeuronId(0, 2), "100% literal", 0.12),
                                    (NeuronId(1, 5), "the word return", 0.48)]:
            store.add_explanation(neuron, text=text, explainer="baseline", model=None, prompt_version="t",
                                  simulator="baseline", status=ExplanationStatus.OK, calibration_score=score,
                                  scores=Scores(score, score, None, 32))
        store.add_explanation(NeuronId(1, 5), text="a worse one", explainer="baseline", model=None,
                              prompt_version="t", simulator="other", status=ExplanationStatus.OK,
                              calibration_score=0.05, scores=Scores(0.05, 0.05, None, 32))
    return cache


@pytest.fixture
def store(tiny_cache, tmp_path):
    """The tiny cache (a fresh copy, so every test has its own notes file) opened as the dashboard opens it."""
    path = tmp_path / "copy.duckdb"
    shutil.copy(tiny_cache, path)
    with Store.open(path, with_notes=True) as opened:
        yield opened


@pytest.mark.parametrize(
    ("kwargs", "where", "params"),
    [
        ({}, "true", []),
        ({"layer": 3}, "s.layer = ?", [3]),
        ({"search": "  cat  "}, "b.explanation ILIKE ? ESCAPE '\\'", ["%cat%"]),
        ({"search": "   "}, "true", []),
        ({"scored_only": True, "min_layer": 2}, "s.layer >= ? AND b.score IS NOT NULL", [2]),
        ({"layer": 0, "search": "50%"}, "s.layer = ? AND b.explanation ILIKE ? ESCAPE '\\'", [0, "%50\\%%"]),
    ],
)
def test_neuron_table_filter(kwargs, where, params):
    assert neuron_table_filter(**kwargs) == (where, params)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [("cat", "%cat%"), ("100%", "%100\\%%"), ("of_the", "%of\\_the%"), ("a\\b", "%a\\\\b%"), ("'; DROP", "%'; DROP%")],
)
def test_like_pattern_takes_wildcards_literally(text, pattern):
    assert like_pattern(text) == pattern


def test_notes_tables_are_created_beside_a_read_only_cache(store):
    assert store.notes_counts() == dict.fromkeys(NOTES_TABLES, 0)
    assert notes_path(store.path).exists()
    with pytest.raises(duckdb.Error):  # the cache itself stays read-only
        store._cursor().execute("DELETE FROM cache.meta")


def test_live_scores_are_kept_and_found_again(store):
    neuron = NeuronId(0, 1)
    sims = [LiveSimulation(3, (0.0, 5.5, 10.0), 0.7), LiveSimulation(1, (1.0, 2.0), None)]
    kept = store.add_live_score(neuron, "cats", "baseline", (0.5, float("nan"), None), sims)
    assert kept.score_top is None  # NaN is stored as undefined
    found = store.live_score(neuron, "cats", "baseline")
    assert found is not None and found.score_id == kept.score_id
    assert (found.score_all, found.score_top, found.score_random) == (0.5, None, None)
    assert [(s.excerpt_id, s.normalized_activations, s.score) for s in found.simulations] == [
        (1, (1.0, 2.0), None), (3, (0.0, 5.5, 10.0), pytest.approx(0.7))]
    assert store.live_score(neuron, "cats", "openai:x") is None
    assert store.live_score(NeuronId(0, 2), "cats", "baseline") is None


def test_suggestions_list_best_score_first_with_author(store):
    neuron = NeuronId(1, 5)
    low = store.add_live_score(neuron, "low", "baseline", (0.1, 0.1, 0.1), [])
    high = store.add_live_score(neuron, "high", "baseline", (0.9, 0.8, 0.7), [])
    store.add_suggestion(neuron, "low", "Ada", score_id=low.score_id)
    store.add_suggestion(neuron, "unscored <b>x</b>", "")
    made = store.add_suggestion(neuron, "high", "Bob", source="openai:gpt-4o-mini", score_id=high.score_id)
    assert made.score is not None and made.score.score_all == 0.9 and made.created_at
    listed = store.suggestions(neuron)
    assert [(s.text, s.author, s.source) for s in listed] == [
        ("high", "Bob", "openai:gpt-4o-mini"), ("low", "Ada", "person"), ("unscored <b>x</b>", "anonymous", "person")]
    assert listed[0].score.score_top == 0.8 and listed[2].score is None
    assert store.suggestions(NeuronId(0, 0)) == []


def test_ratings_are_stored_and_disagreements_found(store):
    a, b, c = NeuronId(0, 1), NeuronId(0, 2), NeuronId(1, 5)
    for verdict in ("wrong", "wrong", "partly"):  # scored high, people say wrong
        store.add_rating(a, "cats and mats", Rating(verdict), note="no", author="T", explanation_ref="explanation:1",
                         score=0.61)
    store.add_rating(b, "100% literal", Rating.RIGHT, score=0.12)  # scored low, people say right
    store.add_rating(c, "the word return", Rating.RIGHT, score=0.48)  # agreement
    store.add_rating(c, "unscored", Rating.WRONG, score=None)  # no score: never a disagreement
    assert [(r.rating, r.note, r.author) for r in store.ratings(a)] == [(Rating.PARTLY, "no", "T")] + [
        (Rating.WRONG, "no", "T")] * 2
    assert store.ratings(b)[0].author == "anonymous"
    found = store.disagreements()
    assert {(d.neuron, d.rated_right, d.rated_partly, d.rated_wrong) for d in found} == {(a, 0, 1, 2), (b, 1, 0, 0)}
    assert all(math.isfinite(d.score) for d in found)
    with pytest.raises(ValueError):
        store.add_rating(a, "x", "maybe")  # type: ignore[arg-type]


def test_neuron_table_sorts_filters_and_searches(store):
    by_score = store.neuron_table(order="score", scored_only=True)
    assert [(r.neuron, r.explanation, r.score) for r in by_score] == [
        (NeuronId(0, 1), "cats and mats", pytest.approx(0.61)),
        (NeuronId(1, 5), "the word return", pytest.approx(0.48)),
        (NeuronId(0, 2), "100% literal", pytest.approx(0.12)),
    ]
    ascending = store.neuron_table(order="score", descending=False, scored_only=True)
    assert ascending[0].neuron == NeuronId(0, 2)
    everything = store.neuron_table(limit=1000)
    assert len(everything) == store.count_neurons() == 2 * 48
    assert everything[0].score is not None and everything[-1].score is None  # unscored last, either direction
    dens = store.neuron_table(order="density", layer=1, limit=1000)
    assert {r.neuron.layer for r in dens} == {1}
    assert [r.density for r in dens] == sorted((r.density for r in dens), reverse=True)
    assert [r.neuron for r in store.neuron_table(search="CAT")] == [NeuronId(0, 1)]
    assert [r.neuron for r in store.neuron_table(search="0%")] == [NeuronId(0, 2)]  # % is literal
    assert store.neuron_table(search="o_d") == [] and store.count_neurons(search="o_d") == 0  # _ is literal
    assert [r.neuron for r in store.neuron_table(search="'; DROP TABLE x; --")] == []
    assert store.neuron_table(order="score", scored_only=True, min_layer=1)[0].neuron == NeuronId(1, 5)
    with pytest.raises(StoreError, match="cannot sort"):
        store.neuron_table(order="score; DROP TABLE x")


def test_neuron_rows_and_scores_by_layer(store):
    rows = store.neuron_rows([NeuronId(1, 5), NeuronId(0, 7)])
    assert rows[NeuronId(1, 5)].explanation == "the word return"  # the best of its two explanations
    assert rows[NeuronId(0, 7)].explanation is None and rows[NeuronId(0, 7)].score is None
    assert store.neuron_rows([]) == {}
    layers = store.scores_by_layer()
    assert [(s.layer, s.scored) for s in layers] == [(0, 2), (1, 1)]
    assert layers[0].mean_score == pytest.approx((0.61 + 0.12) / 2)


def test_reload_cache_sees_a_replaced_file_and_keeps_the_notes(store, tiny_cache, tmp_path):
    store.add_rating(NeuronId(0, 1), "x", Rating.RIGHT)
    replacement = tmp_path / "new.duckdb"
    shutil.copy(tiny_cache, replacement)
    with Store.open(replacement, writable=True) as writer:
        writer.set_meta({"model": "rebuilt"})
    os.replace(replacement, store.path)  # what a finished build does
    assert store.meta()["model"] != "rebuilt"  # still the old file until re-attached
    store.reload_cache()
    assert store.meta()["model"] == "rebuilt"
    assert len(store.ratings(NeuronId(0, 1))) == 1

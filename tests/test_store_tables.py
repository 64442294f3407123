"""Tables of neurons for the dashboard: filters, sorting, search taken literally, best explanations, layers."""

from __future__ import annotations

import pytest

from core.store import StoreError, like_pattern, neuron_table_filter, open_reader
from core.types import NeuronId


@pytest.fixture
def reader(tiny_explained_cache):
    with open_reader(tiny_explained_cache) as opened:
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


def test_neuron_table_sorts_filters_and_searches(reader):
    by_score = reader.neuron_table(order="score", scored_only=True)
    assert [(r.neuron, r.explanation, r.score) for r in by_score] == [
        (NeuronId(0, 1), "cats and mats", pytest.approx(0.61)),
        (NeuronId(1, 5), "the word return", pytest.approx(0.48)),
        (NeuronId(0, 2), "100% literal", pytest.approx(0.12)),
    ]
    ascending = reader.neuron_table(order="score", descending=False, scored_only=True)
    assert ascending[0].neuron == NeuronId(0, 2)
    everything = reader.neuron_table(limit=1000)
    assert len(everything) == reader.count_neurons() == 2 * 48
    assert everything[0].score is not None and everything[-1].score is None  # unscored last, either direction
    dens = reader.neuron_table(order="density", layer=1, limit=1000)
    assert {r.neuron.layer for r in dens} == {1}
    assert [r.density for r in dens] == sorted((r.density for r in dens), reverse=True)
    assert [r.neuron for r in reader.neuron_table(search="CAT")] == [NeuronId(0, 1)]
    assert [r.neuron for r in reader.neuron_table(search="0%")] == [NeuronId(0, 2)]  # % is literal
    assert reader.neuron_table(search="o_d") == [] and reader.count_neurons(search="o_d") == 0  # _ is literal
    assert [r.neuron for r in reader.neuron_table(search="'; DROP TABLE x; --")] == []
    assert reader.neuron_table(order="score", scored_only=True, min_layer=1)[0].neuron == NeuronId(1, 5)
    with pytest.raises(StoreError, match="cannot sort"):
        reader.neuron_table(order="score; DROP TABLE x")


def test_neuron_rows_and_scores_by_layer(reader):
    rows = reader.neuron_rows([NeuronId(1, 5), NeuronId(0, 7)])
    assert rows[NeuronId(1, 5)].explanation == "the word return"  # the best of its two explanations
    assert rows[NeuronId(0, 7)].explanation is None and rows[NeuronId(0, 7)].score is None
    assert reader.neuron_rows([]) == {}
    layers = reader.scores_by_layer()
    assert [(s.layer, s.scored) for s in layers] == [(0, 2), (1, 1)]
    assert layers[0].mean_score == pytest.approx((0.61 + 0.12) / 2)


def test_explanations_kept_in_the_notes_fill_neurons_without_one(tiny_explained_cache, tmp_path):
    """The picker's table in the dashboard (notes attached): a notes source's latest suggestion stands in for a
    neuron the command line has not explained, marked, searched and sorted with the rest; an explained neuron
    keeps its own."""
    from core.paths import copy_cache
    from core.store.cache import DashboardCache
    from core.types import Scores

    path = tmp_path / "tiny.duckdb"
    copy_cache(tiny_explained_cache, path)
    cache = DashboardCache(path)
    try:
        notes, reader = cache.notes, cache.reader
        for neuron, text, score in ((NeuronId(0, 7), "first try", 0.2), (NeuronId(0, 7), "closing brackets", 0.55),
                                    (NeuronId(0, 1), "not shown: 0:1 has its own", 0.9)):
            live = notes.add_live_score(neuron, text, "baseline", Scores(score, None, None, 10), [])
            notes.add_suggestion(neuron, text, "atlas", "on view", live.score_id)
        notes.add_suggestion(NeuronId(1, 2), "a person's, not the source's", "Ada")
        by_score = reader.neuron_table(order="score", scored_only=True, made_by="on view")
        assert [(r.neuron, r.explanation, r.score, r.made) for r in by_score] == [
            (NeuronId(0, 1), "cats and mats", pytest.approx(0.61), False),
            (NeuronId(0, 7), "closing brackets", pytest.approx(0.55), True),  # the latest of the source's two
            (NeuronId(1, 5), "the word return", pytest.approx(0.48), False),
            (NeuronId(0, 2), "100% literal", pytest.approx(0.12), False),
        ]
        assert [r.neuron for r in reader.neuron_table(search="BRACKET", made_by="on view")] == [NeuronId(0, 7)]
        assert reader.count_neurons(search="bracket", made_by="on view") == 1
        assert reader.neuron_table(search="bracket") == [] and reader.count_neurons(search="bracket") == 0
        assert reader.neuron_table(search="person", made_by="on view") == []  # another source
        assert reader.count_neurons(made_by="on view") == reader.count_neurons() == 2 * 48
    finally:
        cache.close()

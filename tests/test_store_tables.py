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

"""What each page shows, read in one call (core/views.py), on the tiny real cache."""

from __future__ import annotations

import pytest

from core import views
from core.paths import copy_cache
from core.store import DashboardCache, open_reader
from core.types import QUANTILE_BINS, ExcerptKind, LiveSimulation, NeuronId, RelatedNeuronKind, Scores, Split


@pytest.fixture
def reader(tiny_explained_cache):
    with open_reader(tiny_explained_cache) as opened:
        yield opened


def test_home_lists_best_worst_and_deep_neurons(reader):
    home = views.home(reader)
    assert home.info.layers == 2 and home.info.explanations == 4
    assert [r.neuron for r in home.best] == [NeuronId(0, 1), NeuronId(1, 5), NeuronId(0, 2)]
    assert [r.neuron for r in home.worst] == [NeuronId(0, 2), NeuronId(1, 5), NeuronId(0, 1)]
    assert [r.neuron for r in home.surprising] == [NeuronId(1, 5)]  # the last third of 2 layers: layer 1
    assert [s.layer for s in home.layer_scores] == [0, 1]


def test_insights_groups_every_stored_excerpt_once_in_page_order(reader):
    neuron = NeuronId(0, 1)
    view = views.insights(reader, neuron)
    order = [(g.kind, g.quantile_bin) for g in view.groups]
    assert order == [(ExcerptKind.TOP, None), *((ExcerptKind.QUANTILE, b) for b in reversed(range(len(QUANTILE_BINS)))),
                     (ExcerptKind.RANDOM, None), (ExcerptKind.BOTTOM, None)]
    grouped = sorted((e.kind, e.rank, e.quantile_bin) for g in view.groups for e in g.excerpts)
    assert grouped == sorted((e.kind, e.rank, e.quantile_bin) for e in reader.neuron_excerpts(neuron))
    assert view.explanations[0].text == "cats and mats" and view.stats is not None
    assert [kind for kind, _ in view.tokens] == list(views.INSIGHTS_TOKEN_KINDS)
    assert view.tokens[0][1]  # activation_top comes from the recording; the weight-based ones are not computed
    assert all(not tokens for _, tokens in view.tokens[1:])


def test_the_evidence_from_an_insights_view_is_the_evidence_read_on_its_own(reader):
    compared = 0
    for neuron in (NeuronId(layer, index) for layer in range(2) for index in range(48)):
        found = views.evidence(reader, neuron)
        assert views.insights_evidence(views.insights(reader, neuron)) == found
        compared += bool(found)
    assert compared > 40  # most neurons have a table to compare


def test_simulation_of_a_live_score_lines_up_with_the_scoring_excerpts(tiny_explained_cache, tmp_path):
    path = tmp_path / "copy.duckdb"
    copy_cache(tiny_explained_cache, path)
    cache = DashboardCache(path)
    try:
        neuron = NeuronId(0, 1)
        plain = views.simulation(cache.reader, neuron)
        assert plain.excerpts and not plain.simulated
        assert {e.excerpt.split for e in plain.excerpts} == {Split.SCORE}
        kinds = [e.excerpt.kind for e in plain.excerpts]
        assert kinds == sorted(kinds, key=lambda k: k != ExcerptKind.TOP)  # top ones first
        first = plain.excerpts[0].excerpt
        made = [LiveSimulation(first.excerpt.excerpt_id, tuple(10.0 for _ in first.activations), 0.5)]
        live = cache.notes.add_live_score(neuron, "x", "baseline", Scores(0.5, 0.5, None, 16), made)
        shown = views.live_simulation(cache.reader, cache.notes, neuron, live.score_id)
        assert shown.simulated and shown.excerpts[0].predictions == made[0].normalized_predictions
        assert shown.excerpts[0].score == 0.5 and all(e.predictions is None for e in shown.excerpts[1:])
        people = views.people(cache.reader, cache.notes, neuron)
        assert people.suggestions == () and people.ratings == ()
    finally:
        cache.close()


def test_related_view_says_when_nothing_is_computed(reader):
    view = views.related(reader, NeuronId(1, 5), 5)
    assert not view.computed and [kind for kind, _ in view.neurons] == list(RelatedNeuronKind)
    assert view.best is not None and view.best.explanation == "the word return"
    assert views.scoring(reader, NeuronId(1, 5)).explained[0].simulator == "baseline"  # best score first

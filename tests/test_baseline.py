"""core.baseline and core.offline.evidence: the token statistics (evidence beside an explanation), the references
bench/quality.py measures against (the old token table, the token list), and the offline simulator."""

from __future__ import annotations

import pytest

from core import prompts
from core.baseline import (
    TABLE_VARIANTS,
    BaselineSimulator,
    Variant,
    format_level,
    reference_explanation,
    token_tables,
    write_token_table,
)
from core.offline.evidence import fires_most, neuron_statistics
from core.offline.reader import read_explanation
from core.types import Excerpt, ExcerptKind, NeuronExcerpt, NeuronId, Split


def _record(tokens: list[str], activations: list[float], rank: int = 0) -> NeuronExcerpt:
    return NeuronExcerpt(NeuronId(0, 0), Excerpt(rank, tuple(range(len(tokens))), tuple(tokens)), ExcerptKind.TOP,
                         rank, Split.EXPLAIN, tuple(activations))


# --- the simulator -----------------------------------------------------------------------------------------------


def test_baseline_simulator_never_fails_and_predicts_zero_for_nothing_named():
    simulator = BaselineSimulator()
    assert simulator.simulate("the of and", [Excerpt(0, (1, 2), ("a", "b"))]) == [[0.0, 0.0]]
    assert simulator.spec == "baseline" and simulator.prompt_version == "baseline/2"


# --- writing ------------------------------------------------------------------------------------------------------


EXCERPTS = [
    _record(["def", " f", "(", "x", "):", "\n", "    ", "return", " x"], [0, 2, 0, 1, -1, 0, 0, 10, 4], 0),
    _record(["if", " y", ":", " return", " y", ",", " z"], [0, 0, -1, 6, 2, -2, 0], 2),
    _record(["return", "(", "x", ")", ",", " a"], [8, 0, 3, 0, -2, 0], 4),
]


def test_statistics_are_mean_levels_against_the_neuron_max():
    stats = neuron_statistics(EXCERPTS)
    by_token = {s.token: s for s in stats.unigrams}
    assert by_token["return"].mean_level == pytest.approx(9.0) and by_token["return"].count == 2
    assert by_token["return"].high == 2
    assert by_token[","].mean_level == pytest.approx(-2.0)
    assert stats.unigrams[0].token == "return"  # weight: count x |level|
    assert stats.contexts[("x", "(")] == (2, pytest.approx(2.0))


def test_the_old_token_table_reads_back_with_its_levels():
    stats = neuron_statistics(EXCERPTS)
    text = write_token_table(stats, Variant("t", 10, contexts=3))
    assert text.startswith('fires on "return" (9), " return" (6), " x" (4)')
    assert 'below zero on "," (-2)' in text
    stated = {}
    for clause in read_explanation(text).clauses:
        stated.update({t: v for t, v in clause.target.exact.items() if v is not None})
    for stat in stats.unigrams[:10]:
        if stat.mean_level >= 0.05:
            assert stated[stat.token] == pytest.approx(float(format_level(stat.mean_level)))
    assert not any(c.target.stems or c.target.families for c in read_explanation(text).clauses)


def test_token_tables_respect_the_length_cap_and_variants_differ():
    stats = neuron_statistics(EXCERPTS * 20)
    assert len(write_token_table(stats, Variant("short", 60, contexts=8), max_chars=60)) <= 60
    texts = token_tables(EXCERPTS)
    assert len(texts) == len(set(texts)) and 1 < len(texts) <= len(TABLE_VARIANTS)
    assert write_token_table(stats, Variant("plain", 5, plain=True)).startswith('fires on "return" (10)')


def test_reference_lists_the_most_frequent_high_tokens():
    assert reference_explanation(EXCERPTS) == 'the tokens "return", " return"'
    [clause] = read_explanation(reference_explanation(EXCERPTS)).clauses
    assert clause.target.exact == {"return": None, " return": None}
    quiet = [_record(["a", "b"], [0, 0])]
    assert reference_explanation(quiet) is None
    assert format_level(-0.04) == "0" and format_level(7.25) == "7.2" and format_level(12) == "10"
    assert prompts.BASELINE_VERSION == "baseline/2"


def test_evidence_lists_the_tokens_it_fires_on_most_with_levels_and_counts():
    evidence = fires_most(EXCERPTS, limit=3)
    assert [(e.token, e.count, e.high) for e in evidence] == [("return", 2, 2), (" return", 1, 1), (" x", 1, 0)]
    assert evidence[0].mean_level == pytest.approx(9.0)
    assert all(e.mean_level > 0 for e in fires_most(EXCERPTS, limit=50))

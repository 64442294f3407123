"""core.score: Pearson with explicit undefined, pooled top/random/all scores, live scoring of a real cache."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.baseline import BaselineSimulator
from core.score import (
    MAX_EXPLANATION_CHARS,
    ScoreError,
    Truth,
    check_explanation,
    format_score,
    is_readable,
    pearson,
    readability_problem,
    score_explanation,
    score_simulations,
)
from core.store import StoreError, open_reader
from core.types import ExcerptKind, ExcerptSimulation, NeuronId, Split


@pytest.mark.parametrize(
    ("truth", "predicted", "expected"),
    [
        ([0, 1, 2, 3], [0, 2, 4, 6], 1.0),
        ([0, 1, 2, 3], [6, 4, 2, 0], -1.0),
        ([1, 1, 1, 1], [0, 1, 2, 3], None),  # constant truth
        ([0, 1, 2, 3], [5, 5, 5, 5], None),  # constant prediction
        ([0, 1, 2, 3], [0, 0, 0, 0], None),  # nothing predicted
        ([1.0], [2.0], None),  # too few values
        ([0, 1, float("nan")], [0, 1, 2], None),
    ],
)
def test_pearson_is_none_when_undefined_never_nan(truth, predicted, expected):
    result = pearson(truth, predicted)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]))


def test_truth_centred_once_gives_pearson_exactly():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    truth = Truth(x)
    predictions = [rng.normal(size=300), np.zeros(300), np.full(300, 2.0), (rng.random(300) > 0.9) * 1.0, x * 3]
    assert [truth.pearson(y) for y in predictions] == [pearson(x, y) for y in predictions]
    assert Truth([1, 1, 1]).pearson([0, 1, 2]) is None and Truth([0, 1, float("nan")]).pearson([0, 1, 2]) is None
    with pytest.raises(ValueError, match="300 values"):
        truth.pearson([1.0, 2.0])


def _sim(kind: ExcerptKind, real: list[float], predicted: list[float]) -> ExcerptSimulation:
    return ExcerptSimulation(0, kind, Split.SCORE, tuple("t" * len(real)), tuple(real), tuple(predicted),
                             pearson(real, predicted))


def test_scores_pool_tokens_over_excerpts_and_split_by_kind():
    top = _sim(ExcerptKind.TOP, [0, 5, 0, 9], [0, 10, 0, 10])
    random = _sim(ExcerptKind.RANDOM, [0, 0, 0, 0], [0, 0, 0, 0])  # constant on its own
    scores = score_simulations([top, random])
    pooled = np.corrcoef([0, 5, 0, 9, 0, 0, 0, 0], [0, 10, 0, 10, 0, 0, 0, 0])[0, 1]
    assert scores.all == pytest.approx(pooled)
    assert scores.top == pytest.approx(np.corrcoef([0, 5, 0, 9], [0, 10, 0, 10])[0, 1])
    assert scores.random is None
    assert scores.tokens == 8
    assert format_score(scores.random) == "undefined"
    assert not any(isinstance(v, float) and math.isnan(v) for v in (scores.all, scores.top))


def test_check_explanation_rejects_empty_and_overlong_text():
    assert check_explanation("  the word 'return' \n") == "the word 'return'"
    with pytest.raises(ScoreError, match="empty"):
        check_explanation("   ")
    with pytest.raises(ScoreError, match="characters long; the limit is"):
        check_explanation("x" * (MAX_EXPLANATION_CHARS + 1))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("the word 'ME'", None),
        ("numbers in a list", None),
        ('" more" and " less"', None),
        ('the number "10" and the year 1999', None),  # numbers that are tokens or words, not activations
        ('"a", "b", "c", "d" and "e"', None),
        ("x" * 100, None),
        ("x" * 101, "101 characters long; the limit is 100"),
        ('"a", "b", "c", "d", "e" and "f"', "quotes 6 tokens; the limit is 5"),
        ("'a', “b”, `c`, \"d\", 'e', 'f'", "quotes 6 tokens"),
        ('fires on " more" (9.4), " less" (4.2)', "activation numbers ('(9.4)')"),
        ("commas, activation 7", "activation numbers ('activation 7')"),
        ("the word 'if' at level: 3", "activation numbers"),
        ("closing brackets, 8/10", "activation numbers ('8/10')"),
        ("", "empty"),
    ],
)
def test_the_readability_rule(text, problem):
    found = readability_problem(text)
    if problem is None:
        assert found is None and is_readable(text)
    else:
        assert found is not None and problem in found and not is_readable(text)
        with pytest.raises(ScoreError, match="the explanation"):
            check_explanation(text)
    assert check_explanation("it's the word's end") == "it's the word's end"  # apostrophes are not quotes


def test_score_explanation_reads_the_score_split_and_writes_nothing(small_cache):
    neuron = NeuronId(0, 5)
    with open_reader(small_cache) as store:
        top = store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
        word = max(((a, t) for e in top for a, t in zip(e.activations, e.excerpt.tokens, strict=True)))[1]
        before = store.info().explanations
        scored = score_explanation(store, neuron, f"the token {word!r}", BaselineSimulator())
        assert store.info().explanations == before
    assert scored.split == Split.SCORE
    assert {e.split for e in scored.excerpts} == {Split.SCORE}
    assert {e.kind for e in scored.excerpts} == {ExcerptKind.TOP, ExcerptKind.RANDOM}
    assert [e.kind for e in scored.excerpts] == sorted((e.kind for e in scored.excerpts),
                                                       key=lambda k: k != ExcerptKind.TOP)
    for excerpt in scored.excerpts:
        assert len(excerpt.normalized_predictions) == len(excerpt.tokens) == len(excerpt.activations)
    assert scored.scores.tokens == sum(len(e.tokens) for e in scored.excerpts)
    assert scored.calibration is None
    with open_reader(small_cache) as store:
        calibrated = score_explanation(store, neuron, f"the token {word!r}", BaselineSimulator(), calibrate=True)
        calibrate = store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP, ExcerptKind.RANDOM],
                                          splits=[Split.CALIBRATE])
    assert calibrated.scores == scored.scores and calibrated.calibration is not None
    assert calibrated.calibration.tokens == sum(len(e.activations) for e in calibrate)


def test_score_explanation_rejects_bad_neurons_and_texts(small_cache):
    with open_reader(small_cache) as store:
        with pytest.raises(StoreError, match="out of range"):
            score_explanation(store, NeuronId(99, 0), "anything", BaselineSimulator())
        with pytest.raises(ScoreError, match="empty"):
            score_explanation(store, NeuronId(0, 0), "", BaselineSimulator())
        with pytest.raises(ScoreError, match="limit"):
            score_explanation(store, NeuronId(0, 0), "words " * 2000, BaselineSimulator())

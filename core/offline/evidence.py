"""A neuron's token statistics, shown as evidence BESIDE its explanation ("tokens it fires on most", with levels
and counts), never as the explanation and never scored. The offline writer and the token-space explainer read the
same statistics.

Everything here reads the EXPLAIN-split excerpts the caller passes (the ones the explainer saw).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core import prompts
from core.types import ExcerptKind, NeuronExcerpt, NeuronId, Split

if TYPE_CHECKING:
    from core.store import CacheReader


@dataclass(frozen=True)
class TokenStat:
    """How one token text behaves in the explain excerpts."""

    token: str
    count: int
    """Occurrences."""
    mean_level: float
    """Mean activation over its occurrences, as a level: activation / neuron max x 10 (negative below zero)."""
    high: int
    """Occurrences at or above half the neuron's maximum."""


@dataclass(frozen=True)
class NeuronStatistics:
    """Token statistics of a neuron's explain excerpts, from which every variant is written."""

    unigrams: tuple[TokenStat, ...]
    """Per token text, by weight (count x |mean level|), largest first."""
    contexts: dict[tuple[str, str], tuple[int, float]]
    """(token, previous) -> (count, mean level)."""
    after: dict[str, tuple[int, float]]
    """Previous token -> (count, mean level of the token after it)."""


def normalize(activations: Sequence[float], scale: float) -> np.ndarray:
    """Activations on the 0-10 scale against `scale` (the neuron's max); negatives clip to 0."""
    return np.clip(signed_levels(activations, scale), 0.0, prompts.SCALE_MAX)


def signed_levels(activations: Sequence[float], scale: float) -> np.ndarray:
    """Activations as levels against `scale` (the neuron's max = 10), negatives kept down to -10."""
    values = np.asarray(activations, dtype=np.float64)
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale * prompts.SCALE_MAX, -prompts.SCALE_MAX, prompts.SCALE_MAX)


def neuron_statistics(excerpts: Sequence[NeuronExcerpt]) -> NeuronStatistics:
    """Token, context and after statistics over `excerpts` (the EXPLAIN split)."""
    scale = max((max(e.activations) for e in excerpts), default=0.0)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    highs: dict[str, int] = defaultdict(int)
    pair_sums: dict[tuple[str, str], float] = defaultdict(float)
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    after_sums: dict[str, float] = defaultdict(float)
    after_counts: dict[str, int] = defaultdict(int)
    for excerpt in excerpts:
        levels = signed_levels(excerpt.activations, scale)
        tokens = excerpt.excerpt.tokens
        for index, (token, level) in enumerate(zip(tokens, levels, strict=True)):
            sums[token] += level
            counts[token] += 1
            highs[token] += int(level >= prompts.SCALE_MAX / 2)
            if index:
                previous = tokens[index - 1]
                pair_sums[(token, previous)] += level
                pair_counts[(token, previous)] += 1
                after_sums[previous] += level
                after_counts[previous] += 1
    unigrams = sorted(
        (TokenStat(t, counts[t], sums[t] / counts[t], highs[t]) for t in counts),
        key=lambda s: (-s.count * abs(s.mean_level), s.token),
    )
    contexts = {k: (pair_counts[k], pair_sums[k] / pair_counts[k]) for k in pair_counts}
    after = {k: (after_counts[k], after_sums[k] / after_counts[k]) for k in after_counts}
    return NeuronStatistics(tuple(unigrams), contexts, after)



EVIDENCE_TOKENS = 10
"""Rows of the evidence table by default."""


def fires_most(excerpts: Sequence[NeuronExcerpt], limit: int = EVIDENCE_TOKENS) -> list[TokenStat]:
    """The tokens it fires on most in these excerpts: by count x mean level (above zero only), largest first; each
    with its count, mean level (0-10 against the neuron's max) and how often it reached half the max."""
    stats = neuron_statistics(excerpts)
    return [s for s in stats.unigrams if s.mean_level > 0][:limit]


def token_evidence(store: CacheReader, neuron: NeuronId, limit: int = EVIDENCE_TOKENS) -> list[TokenStat]:
    """The evidence table of a neuron in a cache: `fires_most` over its EXPLAIN-split top excerpts (the ones its
    explanations were written from)."""
    excerpts = store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
    return fires_most(excerpts, limit)

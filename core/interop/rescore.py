"""`python -m core score --imported`: imported explanations re-scored with our simulators.

For each imported explanation of a neuron: its published score, the same score recomputed from the published
per-excerpt predictions and true activations stored with it (OpenAI's pooling: one Pearson r over every token of
every excerpt), and the score our simulator gives it on the neuron's score-split excerpts, which is stored beside
the published one (same explanation, another simulator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.interop import cache_io
from core.score import format_score, pearson, scoring_excerpts, simulate_and_score
from core.simulate import Simulator
from core.store import CacheReader, ResultsWriter
from core.types import NeuronId, Scores, Split


@dataclass(frozen=True)
class Rescored:
    """One imported explanation, scored three ways."""

    neuron: NeuronId
    explanation_id: int
    text: str
    published: float | None
    """The score stored with it (OpenAI's pooled ev_correlation_score)."""
    recomputed: float | None
    """Pearson r over the stored published predictions and the cache's activations of the same excerpts."""
    excerpts: int
    """Excerpts those stored predictions cover."""
    ours: Scores
    """Our simulator's scores on the neuron's score-split excerpts."""


def recompute_published(store: CacheReader, explanation_id: int) -> tuple[float | None, int]:
    """The pooled score of an explanation's stored simulations (by the simulator it was stored with)."""
    sims = cache_io.simulations(store, explanation_id)
    if not sims:
        return None, 0
    truth = np.concatenate([np.asarray(s.activations, dtype=np.float64) for s in sims])
    predicted = np.concatenate([np.asarray(s.normalized_predictions, dtype=np.float64) for s in sims])
    return pearson(truth, predicted), len(sims)


def rescore_neuron(store: ResultsWriter, neuron: NeuronId, simulator: Simulator) -> list[Rescored]:
    """Re-score every imported explanation of `neuron` with `simulator` and store the new scores."""
    found = []
    for record in cache_io.imported_explanations(store, neuron):
        assert record.text is not None  # imported_explanations keeps only those with text
        recomputed, excerpts = recompute_published(store, record.explanation_id)
        # scored as published, also a text that breaks the readability rule (score_explanation would refuse it;
        # the import's report lists those)
        scored = simulate_and_score(neuron, record.text, simulator, scoring_excerpts(store, neuron), Split.SCORE)
        cache_io.write_score(store, record.explanation_id, simulator.spec, scored.scores, scored.excerpts)
        found.append(Rescored(neuron, record.explanation_id, record.text, record.score_all, recomputed, excerpts,
                              scored.scores))
    return found


def rescore_lines(results: Sequence[Sequence[Rescored]], simulator: str) -> list[str]:
    """The table `score --imported` prints."""
    lines = [f"{'neuron':>8} {'id':>5} {'published':>9} {'recomputed':>10} {simulator[:12]:>12} {'top':>6} "
             f"{'random':>6}  explanation"]
    for per_neuron in results:
        for r in per_neuron:
            lines.append(f"{r.neuron!s:>8} {r.explanation_id:>5} {format_score(r.published):>9} "
                         f"{format_score(r.recomputed):>10} {format_score(r.ours.all):>12} "
                         f"{format_score(r.ours.top):>6} {format_score(r.ours.random):>6}  {r.text}")
    if not any(results):
        lines.append("no imported explanations for these neurons (import them with `python -m core import-openai`)")
    lines.append("published: the score stored with the file; recomputed: the same from the published predictions "
                 f"and the cache's activations of the excerpts it was scored on; {simulator}: our simulator on the "
                 "neuron's score-split excerpts (stored beside the published score)")
    return lines

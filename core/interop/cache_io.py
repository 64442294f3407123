"""Every read and write of a cache that core/interop makes, in one place (through core.store.Store).

Kept small on purpose: when the cache is split into the recording and a results file, only this module needs
re-pointing. Imported explanations go where `add_explanation` puts explanations; related neurons where
`insert_related_layer` puts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.store import Store, replace_file, temp_path
from core.types import (
    ExcerptSimulation,
    ExplanationRecord,
    ExplanationStatus,
    NeuronExcerpt,
    NeuronId,
    NeuronStats,
    RelatedToken,
    RelatedTokenKind,
    Scores,
)

IMPORTED_EXPLAINER = "imported:openai:gpt-4"
"""Explainer spec stored with OpenAI's published explanations (GPT-4 wrote them; the prefix marks them imported)."""
IMPORTED_SIMULATOR = "imported:openai:gpt-4"
"""Simulator spec stored with their published scores (OpenAI's simulator; the paper's main runs used GPT-4)."""
IMPORTED_PROMPT_VERSION = "openai-2023"


# --- writing a new cache (import) ---------------------------------------------------------------------------------


def create_temp_cache(cache: Path) -> Store:
    """An empty cache at CACHE.tmp, replacing any left there; `finish_temp_cache` moves it into place."""
    tmp = temp_path(cache)
    Path(str(tmp) + ".wal").unlink(missing_ok=True)
    return Store.create(tmp)


def finish_temp_cache(store: Store, cache: Path) -> None:
    """Write CACHE.tmp to disk and rename it over CACHE (readers of an old CACHE keep their copy)."""
    store.checkpoint()
    store.close()
    replace_file(temp_path(cache), cache)


def write_excerpts(store: Store, excerpt_ids: np.ndarray, token_ids: Sequence[Sequence[int]],
                   tokens: Sequence[Sequence[str]], sources: Sequence[str]) -> None:
    store.insert_excerpt_rows(pa.table({
        "excerpt_id": pa.array(np.asarray(excerpt_ids, dtype=np.int32)),
        "token_ids": pa.array([list(row) for row in token_ids], type=pa.list_(pa.int32())),
        "tokens": pa.array([list(row) for row in tokens], type=pa.list_(pa.string())),
        "source": pa.array(list(sources), type=pa.string()),
    }))


def write_neuron_rows(store: Store, stats: pa.Table, excerpts: pa.Table) -> None:
    """neuron_stats and neuron_excerpts rows (columns in schema order, rows sorted by neuron)."""
    store.insert_neuron_stats(stats)
    store.insert_neuron_excerpts(excerpts)


def write_vocab(store: Store, tokens: Sequence[str], counts: np.ndarray) -> None:
    """The imported vocabulary: token id i is tokens[i]."""
    store.insert_vocab(np.arange(len(tokens), dtype=np.int32), tokens, counts)


@dataclass(frozen=True)
class ImportedExplanation:
    """One of OpenAI's explanations with its published scores and the simulated excerpts found in the cache."""

    neuron: NeuronId
    text: str
    scores: Scores
    simulations: Sequence[ExcerptSimulation]


def write_imported_explanations(store: Store, items: Sequence[ImportedExplanation]) -> None:
    """Store many imported explanations in one transaction (explainer IMPORTED_EXPLAINER, scorer named)."""
    if not items:
        return
    store.insert_explanation_rows(
        pa.table({
            "explanation_id": pa.array(range(len(items)), pa.int64()),
            "layer": pa.array([e.neuron.layer for e in items], pa.int16()),
            "neuron": pa.array([e.neuron.neuron for e in items], pa.int32()),
            "text": pa.array([e.text for e in items], pa.string()),
            "explainer": pa.array([IMPORTED_EXPLAINER] * len(items), pa.string()),
            "model": pa.array(["gpt-4"] * len(items), pa.string()),
            "prompt_version": pa.array([IMPORTED_PROMPT_VERSION] * len(items), pa.string()),
            "simulator": pa.array([IMPORTED_SIMULATOR] * len(items), pa.string()),
            "status": pa.array([str(ExplanationStatus.OK)] * len(items), pa.string()),
            "failure": pa.array([None] * len(items), pa.string()),
            "candidates": pa.array([1] * len(items), pa.int16()),
            "calibration_score": pa.array([None] * len(items), pa.float64()),
        }),
        pa.table({
            "explanation_id": pa.array(range(len(items)), pa.int64()),
            "simulator": pa.array([IMPORTED_SIMULATOR] * len(items), pa.string()),
            "score_all": pa.array([_finite(e.scores.all) for e in items], pa.float64()),
            "score_top": pa.array([_finite(e.scores.top) for e in items], pa.float64()),
            "score_random": pa.array([_finite(e.scores.random) for e in items], pa.float64()),
            "tokens": pa.array([e.scores.tokens for e in items], pa.int32()),
        }),
        pa.table({
            "explanation_id": pa.array([i for i, e in enumerate(items) for _ in e.simulations], pa.int64()),
            "simulator": pa.array([IMPORTED_SIMULATOR] * sum(len(e.simulations) for e in items), pa.string()),
            "excerpt_id": pa.array([s.excerpt_id for e in items for s in e.simulations], pa.int32()),
            "kind": pa.array([str(s.kind) for e in items for s in e.simulations], pa.string()),
            "split": pa.array([str(s.split) for e in items for s in e.simulations], pa.string()),
            "normalized_predictions": pa.array([list(s.normalized_predictions) for e in items for s in e.simulations],
                                               pa.list_(pa.float32())),
            "score": pa.array([_finite(s.score) for e in items for s in e.simulations], pa.float64()),
        }),
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def shared_excerpt_activations(store: Store) -> pa.Table:
    return store.shared_excerpt_activations()


def write_correlated_neurons(store: Store, layer: int, rows: pa.Table) -> None:
    """One layer's correlated-neuron rows (layer, neuron, kind, rank, other_layer, other_neuron, strength)."""
    empty_tokens = pa.table({
        "layer": pa.array([], pa.int16()), "neuron": pa.array([], pa.int32()), "kind": pa.array([], pa.string()),
        "rank": pa.array([], pa.int16()), "token_id": pa.array([], pa.int32()), "value": pa.array([], pa.float32()),
    })
    store.insert_related_layer(layer, empty_tokens, rows)


def set_meta(store: Store, values: dict[str, Any]) -> None:
    store.set_meta(values)


# --- reading a cache (export, rescore) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NeuronData:
    """Everything an exporter writes about one neuron."""

    neuron: NeuronId
    stats: NeuronStats | None
    excerpts: list[NeuronExcerpt]
    """Every stored excerpt of the neuron, by kind, quantile bin and rank."""
    explanations: list[tuple[ExplanationRecord, list[ExcerptSimulation]]]
    """Finished explanations, best first, each with the simulations its own simulator made."""


def open_cache(cache: Path, *, writable: bool = False) -> Store:
    return Store.open(cache, writable=writable)


def cache_meta(store: Store) -> dict[str, Any]:
    return store.meta()


def neurons_in_cache(store: Store, layers: Sequence[int] | None = None) -> list[NeuronId]:
    return store.neuron_ids(layers)


def check_neuron(store: Store, neuron: NeuronId) -> None:
    store.check_neuron(neuron)


def neuron_data(store: Store, neurons: Sequence[NeuronId]) -> list[NeuronData]:
    """Everything about these neurons (read a block at a time: excerpts and statistics in two queries, then the
    explanations of the neurons that have any)."""
    rows = store.neurons_excerpts_and_stats(neurons)
    layers = sorted({n.layer for n in neurons})
    explained = {b.neuron for b in store.best_scores(layers)}
    found = []
    for neuron in neurons:
        explanations = []
        if neuron in explained:
            for record in store.explanations(neuron):
                if record.status == ExplanationStatus.OK and record.text:
                    explanations.append((record, store.simulations(record.explanation_id)))
        stats, excerpts = rows[neuron]
        found.append(NeuronData(neuron, stats, excerpts, explanations))
    return found


def output_tokens(store: Store, neuron: NeuronId, limit: int = 10) -> tuple[list[RelatedToken], list[RelatedToken]]:
    """Tokens whose logits the neuron raises most and lowers most ([] when `related` has not run)."""
    return (store.related_tokens(neuron, RelatedTokenKind.OUTPUT_UP, limit),
            store.related_tokens(neuron, RelatedTokenKind.OUTPUT_DOWN, limit))


def excerpt_token_ids(store: Store, excerpt_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    return {i: e.token_ids for i, e in store.excerpts(excerpt_ids).items()}


def imported_explanations(store: Store, neuron: NeuronId) -> list[ExplanationRecord]:
    return [r for r in store.explanations(neuron) if r.explainer == IMPORTED_EXPLAINER and r.text]


def simulations(store: Store, explanation_id: int, simulator: str | None = None) -> list[ExcerptSimulation]:
    return store.simulations(explanation_id, simulator)


def write_score(store: Store, explanation_id: int, simulator: str, scores: Scores,
                simulations: Sequence[ExcerptSimulation]) -> None:
    store.add_score(explanation_id, simulator, scores, simulations)


"""Every read and write of a cache that core/interop makes, in one place (through core.store).

An import writes a cache as `build` does, in two files published together: the recording through a
RecordingWriter at CACHE.tmp, then the explanations and correlated neurons through open_results_writer on that
temporary recording (its results file sits beside it), and only then both are renamed into place, results first.
Exports and `score --imported` open the cache as any command does (open_reader, open_results_writer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.paths import results_path, temp_path
from core.store import CacheReader, RecordingWriter, ResultsWriter, open_reader, open_results_writer
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


def _wal(path: Path) -> Path:
    return Path(str(path) + ".wal")


def create_temp_recording(cache: Path) -> RecordingWriter:
    """An empty recording at CACHE.tmp (anything an earlier import left there is replaced); published activations
    are kept exactly (float32), not packed: they are the evidence of the published scores and go back out in
    exports."""
    tmp = temp_path(cache)
    for leftover in (_wal(tmp), results_path(tmp), _wal(results_path(tmp))):
        leftover.unlink(missing_ok=True)
    return RecordingWriter.create(tmp, exact_activations=True)


def finish_temp_recording(writer: RecordingWriter) -> None:
    """Write the temporary recording to disk and close it (it is renamed into place by `publish`)."""
    writer.checkpoint()
    writer.close()


def open_temp_results(cache: Path) -> ResultsWriter:
    """The results writer of the finished temporary recording at CACHE.tmp."""
    return open_results_writer(temp_path(cache))


def finish_temp_results(writer: ResultsWriter) -> None:
    writer.checkpoint()
    writer.close()


def publish(cache: Path) -> None:
    """Rename the temporary results and recording over CACHE's (readers of the old files keep their copies). The
    results go first: until the recording follows, an old CACHE reads them as results of another build (empty)."""
    tmp = temp_path(cache)
    if results_path(tmp).exists():
        os.replace(results_path(tmp), results_path(cache))
    os.replace(tmp, cache)


def write_excerpts(writer: RecordingWriter, excerpt_ids: np.ndarray, token_ids: Sequence[Sequence[int]],
                   tokens: Sequence[Sequence[str]], sources: Sequence[str]) -> None:
    writer.insert_excerpt_rows(pa.table({
        "excerpt_id": pa.array(np.asarray(excerpt_ids, dtype=np.int32)),
        "token_ids": pa.array([list(row) for row in token_ids], type=pa.list_(pa.int32())),
        "tokens": pa.array([list(row) for row in tokens], type=pa.list_(pa.string())),
        "source": pa.array(list(sources), type=pa.string()),
    }))


def write_neuron_rows(writer: RecordingWriter, stats: pa.Table, excerpts: pa.Table) -> None:
    """neuron_stats and neuron_excerpts rows (columns in schema order, rows sorted by neuron)."""
    writer.insert_neuron_stats(stats)
    writer.insert_neuron_excerpts(excerpts)


def write_vocab(writer: RecordingWriter, tokens: Sequence[str], counts: np.ndarray) -> None:
    """The imported vocabulary: token id i is tokens[i]."""
    writer.insert_vocab(np.arange(len(tokens), dtype=np.int32), tokens, counts)


def shared_excerpt_activations(writer: RecordingWriter) -> pa.Table:
    return writer.shared_excerpt_activations()


def set_meta(writer: RecordingWriter, values: dict[str, Any]) -> None:
    writer.set_meta(values)


@dataclass(frozen=True)
class ImportedExplanation:
    """One of OpenAI's explanations with its published scores and the simulated excerpts found in the cache."""

    neuron: NeuronId
    text: str
    scores: Scores
    simulations: Sequence[ExcerptSimulation]


def imported_explanation_tables(items: Sequence[ImportedExplanation]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The explanations, scores and simulations rows of imported explanations (explainer IMPORTED_EXPLAINER,
    simulator IMPORTED_SIMULATOR), ids counted from 0, as `write_imported_explanations` stores them."""
    return (
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


def write_imported_explanations(writer: ResultsWriter, tables: tuple[pa.Table, pa.Table, pa.Table]) -> None:
    """Store the tables of `imported_explanation_tables` in one transaction."""
    if tables[0].num_rows:
        writer.insert_explanation_rows(*tables)


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def start_correlated_neurons(writer: ResultsWriter, settings: dict[str, Any]) -> None:
    """Begin the related tables of an import (no model vocabulary: related tokens need the model's weights)."""
    writer.start_related(settings, np.zeros(0, dtype=np.int32), [])


def write_correlated_neurons(writer: ResultsWriter, layer: int, rows: pa.Table) -> None:
    """One layer's correlated-neuron rows (layer, neuron, kind, rank, other_layer, other_neuron, strength)."""
    empty_tokens = pa.table({
        "layer": pa.array([], pa.int16()), "neuron": pa.array([], pa.int32()), "kind": pa.array([], pa.string()),
        "rank": pa.array([], pa.int16()), "token_id": pa.array([], pa.int32()), "value": pa.array([], pa.float32()),
    })
    writer.insert_related_layer(layer, empty_tokens, rows)


def finish_correlated_neurons(writer: ResultsWriter, settings: dict[str, Any]) -> None:
    writer.finish_related(settings)


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


def open_cache(cache: Path) -> CacheReader:
    """The cache for reading (exports)."""
    return open_reader(cache)


def open_for_scores(cache: Path) -> ResultsWriter:
    """The cache for storing new scores (`score --imported`)."""
    return open_results_writer(cache)


def cache_meta(store: CacheReader) -> dict[str, Any]:
    return store.meta()


def neurons_in_cache(store: CacheReader, layers: Sequence[int] | None = None) -> list[NeuronId]:
    return store.neuron_ids(layers)


def check_neuron(store: CacheReader, neuron: NeuronId) -> None:
    store.check_neuron(neuron)


def neuron_data(store: CacheReader, neurons: Sequence[NeuronId]) -> list[NeuronData]:
    """Everything about these neurons (read a block at a time: excerpts and statistics in two queries, then the
    explanations of the neurons that have any)."""
    rows = store.neurons_excerpts_and_stats(neurons)
    explained = {n for n, row in store.neuron_rows(neurons).items() if row.explanation is not None}
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


def output_tokens(
    store: CacheReader, neuron: NeuronId, limit: int = 10
) -> tuple[list[RelatedToken], list[RelatedToken]]:
    """Tokens whose logits the neuron raises most and lowers most ([] when `related` has not run)."""
    return (store.related_tokens(neuron, RelatedTokenKind.OUTPUT_UP, limit),
            store.related_tokens(neuron, RelatedTokenKind.OUTPUT_DOWN, limit))


def excerpt_token_ids(store: CacheReader, excerpt_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    return {i: e.token_ids for i, e in store.excerpts(excerpt_ids).items()}


def imported_explanations(store: CacheReader, neuron: NeuronId) -> list[ExplanationRecord]:
    return [r for r in store.explanations(neuron) if r.explainer == IMPORTED_EXPLAINER and r.text]


def simulations(store: CacheReader, explanation_id: int, simulator: str | None = None) -> list[ExcerptSimulation]:
    return store.simulations(explanation_id, simulator)


def write_score(store: ResultsWriter, explanation_id: int, simulator: str, scores: Scores,
                simulations: Sequence[ExcerptSimulation]) -> None:
    store.add_score(explanation_id, simulator, scores, simulations)


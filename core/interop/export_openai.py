"""`python -m core export CACHE --format openai DIR`: a cache as OpenAI's neuron files, loadable by their code.

Writes DIR/collated-activations/LAYER/NEURON.json (a NeuronRecord) and DIR/explanations/LAYER/NEURON.jsonl (one
NeuronSimulationResults line, for neurons with a finished explanation), every object with its dataclass_name, and
DIR/neuron-atlas.json saying where the files came from and which split rule their record order follows, so that
`import-openai DIR` gives back the same splits. Bottom excerpts and token means have no place in the format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.interop import InteropError, cache_io
from core.interop.openai_format import (
    NORMALIZED_SCALE,
    QUANTILE_LISTS,
    SIDECAR,
    SPLIT_RULE_OPENAI,
    SPLIT_RULE_OURS,
    ActivationRecord,
    NeuronExplanations,
    NeuronRecord,
    ScoredExplanation,
    ScoredSequence,
    dumps,
    neuron_record_json,
    simulation_results_json,
)
from core.types import ExcerptKind, NeuronExcerpt, NeuronId

READ_BLOCK = 256
"""Neurons read from the cache at once."""


@dataclass
class ExportSummary:
    """What an export wrote (printed by the command line)."""

    folder: Path
    format: str
    neurons: int = 0
    explanations: int = 0
    files: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"exported {self.neurons:,} neurons and {self.explanations:,} explanations as {self.format} "
                 f"({self.files:,} files) into {self.folder}"]
        return "\n".join(lines + [f"  {note}" for note in self.notes])


def selected_neurons(store: Any, layers: Sequence[int] | None, neurons: Sequence[NeuronId] | None) -> list[NeuronId]:
    """The neurons to export: those named (each checked), else every recorded neuron of `layers` (or all)."""
    if neurons:
        for neuron in neurons:
            cache_io.check_neuron(store, neuron)
        return list(neurons)
    found = cache_io.neurons_in_cache(store, layers)
    if not found:
        raise InteropError(f"no recorded neurons{' in those layers' if layers else ''} in {store.path}")
    return found


def neuron_blocks(store: Any, neurons: Sequence[NeuronId], size: int = READ_BLOCK) -> Iterator[cache_io.NeuronData]:
    """Every chosen neuron's data, read `size` neurons at a time."""
    for start in range(0, len(neurons), size):
        yield from cache_io.neuron_data(store, neurons[start:start + size])


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _records(excerpts: Sequence[NeuronExcerpt], kind: ExcerptKind, qbin: int | None = None) -> tuple[ActivationRecord,
                                                                                                      ...]:
    chosen = sorted((e for e in excerpts if e.kind == kind and e.quantile_bin == qbin), key=lambda e: e.rank)
    return tuple(ActivationRecord(e.excerpt.tokens, np.asarray(e.activations, dtype=np.float32)) for e in chosen)


def neuron_record(data: cache_io.NeuronData) -> NeuronRecord:
    """OpenAI's NeuronRecord of one cached neuron (bottom excerpts are left out: the format has no place)."""
    stats = data.stats
    bins = [e.quantile_bin for e in data.excerpts if e.kind == ExcerptKind.QUANTILE and e.quantile_bin is not None]
    edges = stats.quantile_edges if stats else ()
    samples = None
    boundaries = None
    if bins or len(edges) >= 3:
        count = max(QUANTILE_LISTS, max(bins, default=-1) + 1, len(edges) - 1)
        samples = tuple(_records(data.excerpts, ExcerptKind.QUANTILE, b) for b in range(count))
        boundaries = tuple(float(v) for v in edges[1:count]) if len(edges) == count + 1 else None
    return NeuronRecord(
        layer=data.neuron.layer, neuron=data.neuron.neuron,
        top=_records(data.excerpts, ExcerptKind.TOP), random=_records(data.excerpts, ExcerptKind.RANDOM),
        quantile_samples=samples, quantile_boundaries=boundaries,
        mean=stats.mean if stats else None, variance=stats.variance if stats else None,
        skewness=stats.skewness if stats else None, kurtosis=stats.kurtosis if stats else None,
    )


def neuron_explanations(data: cache_io.NeuronData) -> NeuronExplanations:
    """OpenAI's NeuronSimulationResults of one cached neuron: each finished explanation with its simulations."""
    explanations = []
    for record, sims in data.explanations:
        sequences = tuple(
            ScoredSequence(tokens=s.tokens, expected_activations=np.asarray(s.normalized_predictions, np.float64),
                           activation_scale=NORMALIZED_SCALE, true_activations=np.asarray(s.activations, np.float64),
                           ev_correlation_score=s.score,
                           distribution_values=tuple(() for _ in s.tokens),
                           distribution_probabilities=tuple(() for _ in s.tokens))
            for s in sims
        )
        explanations.append(ScoredExplanation(record.text or "", sequences, record.score_all))
    return NeuronExplanations(data.neuron.layer, data.neuron.neuron, tuple(explanations))


def export_openai(
    cache: Path,
    folder: Path,
    *,
    layers: Sequence[int] | None = None,
    neurons: Sequence[NeuronId] | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> ExportSummary:
    """Write the chosen neurons of `cache` into `folder` in OpenAI's layout (see the module docstring)."""
    folder = Path(folder)
    summary = ExportSummary(folder, "openai")
    bottom = 0
    with cache_io.open_cache(cache) as store:
        meta = cache_io.cache_meta(store)
        chosen = selected_neurons(store, layers, neurons)
        tick = progress("export", len(chosen)) if progress else None
        for data in neuron_blocks(store, chosen):
            neuron = data.neuron
            bottom += sum(1 for e in data.excerpts if e.kind == ExcerptKind.BOTTOM)
            layer_dir = str(neuron.layer)
            write_text_atomic(folder / "collated-activations" / layer_dir / f"{neuron.neuron}.json",
                              dumps(neuron_record_json(neuron_record(data))))
            summary.files += 1
            if data.explanations:
                write_text_atomic(folder / "explanations" / layer_dir / f"{neuron.neuron}.jsonl",
                                  dumps(simulation_results_json(neuron_explanations(data))) + "\n")
                summary.files += 1
                summary.explanations += len(data.explanations)
            summary.neurons += 1
            if tick:
                tick(1)
    imported = meta.get("settings", {}).get("imported_from") == "openai"
    write_text_atomic(folder / SIDECAR, json.dumps({
        "exported_by": "neuron-atlas",
        "cache": str(cache),
        "model": meta.get("model"),
        "split_rule": SPLIT_RULE_OPENAI if imported else SPLIT_RULE_OURS,
        "dropped": {"bottom_excerpts": bottom},
    }, indent=2))
    if bottom:
        summary.notes.append(f"{bottom:,} bottom excerpts left out (OpenAI's NeuronRecord has no place for them)")
    if not imported:
        summary.notes.append("records are in our rank order: OpenAI's code derives train/calibration/valid/test from "
                             "that order; its test split is our score split (see docs/interop.md)")
    return summary

"""`python -m core import-openai`: a folder of OpenAI's published neuron files into a normal cache.

Two phases, so a stopped import loses little:
1. read: each block of up to CHUNK_NEURONS neurons of one layer is parsed, checked and reduced to a few Arrow
   tables in CACHE.partial/openai-import/ (written to a temporary folder and renamed when complete). A rerun skips
   the blocks already there.
2. write: the blocks are assembled into a recording at CACHE.tmp (excerpts shared by several neurons stored once, an
   imported vocabulary of the token strings, statistics, splits), then its results file (explanations with their
   published scores, kept per block in the block's folder until the recording is finished; correlated neurons);
   both are renamed over CACHE's at the end. This phase is redone whole on a rerun; it reads no JSON.

A file that is missing, of another dataclass version, truncated or otherwise wrong is reported per neuron and
skipped; nothing else stops. What is kept and lost, and how OpenAI's splits map onto ours: docs/interop.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.interop import InteropError, cache_io
from core.interop.openai_format import (
    SIDECAR,
    SPLIT_RULE_OPENAI,
    SPLIT_RULE_OURS,
    FormatError,
    NeuronExplanations,
    NeuronRecord,
    ScoredSequence,
    parse_neuron_record,
    parse_simulation_results,
    pooled_ev_correlation,
    read_json_file,
    record_split,
)
from core.paths import partial_dir
from core.score import pearson, readability_problem
from core.types import ExcerptKind, ExcerptSimulation, NeuronId, RelatedNeuronKind, Scores, Split

log = logging.getLogger(__name__)

CHUNK_NEURONS = 64
"""Neurons per block of phase 1: the unit a rerun resumes at, and what phase 2 holds in memory at once (about
20,000 records of 64 tokens for GPT-2 XL's files)."""
HIST_BINS = 40
"""Bins of the estimated activation histogram (as the recorder's)."""
MIN_SHARED_EXCERPTS = 2
"""Two neurons are correlated only over at least this many excerpts that both records hold (128 tokens)."""
CORRELATED_PER_NEURON = 10
"""Correlated neurons kept per neuron."""
MAX_SHARERS = 256
"""An excerpt held by more neurons than this adds no pairs (k^2 pairs would dominate the time)."""
SCORE_TOLERANCE = 1e-4
"""A published pooled score further than this from its recomputation is reported."""
DEFAULT_MODEL_NAME = "gpt2-xl"
RELATED_SETTINGS = {"method": "activation correlation over excerpts two neurons' records share",
                    "min_shared_excerpts": MIN_SHARED_EXCERPTS}
"""The settings stored with an import's related neurons (results meta `related`)."""


@dataclass(frozen=True)
class ImportSource:
    """Where the files are: LAYER/NEURON.json under `records`, LAYER/NEURON.jsonl under `explanations`."""

    records: Path
    explanations: Path | None
    split_rule: str = SPLIT_RULE_OPENAI
    """How record order maps to splits: OpenAI's rule, or ours for files we exported from a cache we built."""


@dataclass(frozen=True)
class Problem:
    """A file that could not be imported (the neuron is skipped) or only partly (noted, the neuron kept)."""

    neuron: NeuronId
    path: str
    problem: str
    skipped: bool

    def __str__(self) -> str:
        return f"{self.neuron}  {self.path}: {self.problem}" + ("  (neuron skipped)" if self.skipped else "")


@dataclass
class ImportSummary:
    """What an import did (printed by the command line)."""

    cache: Path
    neurons: int = 0
    excerpts: int = 0
    records: int = 0
    explanations: int = 0
    neurons_without_explanations: int = 0
    blocks_read: int = 0
    blocks_resumed: int = 0
    problems: list[Problem] = field(default_factory=list)
    unmatched_sequences: int = 0
    score_mismatches: int = 0
    correlated_pairs: int = 0
    seconds: float = 0.0
    report: Path | None = None


# --- finding the files ----------------------------------------------------------------------------------------------


def _layer_dirs(folder: Path) -> dict[int, Path]:
    return {int(p.name): p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()} if folder.is_dir() else {}


def _has_files(folder: Path, suffix: str) -> bool:
    return any(next(iter(d.glob(f"*{suffix}")), None) is not None for d in _layer_dirs(folder).values())


def find_source(folder: Path, explanations: Path | None = None) -> ImportSource:
    """The records and explanations folders for `folder`: a collated-activations folder (LAYER/NEURON.json, maybe
    with LAYER/NEURON.jsonl beside them) or a folder holding collated-activations/ and explanations/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InteropError(f"{folder} is not a folder; give the folder that holds LAYER/NEURON.json files "
                           "(OpenAI's collated-activations) or one holding collated-activations/")
    records = folder / "collated-activations" if (folder / "collated-activations").is_dir() else folder
    if not _has_files(records, ".json"):
        raise InteropError(f"no LAYER/NEURON.json files under {records}: fetch OpenAI's collated activations into "
                           "it (see docs/interop.md), e.g. 0/0.json for layer 0, neuron 0")
    rule = _split_rule(folder, records)
    if explanations is not None:
        explanations = Path(explanations)
        if not _has_files(explanations, ".jsonl"):
            raise InteropError(f"no LAYER/NEURON.jsonl files under {explanations}; give the folder of OpenAI's "
                               "explanations (e.g. 0/0.jsonl), or leave --explanations out")
        return ImportSource(records, explanations, rule)
    for candidate in (folder / "explanations", records.parent / "explanations", records):
        if _has_files(candidate, ".jsonl"):
            return ImportSource(records, candidate, rule)
    return ImportSource(records, None, rule)


def _split_rule(folder: Path, records: Path) -> str:
    """SPLIT_RULE_OURS when the files are our export of a cache we built (its sidecar says so), else OpenAI's."""
    for candidate in (folder / SIDECAR, records.parent / SIDECAR):
        if candidate.is_file():
            try:
                rule = json.loads(candidate.read_text()).get("split_rule")
            except (OSError, ValueError, AttributeError):
                continue
            if rule in (SPLIT_RULE_OPENAI, SPLIT_RULE_OURS):
                return str(rule)
    return SPLIT_RULE_OPENAI


def _stems(folder: Path | None, suffix: str, layers: set[int] | None) -> set[NeuronId]:
    if folder is None:
        return set()
    found = set()
    for layer, path in _layer_dirs(folder).items():
        if layers is None or layer in layers:
            found |= {NeuronId(layer, int(f.stem)) for f in path.glob(f"*{suffix}") if f.stem.isdigit()}
    return found


def wanted_neurons(source: ImportSource, layers: Sequence[int] | None, neurons: Sequence[NeuronId] | None
                   ) -> list[NeuronId]:
    """Neurons to import: those asked for, else every neuron with a file in the chosen layers."""
    if neurons:
        return sorted(set(neurons))
    chosen = None if layers is None else set(layers)
    found = _stems(source.records, ".json", chosen) | _stems(source.explanations, ".jsonl", chosen)
    if not found:
        where = "" if layers is None else f" in layers {', '.join(map(str, sorted(chosen or [])))}"
        raise InteropError(f"no neuron files{where} under {source.records}")
    return sorted(found)


# --- phase 1: read, check, reduce ------------------------------------------------------------------------------------


def _records_of(record: NeuronRecord, rule: str) -> list[tuple[ExcerptKind, int, int | None, Split, Any]]:
    """(kind, rank, quantile bin, split, ActivationRecord) of every excerpt of a record, in file order."""
    rows: list[tuple[ExcerptKind, int, int | None, Split, Any]] = []
    for i, r in enumerate(record.top):
        rows.append((ExcerptKind.TOP, i, None, record_split(ExcerptKind.TOP, i, len(record.top), rule), r))
    for i, r in enumerate(record.random):
        rows.append((ExcerptKind.RANDOM, i, None, record_split(ExcerptKind.RANDOM, i, len(record.random), rule), r))
    for b, samples in enumerate(record.quantile_samples or ()):
        for i, r in enumerate(samples):
            rows.append((ExcerptKind.QUANTILE, i, b, Split.VIEW, r))
    return rows


def _moments(values: np.ndarray) -> tuple[float, float, float, float]:
    """Mean, variance, skewness and excess kurtosis of a sample (0 for the shape terms of a constant sample)."""
    mean = float(values.mean())
    centred = values - mean
    var = float((centred**2).mean())
    if var <= 1e-12:
        return mean, var, 0.0, 0.0
    return mean, var, float((centred**3).mean() / var**1.5), float((centred**4).mean() / var**2 - 3)


def neuron_stats_row(record: NeuronRecord) -> tuple[dict[str, Any], list[str]]:
    """neuron_stats values for an imported record, and the names of those estimated from its samples.

    OpenAI's files give the moments and the quantile boundaries; min, density and the histogram are estimated
    from the random sample (a uniform sample of excerpts), and max is exact (the top records hold the maximum).
    """
    everything = np.concatenate([r.activations for r in (*record.top, *record.random,
                                                          *(r for q in record.quantile_samples or () for r in q))])
    uniform = np.concatenate([r.activations for r in record.random]) if record.random else everything
    estimated = ["min_activation", "density", "histogram"]
    if not record.random:
        estimated.append("from top and quantile records (no random sample)")
    hi, lo = float(everything.max()), float(everything.min())
    published = (record.mean, record.variance, record.skewness, record.kurtosis)
    moments = _moments(uniform.astype(np.float64))
    values = []
    for name, value, guess in zip(("mean", "variance", "skewness", "kurtosis"), published, moments, strict=True):
        if value is None:
            estimated.append(name)
        values.append(guess if value is None else value)
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, HIST_BINS + 1)
    counts, _ = np.histogram(np.clip(uniform, lo, hi), bins=edges)
    quantile_edges: list[float] = []
    if record.quantile_boundaries is not None:
        samples = [r.max_activation for q in record.quantile_samples or () for r in q] or [lo]
        first = min(min(samples), record.quantile_boundaries[0]) if record.quantile_boundaries else min(samples)
        quantile_edges = [first, *record.quantile_boundaries, max(hi, record.quantile_boundaries[-1])]
    row = {
        "max_activation": hi, "min_activation": lo, "mean": values[0], "variance": values[1],
        "skewness": values[2], "kurtosis": values[3], "density": float((uniform > 0).mean()),
        "hist_edges": edges.astype(np.float32).tolist(), "hist_counts": counts.astype(np.int64).tolist(),
        "quantile_edges": quantile_edges,
    }
    return row, estimated


_RECORD_SCHEMA = pa.schema([
    ("neuron", pa.int32()), ("kind", pa.string()), ("rank", pa.int16()), ("quantile_bin", pa.int8()),
    ("split", pa.string()), ("tokens", pa.list_(pa.string())), ("activations", pa.list_(pa.float32())),
])
_STATS_SCHEMA = pa.schema([
    ("neuron", pa.int32()), ("max_activation", pa.float32()), ("min_activation", pa.float32()),
    ("mean", pa.float64()), ("variance", pa.float64()), ("skewness", pa.float64()), ("kurtosis", pa.float64()),
    ("density", pa.float64()), ("hist_edges", pa.list_(pa.float32())), ("hist_counts", pa.list_(pa.int64())),
    ("quantile_edges", pa.list_(pa.float32())), ("estimated", pa.list_(pa.string())),
])
_EXPLANATION_SCHEMA = pa.schema([
    ("neuron", pa.int32()), ("index", pa.int16()), ("text", pa.string()), ("score", pa.float64()),
    ("recomputed", pa.float64()),
])
_RELATED_SCHEMA = pa.schema([
    ("layer", pa.int16()), ("neuron", pa.int32()), ("kind", pa.string()), ("rank", pa.int16()),
    ("other_layer", pa.int16()), ("other_neuron", pa.int32()), ("strength", pa.float32()),
])
_SEQUENCE_SCHEMA = pa.schema([
    ("neuron", pa.int32()), ("explanation", pa.int16()), ("tokens", pa.list_(pa.string())),
    ("expected", pa.list_(pa.float64())), ("truth", pa.list_(pa.float64())), ("score", pa.float64()),
    ("scale", pa.string()),
])


@dataclass
class _Block:
    """Phase 1's output for one block of neurons, as lists of rows."""

    records: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    explanations: list[dict[str, Any]] = field(default_factory=list)
    sequences: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    imported: list[NeuronId] = field(default_factory=list)


def _read_neuron(source: ImportSource, neuron: NeuronId, block: _Block) -> None:
    """Parse one neuron's files into `block` (or a Problem saying why not)."""
    path = source.records / str(neuron.layer) / f"{neuron.neuron}.json"
    shown = f"{neuron.layer}/{neuron.neuron}.json"
    if not path.exists():
        block.problems.append(Problem(neuron, shown, "missing (no collated-activations file)", True))
        return
    try:
        record = parse_neuron_record(read_json_file(path))
    except FormatError as error:
        block.problems.append(Problem(neuron, shown, str(error), True))
        return
    if (record.layer, record.neuron) != (neuron.layer, neuron.neuron):
        block.problems.append(Problem(neuron, shown, f"says it is neuron {record.layer}:{record.neuron}", True))
        return
    if not record.top:
        block.problems.append(Problem(neuron, shown, "has no top-activating records", True))
        return
    stats, estimated = neuron_stats_row(record)
    block.stats.append({"neuron": neuron.neuron, **stats, "estimated": estimated})
    for kind, rank, qbin, split, r in _records_of(record, source.split_rule):
        block.records.append({"neuron": neuron.neuron, "kind": str(kind), "rank": rank, "quantile_bin": qbin,
                              "split": str(split), "tokens": list(r.tokens), "activations": r.activations})
    block.imported.append(neuron)
    _read_explanations(source, neuron, block)


def _read_explanations(source: ImportSource, neuron: NeuronId, block: _Block) -> None:
    if source.explanations is None:
        return
    path = source.explanations / str(neuron.layer) / f"{neuron.neuron}.jsonl"
    shown = f"{neuron.layer}/{neuron.neuron}.jsonl"
    if not path.exists():
        return
    try:
        results: NeuronExplanations = parse_simulation_results(read_json_file(path))
    except FormatError as error:
        block.problems.append(Problem(neuron, shown, f"{error}; imported without explanations", False))
        return
    if (results.layer, results.neuron) != (neuron.layer, neuron.neuron):
        block.problems.append(Problem(neuron, shown, f"says it is neuron {results.layer}:{results.neuron}; "
                                      "imported without explanations", False))
        return
    for index, explanation in enumerate(results.explanations):
        block.explanations.append({"neuron": neuron.neuron, "index": index, "text": explanation.text,
                                   "score": explanation.ev_correlation_score,
                                   "recomputed": pooled_ev_correlation(explanation.sequences)})
        for s in explanation.sequences:
            block.sequences.append({"neuron": neuron.neuron, "explanation": index, "tokens": list(s.tokens),
                                    "expected": s.expected_activations, "truth": s.true_activations,
                                    "score": s.ev_correlation_score, "scale": s.activation_scale})


def _block_name(layer: int, first: int) -> str:
    return f"L{layer:03d}-N{first:06d}"


def _write_block(folder: Path, name: str, layer: int, neurons: Sequence[NeuronId], block: _Block) -> None:
    tmp = folder / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file, rows, schema in (("records", block.records, _RECORD_SCHEMA), ("stats", block.stats, _STATS_SCHEMA),
                               ("explanations", block.explanations, _EXPLANATION_SCHEMA),
                               ("sequences", block.sequences, _SEQUENCE_SCHEMA)):
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp / f"{file}.parquet")
    (tmp / "block.json").write_text(json.dumps({
        "layer": layer,
        "neurons": [n.neuron for n in neurons],
        "problems": [{"neuron": p.neuron.neuron, "path": p.path, "problem": p.problem, "skipped": p.skipped}
                     for p in block.problems],
    }))
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _block_done(folder: Path, name: str, neurons: Sequence[NeuronId]) -> bool:
    marker = folder / name / "block.json"
    if not marker.exists():
        return False
    try:
        done = set(json.loads(marker.read_text())["neurons"])
    except (OSError, ValueError, KeyError):
        return False
    return {n.neuron for n in neurons} <= done


def _blocks(neurons: Sequence[NeuronId], size: int) -> list[tuple[int, int, list[NeuronId]]]:
    grouped: dict[tuple[int, int], list[NeuronId]] = defaultdict(list)
    for n in neurons:
        grouped[(n.layer, n.neuron // size * size)].append(n)
    return [(layer, first, grouped[(layer, first)]) for layer, first in sorted(grouped)]


def _check_work_folder(work: Path, source: ImportSource) -> None:
    """Blocks left by an earlier run are reused only when they came from the same folders."""
    stamp = {"records": str(source.records.resolve()), "split_rule": source.split_rule,
             "explanations": None if source.explanations is None else str(source.explanations.resolve())}
    marker = work / "source.json"
    if marker.exists():
        try:
            earlier = json.loads(marker.read_text())
        except ValueError:
            earlier = None
        if earlier != stamp:
            raise InteropError(f"{work} holds an unfinished import of other folders ({earlier}); import those "
                               f"again to finish it, or delete {work} to start over")
        return
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(stamp))


# --- phase 2: assemble the cache --------------------------------------------------------------------------------------


def _key(tokens: Sequence[str]) -> bytes:
    """Identity of an excerpt's text (16 bytes of BLAKE2b over the tokens)."""
    return hashlib.blake2b("\x1f".join(tokens).encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class _Assembly:
    """State of phase 2 across blocks."""

    vocab: dict[str, int] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)
    excerpt_ids: dict[bytes, int] = field(default_factory=dict)
    lengths: Counter[int] = field(default_factory=Counter)
    layers: set[int] = field(default_factory=set)
    max_neuron: int = -1
    estimated: Counter[str] = field(default_factory=Counter)
    readability: list[str] = field(default_factory=list)

    def token_id(self, token: str) -> int:
        found = self.vocab.get(token)
        if found is None:
            found = self.vocab[token] = len(self.counts)
            self.counts.append(0)
        return found


def _max_per_list(values: pa.ListArray) -> np.ndarray:
    flat = values.flatten().to_numpy(zero_copy_only=False)
    offsets = values.offsets.to_numpy()
    return np.maximum.reduceat(flat, offsets[:-1]) if len(values) else np.zeros(0, np.float32)


_IMPORTED_TABLES = ("explanations", "scores", "simulations")
"""The results tables of a block's imported explanations, kept as imported-NAME.parquet in its folder."""


def _assemble_block(writer: Any, folder: Path, state: _Assembly, summary: ImportSummary) -> None:
    """Write one block's excerpts and neuron rows into the recording; keep its explanations' rows in `folder`."""
    meta = json.loads((folder / "block.json").read_text())
    layer = int(meta["layer"])
    for p in meta["problems"]:
        summary.problems.append(Problem(NeuronId(layer, int(p["neuron"])), p["path"], p["problem"], p["skipped"]))
    records = pq.read_table(folder / "records.parquet")
    stats = pq.read_table(folder / "stats.parquet")
    if stats.num_rows == 0:
        return
    state.layers.add(layer)
    state.max_neuron = max(state.max_neuron, int(np.max(stats.column("neuron").to_numpy())))
    for names in stats.column("estimated").to_pylist():
        state.estimated.update(names)

    # excerpts: one row per distinct text; neuron_excerpts point at them
    tokens_col = records.column("tokens").to_pylist()
    keys = [_key(tokens) for tokens in tokens_col]
    new_ids, new_token_ids, new_tokens, new_sources = [], [], [], []
    excerpt_of_row = np.empty(len(tokens_col), dtype=np.int32)
    neurons = records.column("neuron").to_numpy()
    kinds = records.column("kind").to_pylist()
    ranks = records.column("rank").to_numpy()
    for i, (tokens, key) in enumerate(zip(tokens_col, keys, strict=True)):
        found = state.excerpt_ids.get(key)
        if found is None:
            found = state.excerpt_ids[key] = len(state.excerpt_ids)
            ids = [state.token_id(t) for t in tokens]
            for t in ids:
                state.counts[t] += 1
            state.lengths[len(tokens)] += 1
            new_ids.append(found)
            new_token_ids.append(ids)
            new_tokens.append(tokens)
            new_sources.append(f"openai {kinds[i]} record {ranks[i]} of neuron {layer}:{neurons[i]}")
        excerpt_of_row[i] = found
    if new_ids:
        cache_io.write_excerpts(writer, np.asarray(new_ids), new_token_ids, new_tokens, new_sources)
    activations = records.column("activations").combine_chunks()
    excerpt_rows = pa.table({
        "layer": pa.array(np.full(records.num_rows, layer, dtype=np.int16)),
        "neuron": records.column("neuron"),
        "excerpt_id": pa.array(excerpt_of_row),
        "kind": records.column("kind"),
        "rank": records.column("rank"),
        "quantile_bin": records.column("quantile_bin"),
        "split": records.column("split"),
        "max_activation": pa.array(_max_per_list(activations).astype(np.float32)),
        "activations": activations,
    })
    stats_rows = pa.table({"layer": pa.array(np.full(stats.num_rows, layer, dtype=np.int16)),
                           **{name: stats.column(name) for name in _STATS_SCHEMA.names if name != "estimated"}})
    cache_io.write_neuron_rows(writer, stats_rows, excerpt_rows)
    summary.records += records.num_rows
    summary.neurons += stats.num_rows
    explanations = pq.read_table(folder / "explanations.parquet").to_pylist()
    explained = {row["neuron"] for row in explanations}
    summary.neurons_without_explanations += len(set(stats.column("neuron").to_pylist()) - explained)
    imported = (_assemble_explanations(folder, layer, explanations, records, keys, excerpt_of_row, state, summary)
                if explanations else [])
    for name, table in zip(_IMPORTED_TABLES, cache_io.imported_explanation_tables(imported), strict=True):
        pq.write_table(table, folder / f"imported-{name}.parquet")


def _imported_explanations(folder: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The explanations' rows `_assemble_block` kept in a block's folder (none for a block without neurons)."""
    if not (folder / "imported-explanations.parquet").exists():
        return cache_io.imported_explanation_tables([])
    explanations, scores, simulations = (pq.read_table(folder / f"imported-{name}.parquet")
                                         for name in _IMPORTED_TABLES)
    return explanations, scores, simulations


def _assemble_explanations(folder: Path, layer: int, explanations: list[dict[str, Any]],
                           records: pa.Table, keys: list[bytes], excerpt_of_row: np.ndarray, state: _Assembly,
                           summary: ImportSummary) -> list[cache_io.ImportedExplanation]:
    sequences: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in pq.read_table(folder / "sequences.parquet").to_pylist():
        sequences[(row["neuron"], row["explanation"])].append(row)
    # where each (neuron, text) is stored, to find the excerpts OpenAI's simulator saw
    stored: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i, (neuron, key) in enumerate(zip(records.column("neuron").to_pylist(), keys, strict=True)):
        stored[(neuron, key)].append(i)
    kinds = records.column("kind").to_pylist()
    splits = records.column("split").to_pylist()
    activations = records.column("activations")
    found: list[cache_io.ImportedExplanation] = []
    for row in explanations:
        neuron = NeuronId(layer, row["neuron"])
        sims: list[ExcerptSimulation] = []
        top: list[ScoredSequence] = []
        rnd: list[ScoredSequence] = []
        seqs = sequences[(row["neuron"], row["index"])]
        for s in seqs:
            truth = np.asarray(s["truth"], dtype=np.float64)
            match = next((i for i in stored.get((row["neuron"], _key(s["tokens"])), ())
                          if np.allclose(np.asarray(activations[i].as_py()), truth, atol=1e-3, rtol=1e-3)), None)
            if match is None:
                summary.unmatched_sequences += 1
                continue
            expected = np.asarray(s["expected"], dtype=np.float64)
            kind = ExcerptKind(kinds[match])
            sims.append(ExcerptSimulation(
                excerpt_id=int(excerpt_of_row[match]), kind=kind, split=Split(splits[match]),
                tokens=tuple(s["tokens"]), activations=tuple(float(v) for v in truth),
                normalized_predictions=tuple(float(v) for v in expected),
                score=s["score"] if s["score"] is not None else pearson(truth, expected),
            ))
            scored = ScoredSequence(tuple(s["tokens"]), expected, s["scale"], truth, s["score"])
            (top if kind == ExcerptKind.TOP else rnd).append(scored)
        published, recomputed = row["score"], row["recomputed"]
        if published is not None and recomputed is not None and abs(published - recomputed) > SCORE_TOLERANCE:
            summary.score_mismatches += 1
            summary.problems.append(Problem(neuron, f"{layer}/{row['neuron']}.jsonl", f"explanation {row['index']}: "
                                            f"published score {published:.4f} but its sequences give "
                                            f"{recomputed:.4f}", False))
        scores = Scores(all=published if published is not None else recomputed,
                        top=pooled_ev_correlation(top), random=pooled_ev_correlation(rnd),
                        tokens=sum(len(s["tokens"]) for s in seqs))
        found.append(cache_io.ImportedExplanation(neuron, row["text"], scores, sims))
        if problem := readability_problem(row["text"]):
            state.readability.append(f"{neuron}: {row['text']!r} ({problem})")
    summary.explanations += len(found)
    return found


def correlated_neurons(table: pa.Table, min_shared: int = MIN_SHARED_EXCERPTS, keep: int = CORRELATED_PER_NEURON
                       ) -> tuple[dict[int, pa.Table], int]:
    """Correlated-neuron rows per layer from (layer, neuron, excerpt_id, activations) rows of shared excerpts:
    Pearson r over the tokens of the excerpts two neurons' records both hold (at least `min_shared` of them),
    positive r only, the `keep` strongest per neuron. Returns the rows and the number of pairs correlated."""
    layers = table.column("layer").to_numpy()
    neurons = table.column("neuron").to_numpy()
    excerpts = table.column("excerpt_id").to_numpy()
    acts = table.column("activations").to_pylist()
    sums: dict[tuple[int, int], np.ndarray] = {}
    ids = layers.astype(np.int64) * (1 << 32) + neurons.astype(np.int64)
    start = 0
    while start < len(excerpts):
        stop = start
        while stop < len(excerpts) and excerpts[stop] == excerpts[start]:
            stop += 1
        if stop - start <= MAX_SHARERS:
            values = [np.asarray(acts[i], dtype=np.float64) for i in range(start, stop)]
            for a in range(start, stop):
                for b in range(a + 1, stop):
                    x, y = values[a - start], values[b - start]
                    pair = (int(ids[a]), int(ids[b]))
                    entry = sums.get(pair)
                    if entry is None:
                        entry = sums[pair] = np.zeros(7)
                    entry += (1, x.size, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
        start = stop
    found: dict[int, list[tuple[float, int]]] = defaultdict(list)
    pairs = 0
    for (a, b), (shared, n, sx, sy, sxx, syy, sxy) in sums.items():
        if shared < min_shared:
            continue
        cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
        if vx <= 1e-12 * max(1.0, sxx) or vy <= 1e-12 * max(1.0, syy):
            continue
        r = float(cov / np.sqrt(vx * vy))
        pairs += 1
        if r > 0:
            found[a].append((r, b))
            found[b].append((r, a))
    by_layer: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for me in sorted(found):
        layer, neuron = me >> 32, me & 0xFFFFFFFF
        for rank, (r, other) in enumerate(sorted(found[me], key=lambda t: (-t[0], t[1]))[:keep]):
            by_layer[layer].append({"layer": layer, "neuron": neuron, "kind": str(RelatedNeuronKind.CORRELATED),
                                    "rank": rank, "other_layer": other >> 32, "other_neuron": other & 0xFFFFFFFF,
                                    "strength": min(r, 1.0)})
    return {layer: pa.Table.from_pylist(rows, schema=_RELATED_SCHEMA) for layer, rows in by_layer.items()}, pairs


# --- the import -------------------------------------------------------------------------------------------------------


def work_folder(cache: Path) -> Path:
    """Where an unfinished import keeps the blocks it has read."""
    return partial_dir(cache) / "openai-import"


def import_openai(
    folder: Path,
    cache: Path,
    *,
    explanations: Path | None = None,
    layers: Sequence[int] | None = None,
    neurons: Sequence[NeuronId] | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    force: bool = False,
    block_size: int = CHUNK_NEURONS,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> ImportSummary:
    """Import OpenAI's files under `folder` into a new cache at `cache` (resumable; see the module docstring).

    `progress(description, total)` returns a function called with the number of units just done.
    Raises InteropError for a folder without such files or a cache that exists (without `force`).
    """
    started = time.monotonic()
    cache = Path(cache)
    if cache.exists() and not force:
        raise InteropError(f"{cache} already exists; add --force to replace it (the old file stays readable until "
                           "the new one is finished), or choose another --cache")
    source = find_source(folder, explanations)
    wanted = wanted_neurons(source, layers, neurons)
    work = work_folder(cache)
    _check_work_folder(work, source)
    summary = ImportSummary(cache=cache)
    blocks = _blocks(wanted, block_size)

    tick = progress("read", len(wanted)) if progress else None
    for layer, first, members in blocks:
        name = _block_name(layer, first)
        if _block_done(work, name, members):
            summary.blocks_resumed += 1
        else:
            block = _Block()
            for neuron in members:
                _read_neuron(source, neuron, block)
            _write_block(work, name, layer, members, block)
            summary.blocks_read += 1
        if tick:
            tick(len(members))

    cache.parent.mkdir(parents=True, exist_ok=True)
    state = _Assembly()
    writer = cache_io.create_temp_recording(cache)
    try:
        tick = progress("write", len(blocks)) if progress else None
        for layer, first, _members in blocks:
            _assemble_block(writer, work / _block_name(layer, first), state, summary)
            if tick:
                tick(1)
        if summary.neurons == 0:
            raise InteropError(f"none of the {len(wanted):,} neurons could be imported: "
                               + "; ".join(str(p) for p in summary.problems[:3]))
        cache_io.write_vocab(writer, list(state.vocab), np.asarray(state.counts, dtype=np.int64))
        correlated, summary.correlated_pairs = correlated_neurons(cache_io.shared_excerpt_activations(writer))
        summary.excerpts = len(state.excerpt_ids)
        cache_io.set_meta(writer, _meta(source, model_name, state, summary))
        cache_io.finish_temp_recording(writer)
    finally:
        writer.close()
    results = cache_io.open_temp_results(cache)
    try:
        for layer, first, _members in blocks:
            cache_io.write_imported_explanations(results, _imported_explanations(work / _block_name(layer, first)))
        cache_io.start_correlated_neurons(results, RELATED_SETTINGS)
        for layer in sorted(state.layers):
            cache_io.write_correlated_neurons(results, layer, correlated.get(layer, _RELATED_SCHEMA.empty_table()))
        cache_io.finish_correlated_neurons(results, RELATED_SETTINGS)
        cache_io.finish_temp_results(results)
    finally:
        results.close()
    cache_io.publish(cache)
    summary.report = _write_report(cache, summary, state)
    shutil.rmtree(work, ignore_errors=True)
    _remove_empty(work.parent)
    summary.seconds = time.monotonic() - started
    return summary


def _remove_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: a build's partial files live there too
        folder.rmdir()


def _meta(source: ImportSource, model_name: str, state: _Assembly, summary: ImportSummary) -> dict[str, Any]:
    excerpt_len = state.lengths.most_common(1)[0][0] if state.lengths else 0
    stored_tokens = sum(length * count for length, count in state.lengths.items())
    return {
        "model": model_name,
        "architecture": "gpt2" if model_name.startswith("gpt2") else "unknown",
        "corpus": "OpenAI's collated activations (WebText excerpts)",
        "layers": max(state.layers) + 1,
        "neurons_per_layer": state.max_neuron + 1,
        "tokens": stored_tokens,
        "excerpts": len(state.excerpt_ids),
        "excerpt_len": excerpt_len,
        "bos_token_id": None,
        "settings": {"imported_from": "openai"},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "imported": {
            "format": "openai-automated-interpretability",
            "records": str(source.records),
            "explanations": None if source.explanations is None else str(source.explanations),
            "layers": sorted(state.layers),
            "model_on_disk": False,
            "model_needed_for": ["try your own text", "related tokens and neurons by weights", "recording more text"],
            "token_ids": "imported vocabulary: ids number the distinct token strings of the files, not "
                         f"{model_name}'s tokenizer ids",
            "tokens_meaning": "tokens of the distinct stored excerpts, not the size of OpenAI's dataset",
            "split_rule": "OpenAI's interleaved splits: top records train/calibration/valid/test -> "
                          "explain/calibrate/score/view; random calibration/valid/test -> calibrate/score/view"
                          if source.split_rule == SPLIT_RULE_OPENAI else
                          "ours (the files are our export of a cache we built: records in rank order)",
            "estimated_stats": dict(state.estimated),
            "explanations_explainer": cache_io.IMPORTED_EXPLAINER,
            "explanations_breaking_readability_rule": len(state.readability),
            "problems": len(summary.problems),
            "unmatched_scored_sequences": summary.unmatched_sequences,
            "score_mismatches": summary.score_mismatches,
            "correlated_pairs": summary.correlated_pairs,
        },
    }


def _write_report(cache: Path, summary: ImportSummary, state: _Assembly) -> Path:
    """CACHE.import-report.txt: every problem, and every explanation that breaks the readability rule."""
    path = cache.with_name(cache.name + ".import-report.txt")
    lines = [f"import into {cache}: {summary.neurons:,} neurons, {summary.explanations:,} explanations",
             f"problems ({len(summary.problems):,}):", *(f"  {p}" for p in summary.problems),
             f"explanations kept as published that break the readability rule ({len(state.readability):,}):",
             *(f"  {line}" for line in state.readability)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary_lines(summary: ImportSummary, limit: int = 20) -> list[str]:
    """What the command line prints at the end of an import."""
    lines = [
        f"imported {summary.neurons:,} neurons ({summary.records:,} records, {summary.excerpts:,} distinct excerpts) "
        f"and {summary.explanations:,} explanations into {summary.cache} in {summary.seconds:.0f} s",
        f"  blocks read {summary.blocks_read}, resumed from an earlier run {summary.blocks_resumed}; "
        f"{summary.neurons_without_explanations:,} neurons have no explanation file",
        f"  scored sequences found among the records: all but {summary.unmatched_sequences:,}; published scores "
        f"that differ from their recomputation: {summary.score_mismatches:,}",
        f"  correlated neuron pairs (over shared excerpts): {summary.correlated_pairs:,}",
    ]
    if summary.problems:
        lines.append(f"{len(summary.problems):,} problems (each neuron named once per file):")
        lines += [f"  {p}" for p in summary.problems[:limit]]
        if len(summary.problems) > limit:
            lines.append(f"  ... {len(summary.problems) - limit:,} more in {summary.report}")
    if summary.report:
        lines.append(f"report: {summary.report}")
    lines.append("the model is not on disk: pages that run the model say so; scores and excerpts work as usual")
    return lines


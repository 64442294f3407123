"""OpenAI's published neuron files: import, published-score recomputation, re-scoring, export and round trip.

The fixture files are written here, in code, the way OpenAI's files are laid out (LAYER/NEURON.json holding a
NeuronRecord, LAYER/NEURON.jsonl one NeuronSimulationResults line, `dataclass_name` on every object), with the
scores computed as OpenAI's scoring code does (np.corrcoef, pooled over every token of every sequence).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from core.cli import main
from core.interop.cache_io import IMPORTED_EXPLAINER, IMPORTED_SIMULATOR
from core.interop.importer import import_openai, work_folder
from core.interop.openai_format import (
    FormatError,
    openai_split,
    parse_simulation_results,
    pooled_ev_correlation,
    read_json_file,
)
from core.paths import copy_cache, results_path
from core.store import open_reader
from core.types import ExcerptKind, NeuronId, RelatedNeuronKind, Split

ROOT = Path(__file__).resolve().parents[1]
WORDS = [" the", " cat", "ME", " sat", "\n", " on", " mat", ",", " 42", "é", " dog", " ran", "\t", " \"", "ing"]
LENGTH = 64
TOP, RANDOM, PER_BIN = 20, 20, 5
BOUNDARIES = [0.1, 0.5, 1.25, 2.5]
VALID = TOP // 4 + RANDOM // 3
"""Excerpts in OpenAI's valid split (what the fixture's explanations are scored on): 5 top and 6 random."""


# --- OpenAI-format fixture files, written by hand ----------------------------------------------------------------


def _tokens(rng: np.random.Generator) -> list[str]:
    return [WORDS[i] for i in rng.integers(0, len(WORDS), LENGTH)]


def _record(tokens: list[str], activations: np.ndarray, named: bool = True) -> dict[str, Any]:
    record = {"tokens": tokens, "activations": [round(float(a), 6) for a in activations]}
    return {"dataclass_name": "ActivationRecord", **record} if named else record


def _acts(rng: np.random.Generator, peak: float) -> np.ndarray:
    values = rng.normal(0.0, 0.05, LENGTH)
    values[rng.integers(0, LENGTH, 3)] = peak * rng.uniform(0.6, 1.0, 3)
    return values


def neuron_record(layer: int, neuron: int, seed: int, named: bool = True, shared: list[list[str]] | None = None,
                  mean: float | None = 0.01) -> dict[str, Any]:
    """A NeuronRecord as OpenAI's code serialises it; `shared` texts become its first top records."""
    rng = np.random.default_rng(seed)
    texts = list(shared or []) + [_tokens(rng) for _ in range(TOP - len(shared or []))]
    top = [_record(t, _acts(rng, 5.0 - 0.1 * i), named) for i, t in enumerate(texts)]
    random = [_record(_tokens(rng), _acts(rng, 0.4), named) for _ in range(RANDOM)]
    quantiles = [[_record(_tokens(rng), _acts(rng, [0.05, 0.3, 1.0, 2.0, 3.0][b]), named) for _ in range(PER_BIN)]
                 for b in range(5)]
    body = {
        "neuron_id": {"layer_index": layer, "neuron_index": neuron},
        "random_sample": random,
        "random_sample_by_quantile": quantiles,
        "quantile_boundaries": BOUNDARIES,
        "mean": mean,
        "variance": 0.25,
        "skewness": 3.5,
        "kurtosis": 20.0,
        "most_positive_activation_records": top,
    }
    if named:
        body = {"dataclass_name": "NeuronRecord", **body}
        body["neuron_id"] = {"dataclass_name": "NeuronId", **body["neuron_id"]}
    return body


def _corrcoef(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float:
    """OpenAI's correlation_score: np.corrcoef(real, predicted)[0, 1]."""
    return float(np.corrcoef(x, y)[0, 1])


def simulation_results(layer: int, neuron: int, record: dict[str, Any], texts: list[str], seed: int
                       ) -> dict[str, Any]:
    """NeuronSimulationResults scored on OpenAI's valid split (top i % 4 == 2, random i % 3 == 1), with scores
    computed as OpenAI's scoring.py does: per sequence, and pooled over all tokens of all sequences."""
    rng = np.random.default_rng(seed)
    top, random = record["most_positive_activation_records"], record["random_sample"]
    valid = [top[i] for i in range(TOP) if openai_split(i, TOP, ("train", "calibration", "valid", "test")) == "valid"]
    valid += [random[i] for i in range(RANDOM) if openai_split(i, RANDOM, ("calibration", "valid", "test")) == "valid"]
    explanations = []
    for text in texts:
        sequences, all_true, all_expected = [], [], []
        for r in valid:
            truth = r["activations"]
            expected = [round(float(min(10.0, max(0.0, 2 * t + rng.normal(0, 1)))), 4) for t in truth]
            all_true += truth
            all_expected += expected
            sequences.append({
                "dataclass_name": "ScoredSequenceSimulation",
                "simulation": {
                    "dataclass_name": "SequenceSimulation", "tokens": r["tokens"], "expected_activations": expected,
                    "activation_scale": "simulated_normalized_activations",
                    "distribution_values": [[0.0, 1.0, 10.0] for _ in truth],
                    "distribution_probabilities": [[0.5, 0.3, 0.2] for _ in truth],
                    "uncalibrated_simulation": None,
                },
                "true_activations": truth,
                "ev_correlation_score": _corrcoef(truth, expected),
                "rsquared_score": 0.1, "absolute_dev_explained_score": 0.2,
            })
        explanations.append({
            "dataclass_name": "ScoredExplanation", "explanation": text,
            "scored_simulation": {"dataclass_name": "ScoredSimulation", "scored_sequence_simulations": sequences,
                                  "ev_correlation_score": _corrcoef(all_true, all_expected),
                                  "rsquared_score": 0.1, "absolute_dev_explained_score": 0.2},
        })
    return {"dataclass_name": "NeuronSimulationResults",
            "neuron_id": {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": neuron},
            "scored_explanations": explanations}


def _write(root: Path, layer: int, neuron: int, suffix: str, obj: Any) -> Path:
    path = root / str(layer) / f"{neuron}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) + ("\n" if suffix == ".jsonl" else ""))
    return path


@pytest.fixture(scope="module")
def openai_folder(tmp_path_factory) -> Path:
    """OpenAI's layout: data/collated-activations/L/N.json and data/explanations/L/N.jsonl, for
    0:0 (two explanations), 0:1 (an older file without dataclass_name keys; shares 3 texts with 0:2),
    0:2 (no explanation file), 0:3 (truncated), 0:4 (another dataclass version), 1:0 (null mean; truncated
    explanations file), 1:5 (explanations only, no record)."""
    root = tmp_path_factory.mktemp("openai") / "data"
    records, explanations = root / "collated-activations", root / "explanations"
    rng = np.random.default_rng(99)
    shared = [_tokens(rng) for _ in range(3)]
    r00 = neuron_record(0, 0, 1)
    _write(records, 0, 0, ".json", r00)
    _write(explanations, 0, 0, ".jsonl", simulation_results(0, 0, r00, [
        "the word \"ME\" in capital letters", "capitalised abbreviations and the token ME in titles, headings and "
        "all-caps product names of the 1990s"], seed=2))
    r01 = neuron_record(0, 1, 3, named=False, shared=shared)
    _write(records, 0, 1, ".json", r01)
    _write(explanations, 0, 1, ".jsonl", simulation_results(0, 1, neuron_record(0, 1, 3, shared=shared),
                                                            ["cats sitting"], seed=4))
    _write(records, 0, 2, ".json", neuron_record(0, 2, 5, shared=shared))
    text = json.dumps(neuron_record(0, 3, 6))
    (records / "0" / "3.json").write_text(text[: len(text) // 2])
    other = neuron_record(0, 4, 7)
    other["top_activation_records"] = other.pop("most_positive_activation_records")
    _write(records, 0, 4, ".json", other)
    r10 = neuron_record(1, 0, 8, mean=None)
    _write(records, 1, 0, ".json", r10)
    line = json.dumps(simulation_results(1, 0, r10, ["dogs"], seed=9))
    (explanations / "1").mkdir(parents=True, exist_ok=True)
    (explanations / "1" / "0.jsonl").write_text(line[: len(line) - 40])
    _write(explanations, 1, 5, ".jsonl", simulation_results(1, 5, r10, ["orphan"], seed=10))
    return root


@pytest.fixture(scope="module")
def imported(openai_folder, tmp_path_factory) -> tuple[Path, str]:
    cache = tmp_path_factory.mktemp("imported") / "gpt2-xl-openai.duckdb"
    summary = import_openai(openai_folder, cache, block_size=2)
    report = summary.report.read_text() if summary.report else ""
    return cache, report


# --- the format ------------------------------------------------------------------------------------------------


def test_openai_split_rule_interleaves_and_drops_the_remainder():
    splits = [openai_split(i, 22, ("train", "calibration", "valid", "test")) for i in range(22)]
    assert splits[:8] == ["train", "calibration", "valid", "test"] * 2
    assert splits[20:] == [None, None]  # 22 // 4 = 5 per split: records 20 and 21 are in none
    assert [openai_split(i, 20, ("calibration", "valid", "test")) for i in range(20)][-2:] == [None, None]


def test_bad_files_say_what_is_wrong(tmp_path):
    cases = {
        "empty.json": "",
        "cut.json": '{"dataclass_name": "NeuronRecord", "neuron_id": {"layer_index": 0, "neuron_index": 1}, "mea',
        "other.json": json.dumps({"dataclass_name": "NeuronSimulationResults", "neuron_id": None,
                                  "scored_explanations": []}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(FormatError, match="empty"):
        read_json_file(tmp_path / "empty.json")
    with pytest.raises(FormatError, match="truncated"):
        read_json_file(tmp_path / "cut.json")
    from core.interop.openai_format import parse_neuron_record

    with pytest.raises(FormatError, match="is a NeuronSimulationResults, not a NeuronRecord"):
        parse_neuron_record(read_json_file(tmp_path / "other.json"))
    with pytest.raises(FormatError, match="3 tokens but 2 activations"):
        parse_neuron_record({"neuron_id": {"layer_index": 0, "neuron_index": 0},
                             "most_positive_activation_records": [{"tokens": ["a", "b", "c"], "activations": [1, 2]}]})


def test_published_scores_are_recomputed_exactly_from_their_sequences(openai_folder):
    """OpenAI pools: one Pearson r over every token of every scored sequence (aggregate_scored_sequence_simulations),
    not a mean of per-sequence scores; our recomputation gives their stored number."""
    obj = read_json_file(openai_folder / "explanations" / "0" / "0.jsonl")
    results = parse_simulation_results(obj)
    for raw, parsed in zip(obj["scored_explanations"], results.explanations, strict=True):
        stored = raw["scored_simulation"]["ev_correlation_score"]
        assert pooled_ev_correlation(parsed.sequences) == pytest.approx(stored, abs=1e-12)
        per_sequence_mean = np.mean([s["ev_correlation_score"] for s in raw["scored_simulation"][
            "scored_sequence_simulations"]])
        assert abs(per_sequence_mean - stored) > 1e-3  # the fixture tells pooled from averaged apart


# --- import ----------------------------------------------------------------------------------------------------


def test_import_keeps_good_neurons_and_reports_each_bad_file(imported):
    cache, report = imported
    with open_reader(cache) as store:
        assert store.neuron_ids() == [NeuronId(0, 0), NeuronId(0, 1), NeuronId(0, 2), NeuronId(1, 0)]
        meta = store.meta()
        related = store.related_settings()
    assert related is not None and related["finished"]  # the correlated neurons, in the results file
    # published as `build` publishes: recording and results renamed into place, nothing temporary left beside them
    assert sorted(p.name for p in cache.parent.glob(cache.stem + "*")) == [
        cache.name, cache.name + ".import-report.txt", results_path(cache).name]
    assert "0:3  0/3.json: is truncated" in report
    assert "0:4  0/4.json: " in report and "another version" in report and "top_activation_records" in report
    assert "1:5  1/5.json: missing" in report
    assert "1:0  1/0.jsonl: is truncated" in report and "imported without explanations" in report
    assert meta["imported"]["model_on_disk"] is False
    assert meta["model"] == "gpt2-xl" and meta["excerpt_len"] == LENGTH
    assert meta["imported"]["estimated_stats"]["mean"] == 1  # 1:0 has a null mean
    assert not work_folder(cache).exists()


def test_import_stores_every_record_with_openai_splits(imported, openai_folder):
    cache, _ = imported
    raw = read_json_file(openai_folder / "collated-activations" / "0" / "0.json")
    with open_reader(cache) as store:
        rows = store.neuron_excerpts(NeuronId(0, 0))
        stats = store.neuron_stats(NeuronId(0, 0))
        assert store.meta()["activation_encoding"].startswith("float32")  # published values are not rounded
    with duckdb.connect(str(cache), read_only=True) as con:  # the recording file itself, as any DuckDB client reads it
        vocab = dict(con.execute("SELECT token, token_id FROM vocab").fetchall())
    by_kind: dict[tuple[str, int | None], list] = {}
    for row in rows:
        by_kind.setdefault((str(row.kind), row.quantile_bin), []).append(row)
    expected = {("top", None): raw["most_positive_activation_records"], ("random", None): raw["random_sample"]}
    expected |= {("quantile", b): q for b, q in enumerate(raw["random_sample_by_quantile"])}
    assert set(by_kind) == set(expected)
    for key, records in expected.items():
        got = sorted(by_kind[key], key=lambda r: r.rank)
        assert [r.excerpt.tokens for r in got] == [tuple(r["tokens"]) for r in records]
        for row, record in zip(got, records, strict=True):
            np.testing.assert_allclose(row.activations, record["activations"], rtol=1e-6, atol=1e-6)
            assert row.excerpt.token_ids == tuple(vocab[t] for t in record["tokens"])
    top_splits = [r.split for r in sorted(by_kind[("top", None)], key=lambda r: r.rank)]
    assert top_splits[:4] == [Split.EXPLAIN, Split.CALIBRATE, Split.SCORE, Split.VIEW]
    random_splits = [r.split for r in sorted(by_kind[("random", None)], key=lambda r: r.rank)]
    assert random_splits[:3] == [Split.CALIBRATE, Split.SCORE, Split.VIEW] and random_splits[18:] == [Split.VIEW] * 2
    assert {r.split for r in rows if r.kind == ExcerptKind.QUANTILE} == {Split.VIEW}
    assert stats is not None
    assert (stats.mean, stats.variance, stats.skewness, stats.kurtosis) == pytest.approx((0.01, 0.25, 3.5, 20.0))
    assert stats.quantile_edges[1:5] == pytest.approx(BOUNDARIES)
    assert stats.max_activation == pytest.approx(max(max(r["activations"]) for r in
                                                     raw["most_positive_activation_records"]), rel=1e-6)


def test_imported_explanations_keep_published_scores_and_simulations(imported, openai_folder):
    cache, report = imported
    raw = read_json_file(openai_folder / "explanations" / "0" / "0.jsonl")
    with open_reader(cache) as store:
        records = store.explanations(NeuronId(0, 0))
        assert store.explanations(NeuronId(0, 2)) == []  # no explanation file: a neuron without explanations
        assert store.explanations(NeuronId(1, 0)) == []  # its explanation file is truncated
        assert {r.explainer for r in records} == {IMPORTED_EXPLAINER}
        assert {r.simulator for r in records} == {IMPORTED_SIMULATOR}
        published = {e["explanation"]: e["scored_simulation"]["ev_correlation_score"]
                     for e in raw["scored_explanations"]}
        for record in records:
            assert record.score_all == pytest.approx(published[record.text], abs=1e-12)
            sims = store.simulations(record.explanation_id)
            assert len(sims) == VALID and {s.split for s in sims} == {Split.SCORE}
            truth = np.concatenate([s.activations for s in sims])
            predicted = np.concatenate([s.normalized_predictions for s in sims])
            assert _corrcoef(truth, predicted) == pytest.approx(record.score_all, abs=1e-5)
    breaking = report.split("readability rule")[1]
    assert "capitalised abbreviations" in breaking and "characters long; the limit is 100" in breaking
    assert "the word \"ME\" in capital letters" not in breaking  # kept as published either way


def test_neurons_sharing_excerpts_are_correlated_over_them(imported, openai_folder):
    cache, _ = imported
    one = read_json_file(openai_folder / "collated-activations" / "0" / "1.json")
    two = read_json_file(openai_folder / "collated-activations" / "0" / "2.json")
    x = np.concatenate([r["activations"] for r in one["most_positive_activation_records"][:3]])
    y = np.concatenate([r["activations"] for r in two["most_positive_activation_records"][:3]])
    r = _corrcoef(x, y)
    with open_reader(cache) as store:
        related = store.related_neurons(NeuronId(0, 1), RelatedNeuronKind.CORRELATED)
        assert store.related_neurons(NeuronId(0, 0), RelatedNeuronKind.CORRELATED) == []
    assert r > 0.1  # the fixture's shared texts correlate (positive pairs are the ones kept)
    assert [n.neuron for n in related] == [NeuronId(0, 2)]
    assert related[0].strength == pytest.approx(r, abs=1e-5)


def test_a_stopped_import_resumes_from_the_blocks_it_read(openai_folder, tmp_path, imported):
    cache = tmp_path / "resumed.duckdb"
    calls = []

    def stop_on_write(description: str, total: int):
        def tick(done: int) -> None:
            calls.append(description)
            if description == "write":
                raise KeyboardInterrupt

        return tick

    with pytest.raises(KeyboardInterrupt):
        import_openai(openai_folder, cache, block_size=2, progress=stop_on_write)
    assert not cache.exists() and work_folder(cache).exists()
    summary = import_openai(openai_folder, cache, block_size=2)
    assert summary.blocks_read == 0 and summary.blocks_resumed == len([c for c in calls if c == "read"])
    with open_reader(cache) as first, open_reader(imported[0]) as second:
        for neuron in second.neuron_ids():
            a, b = first.neuron_excerpts(neuron), second.neuron_excerpts(neuron)
            assert [(e.kind, e.rank, e.split, e.excerpt.tokens, e.activations) for e in a] == \
                [(e.kind, e.rank, e.split, e.excerpt.tokens, e.activations) for e in b]


# --- re-scoring --------------------------------------------------------------------------------------------------


def test_score_imported_recomputes_published_and_adds_our_simulator(imported, tmp_path, capsys):
    cache = tmp_path / "copy.duckdb"
    copy_cache(imported[0], cache)
    assert main(["score", str(cache), "--neurons", "0:0-1", "--imported"]) == 0
    out = capsys.readouterr().out
    with open_reader(cache) as store:
        records = store.explanations(NeuronId(0, 0))
        assert len(records) == 2  # both imported explanations of 0:0, each re-scored below
        for record in records:
            scores = store.explanation_scores(record.explanation_id)
            assert set(scores) == {IMPORTED_SIMULATOR, "baseline"}
            assert scores["baseline"].tokens == VALID * LENGTH
            assert f"{record.score_all:.2f}" in out
            assert len(store.simulations(record.explanation_id, "baseline")) == VALID
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("0:0")]
    assert len(lines) == 2 and all(line[2] == line[3] for line in lines)  # published == recomputed


# --- export and round trip ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _OpenAIActivationRecord:
    tokens: list[str]
    activations: list[float]


@dataclasses.dataclass
class _OpenAINeuronId:
    layer_index: int
    neuron_index: int


@dataclasses.dataclass
class _OpenAINeuronRecord:
    neuron_id: _OpenAINeuronId
    random_sample: list = dataclasses.field(default_factory=list)
    random_sample_by_quantile: list | None = None
    quantile_boundaries: list | None = None
    mean: float | None = math.nan
    variance: float | None = math.nan
    skewness: float | None = math.nan
    kurtosis: float | None = math.nan
    most_positive_activation_records: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _OpenAISequenceSimulation:
    tokens: list[str]
    expected_activations: list[float]
    activation_scale: str
    distribution_values: list
    distribution_probabilities: list
    uncalibrated_simulation: Any = None


@dataclasses.dataclass
class _OpenAIScoredSequenceSimulation:
    simulation: _OpenAISequenceSimulation
    true_activations: list[float]
    ev_correlation_score: float
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None


@dataclasses.dataclass
class _OpenAIScoredSimulation:
    scored_sequence_simulations: list
    ev_correlation_score: float | None = None
    rsquared_score: float | None = None
    absolute_dev_explained_score: float | None = None


@dataclasses.dataclass
class _OpenAIScoredExplanation:
    explanation: str
    scored_simulation: _OpenAIScoredSimulation


@dataclasses.dataclass
class _OpenAINeuronSimulationResults:
    neuron_id: _OpenAINeuronId
    scored_explanations: list


OPENAI_CLASSES = {cls.__name__.removeprefix("_OpenAI"): cls for cls in (
    _OpenAIActivationRecord, _OpenAINeuronId, _OpenAINeuronRecord, _OpenAISequenceSimulation,
    _OpenAIScoredSequenceSimulation, _OpenAIScoredSimulation, _OpenAIScoredExplanation,
    _OpenAINeuronSimulationResults)}


def openai_loads(text: str) -> Any:
    """A loader written from OpenAI's dataclass definitions (as fast_dataclasses.loads resolves them): each
    object becomes the class its dataclass_name names, built with exactly its fields (an unknown or a missing
    field raises TypeError, as in their loader)."""

    def hook(obj: dict[str, Any]) -> Any:
        name = obj.pop("dataclass_name", None)
        return OPENAI_CLASSES[name](**obj) if name is not None else obj

    return json.loads(text, object_hook=hook)


def _loaded_files(folder: Path) -> tuple[dict[tuple[int, int], Any], dict[tuple[int, int], Any]]:
    records = {}
    for path in sorted((folder / "collated-activations").glob("*/*.json")):
        record = openai_loads(path.read_text())
        assert isinstance(record, _OpenAINeuronRecord)
        records[(int(path.parent.name), int(path.stem))] = record
    explanations = {}
    for path in sorted((folder / "explanations").glob("*/*.jsonl")):
        lines = [line for line in path.read_text().splitlines() if line]
        assert len(lines) == 1  # OpenAI's async reader asserts exactly one line
        results = openai_loads(lines[0])
        assert isinstance(results, _OpenAINeuronSimulationResults)
        explanations[(int(path.parent.name), int(path.stem))] = results
    return records, explanations


def _snapshot(cache: Path) -> dict[NeuronId, Any]:
    with open_reader(cache) as store:
        found = {}
        for neuron in store.neuron_ids():
            stats = store.neuron_stats(neuron)
            assert stats is not None
            found[neuron] = {
                "excerpts": [(e.kind, e.rank, e.quantile_bin, e.split, e.excerpt.tokens,
                              tuple(round(a, 5) for a in e.activations))
                             for e in store.neuron_excerpts(neuron) if e.kind != ExcerptKind.BOTTOM],
                "moments": tuple(round(v, 6) for v in (stats.mean, stats.variance, stats.skewness, stats.kurtosis,
                                                       stats.max_activation)),
                "quantile_edges": tuple(round(v, 5) for v in stats.quantile_edges[1:-1]),
                "explanations": sorted((r.text, round(r.score_all or 0, 6), len(store.simulations(r.explanation_id)))
                                       for r in store.explanations(neuron)),
            }
        return found


def test_export_loads_with_openai_dataclasses_and_round_trips(imported, tmp_path, capsys):
    cache, _ = imported
    folder = tmp_path / "export"
    assert main(["export", str(cache), "--format", "openai", str(folder), "--quiet"]) == 0
    records, explanations = _loaded_files(folder)
    assert set(records) == {(0, 0), (0, 1), (0, 2), (1, 0)} and set(explanations) == {(0, 0), (0, 1)}
    assert len(records[(0, 0)].random_sample_by_quantile) == 5 and len(records[(0, 0)].quantile_boundaries) == 4
    first = explanations[(0, 0)].scored_explanations[0].scored_simulation
    assert first.ev_correlation_score == pytest.approx(pooled_from(first), abs=1e-6)  # float32 storage
    again = tmp_path / "again.duckdb"
    assert main(["import-openai", str(folder), "--cache", str(again), "--quiet"]) == 0
    assert _snapshot(again) == _snapshot(cache)


def pooled_from(simulation: _OpenAIScoredSimulation) -> float:
    """OpenAI's aggregate: np.corrcoef over all sequences' tokens concatenated."""
    truth = [v for s in simulation.scored_sequence_simulations for v in s.true_activations]
    expected = [v for s in simulation.scored_sequence_simulations for v in s.simulation.expected_activations]
    return _corrcoef(truth, expected)


# --- bad input on the command line -------------------------------------------------------------------------------


def test_bad_folders_and_existing_caches_get_one_line(tmp_path, imported, openai_folder, capsys):
    for args, fragment in (
        (["import-openai", str(tmp_path), "--cache", str(tmp_path / "x.duckdb")], "no LAYER/NEURON.json files"),
        (["import-openai", str(openai_folder), "--cache", str(imported[0])], "already exists; add --force"),
        (["import-openai", str(openai_folder), "--cache", str(tmp_path / "x.duckdb"), "--layers", "7"],
         "no neuron files in layers 7"),
        (["export", str(imported[0]), "--format", "openai", str(tmp_path / "e"), "--neurons", "9:0"],
         "out of range"),
        (["score", str(imported[0]), "--neurons", "0:0"], "--imported"),
    ):
        assert main(args) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], errors
    assert not (tmp_path / "x.duckdb").exists()
    # and as a user runs it: one line, no traceback
    result = subprocess.run([sys.executable, "-m", "core", "import-openai", str(tmp_path / "nowhere"), "--cache",
                             str(tmp_path / "x.duckdb")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "is not a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_named_neurons_are_imported_and_a_missing_one_reported(openai_folder, tmp_path, capsys):
    cache = tmp_path / "two.duckdb"
    assert main(["import-openai", str(openai_folder), "--cache", str(cache), "--neurons", "0:0,0:9", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "imported 1 neurons" in out and "0:9  0/9.json: missing" in out
    with open_reader(cache) as store:
        assert store.neuron_ids() == [NeuronId(0, 0)]
        assert len(store.explanations(NeuronId(0, 0))) == 2

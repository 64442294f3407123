"""OpenAI's neuron file format, read and written (no cache, no model: plain data in, plain data out).

The files OpenAI published for GPT-2 XL (and the ones `export --format openai` writes) hold the JSON form of the
dataclasses of openai/automated-interpretability: `NeuronRecord` (neuron_explainer/activations/activations.py) per
`LAYER/NEURON.json`, and `NeuronSimulationResults` (neuron_explainer/explanations/explanations.py) as the single
line of `LAYER/NEURON.jsonl`. Every JSON object carries a `dataclass_name` key naming its class; older files may
lack it, in which case an object is matched by its field names (as OpenAI's own loader does). This module knows
the field names, which are required, and OpenAI's split and scoring rules; the code is ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.score import pearson
from core.types import ExcerptKind, Split, random_split, top_split

# --- the dataclasses' fields: name -> (all fields, required fields) ---------------------------------------------

DATACLASS_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ActivationRecord": (frozenset({"tokens", "activations"}), frozenset({"tokens", "activations"})),
    "NeuronId": (frozenset({"layer_index", "neuron_index"}), frozenset({"layer_index", "neuron_index"})),
    "NeuronRecord": (
        frozenset({"neuron_id", "random_sample", "random_sample_by_quantile", "quantile_boundaries", "mean",
                   "variance", "skewness", "kurtosis", "most_positive_activation_records"}),
        frozenset({"neuron_id"}),
    ),
    "SequenceSimulation": (
        frozenset({"tokens", "expected_activations", "activation_scale", "distribution_values",
                   "distribution_probabilities", "uncalibrated_simulation"}),
        frozenset({"tokens", "expected_activations", "activation_scale", "distribution_values",
                   "distribution_probabilities"}),
    ),
    "ScoredSequenceSimulation": (
        frozenset({"simulation", "true_activations", "ev_correlation_score", "rsquared_score",
                   "absolute_dev_explained_score"}),
        frozenset({"simulation", "true_activations", "ev_correlation_score"}),
    ),
    "ScoredSimulation": (
        frozenset({"scored_sequence_simulations", "ev_correlation_score", "rsquared_score",
                   "absolute_dev_explained_score"}),
        frozenset({"scored_sequence_simulations"}),
    ),
    "ScoredExplanation": (
        frozenset({"explanation", "scored_simulation"}), frozenset({"explanation", "scored_simulation"}),
    ),
    "NeuronSimulationResults": (
        frozenset({"neuron_id", "scored_explanations"}), frozenset({"neuron_id", "scored_explanations"}),
    ),
}
"""Field names of each dataclass OpenAI's files hold (besides `dataclass_name`), and those without a default."""

NORMALIZED_SCALE = "simulated_normalized_activations"
"""`activation_scale` of a simulation on the simulator's 0-10 scale (OpenAI's ActivationScale)."""
ACTIVATION_SCALES = (NORMALIZED_SCALE, "neuron_activations")

TOP_SPLITS = ("train", "calibration", "valid", "test")
"""OpenAI's splits of the top-activating records, interleaved: record i is TOP_SPLITS[i % 4]."""
RANDOM_SPLITS = ("calibration", "valid", "test")
"""OpenAI's splits of the random sample, interleaved: record i is RANDOM_SPLITS[i % 3]."""

SPLIT_MAP: dict[str | None, Split] = {
    "train": Split.EXPLAIN,
    "calibration": Split.CALIBRATE,
    "valid": Split.SCORE,
    "test": Split.VIEW,
    None: Split.VIEW,
}
"""OpenAI's split -> ours. train is what GPT-4 explained from, valid what its explanations were scored on; test
(kept for evaluations that cannot use valid) and records past the last whole round of splits are shown only."""

SIDECAR = "neuron-atlas.json"
"""File our exports write beside collated-activations/ and explanations/: where the files came from and the
split rule their record order follows (OpenAI's own files have none)."""
SPLIT_RULE_OPENAI = "openai"
"""Records are in OpenAI's order and carry OpenAI's interleaved splits (OpenAI's files, or an imported cache)."""
SPLIT_RULE_OURS = "neuron-atlas"
"""Records are in our rank order and carry our splits (core.types.top_split / random_split)."""

QUANTILE_LISTS = 5
"""random_sample_by_quantile holds 5 lists: the bins [0, .5], [.5, .9], [.9, .99], [.99, .999], [.999, 1]."""


class FormatError(ValueError):
    """A file that is not (or not all of) one of OpenAI's dataclasses; the message says what is wrong."""


# --- plain data ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationRecord:
    """One excerpt: its tokens (as text) and the neuron's raw activation on each."""

    tokens: tuple[str, ...]
    activations: np.ndarray
    """float32, one per token."""

    @property
    def max_activation(self) -> float:
        return float(self.activations.max()) if self.activations.size else 0.0


@dataclass(frozen=True)
class NeuronRecord:
    """What a collated-activations file holds for one neuron."""

    layer: int
    neuron: int
    top: tuple[ActivationRecord, ...]
    """most_positive_activation_records, highest maximum first."""
    random: tuple[ActivationRecord, ...]
    """random_sample: uniform over the dataset, drawn independently for each neuron."""
    quantile_samples: tuple[tuple[ActivationRecord, ...], ...] | None
    """random_sample_by_quantile: one tuple per bin (5 in OpenAI's files), None when absent."""
    quantile_boundaries: tuple[float, ...] | None
    """The 4 per-excerpt-maximum values between those bins, None when absent."""
    mean: float | None
    variance: float | None
    skewness: float | None
    kurtosis: float | None


@dataclass(frozen=True)
class ScoredSequence:
    """One excerpt as OpenAI's simulator saw it, with the truth and the per-excerpt score."""

    tokens: tuple[str, ...]
    expected_activations: np.ndarray
    """float64, the simulator's expected value per token (on `activation_scale`)."""
    activation_scale: str
    true_activations: np.ndarray
    """float64, raw activations."""
    ev_correlation_score: float | None
    distribution_values: tuple[tuple[float, ...], ...] = ()
    """Per token, the values of the simulator's distribution (not read on import; written empty by our export)."""
    distribution_probabilities: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class ScoredExplanation:
    """An explanation with the sequences it was simulated on and the pooled score stored with it."""

    text: str
    sequences: tuple[ScoredSequence, ...]
    ev_correlation_score: float | None
    """Pearson r over every token of every sequence together (OpenAI's aggregate), None when undefined."""


@dataclass(frozen=True)
class NeuronExplanations:
    """What an explanations file holds for one neuron."""

    layer: int
    neuron: int
    explanations: tuple[ScoredExplanation, ...]


# --- reading ------------------------------------------------------------------------------------------------------


def read_json_file(path: Path) -> Any:
    """The JSON value of a .json file, or the first non-empty line of a .jsonl file; FormatError if unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read it ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("is not UTF-8 text (not one of OpenAI's JSON files)") from None
    if path.suffix == ".jsonl":
        text = next((line for line in text.splitlines() if line.strip()), "")
    if not text.strip():
        raise FormatError("is empty (a download that failed? fetch it again)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg.startswith("Unterminated") or error.pos >= len(text.rstrip()) - 1:
            raise FormatError(f"is truncated (it ends at character {len(text):,} inside the JSON; fetch it again)"
                              ) from None
        raise FormatError(f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None


def _fields(obj: Any, name: str, where: str) -> dict[str, Any]:
    """`obj` checked to be the JSON form of dataclass `name` (by dataclass_name, else by field names)."""
    if not isinstance(obj, dict):
        raise FormatError(f"{where} should be a {name} object but is a {type(obj).__name__}")
    declared = obj.get("dataclass_name")
    if declared is not None and declared != name:
        raise FormatError(f"{where} is a {declared}, not a {name}: not the file this folder should hold")
    fields, required = DATACLASS_FIELDS[name]
    present = set(obj) - {"dataclass_name"}
    unknown = present - fields
    if unknown:
        raise FormatError(f"{where} has field(s) {', '.join(sorted(unknown))} that OpenAI's {name} does not: "
                          "a file of another version of the format")
    missing = required - present
    if missing:
        raise FormatError(f"{where} lacks {', '.join(sorted(missing))}: a file of another version of {name}, "
                          "or a damaged one")
    return obj


def _number(value: Any, where: str, *, optional: bool = True) -> float | None:
    """A JSON number as float; None (null, or NaN as orjson writes it) when optional."""
    if value is None:
        if optional:
            return None
        raise FormatError(f"{where} is null; a number is needed")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"{where} should be a number, not {type(value).__name__}")
    value = float(value)
    return value if math.isfinite(value) else None


def _vector(value: Any, where: str) -> np.ndarray:
    """A JSON list of finite numbers as float64."""
    if not isinstance(value, list):
        raise FormatError(f"{where} should be a list of numbers")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FormatError(f"{where} holds something that is not a number") from None
    if array.ndim != 1 or not np.isfinite(array).all():
        raise FormatError(f"{where} should be a flat list of finite numbers")
    return array


def _tokens(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise FormatError(f"{where} should be a list of token strings")
    return tuple(value)


def _record(obj: Any, where: str) -> ActivationRecord:
    fields = _fields(obj, "ActivationRecord", where)
    tokens = _tokens(fields["tokens"], f"{where}.tokens")
    activations = _vector(fields["activations"], f"{where}.activations")
    if len(tokens) != activations.size:
        raise FormatError(f"{where} has {len(tokens)} tokens but {activations.size} activations")
    if not tokens:
        raise FormatError(f"{where} has no tokens")
    return ActivationRecord(tokens, activations.astype(np.float32))


def _records(value: Any, where: str) -> tuple[ActivationRecord, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FormatError(f"{where} should be a list of ActivationRecords")
    return tuple(_record(item, f"{where}[{i}]") for i, item in enumerate(value))


def _neuron_id(obj: Any, where: str) -> tuple[int, int]:
    fields = _fields(obj, "NeuronId", where)
    layer, neuron = fields["layer_index"], fields["neuron_index"]
    if not (isinstance(layer, int) and isinstance(neuron, int)) or isinstance(layer, bool) or layer < 0 or neuron < 0:
        raise FormatError(f"{where} should hold two whole numbers, layer_index and neuron_index")
    return layer, neuron


def parse_neuron_record(obj: Any) -> NeuronRecord:
    """A NeuronRecord from the JSON of a collated-activations file (FormatError with the reason otherwise)."""
    fields = _fields(obj, "NeuronRecord", "the file")
    layer, neuron = _neuron_id(fields["neuron_id"], "neuron_id")
    quantiles = fields.get("random_sample_by_quantile")
    samples: tuple[tuple[ActivationRecord, ...], ...] | None = None
    if quantiles is not None:
        if not isinstance(quantiles, list):
            raise FormatError("random_sample_by_quantile should be a list of lists of ActivationRecords")
        samples = tuple(_records(q, f"random_sample_by_quantile[{i}]") for i, q in enumerate(quantiles))
    boundaries = fields.get("quantile_boundaries")
    bounds: tuple[float, ...] | None = None
    if boundaries is not None:
        bounds = tuple(float(v) for v in _vector(boundaries, "quantile_boundaries"))
        if samples is not None and len(bounds) != len(samples) - 1:
            raise FormatError(f"quantile_boundaries has {len(bounds)} values for {len(samples)} quantile samples; "
                              f"{len(samples) - 1} are needed")
    return NeuronRecord(
        layer=layer,
        neuron=neuron,
        top=_records(fields.get("most_positive_activation_records"), "most_positive_activation_records"),
        random=_records(fields.get("random_sample"), "random_sample"),
        quantile_samples=samples,
        quantile_boundaries=bounds,
        mean=_number(fields.get("mean"), "mean"),
        variance=_number(fields.get("variance"), "variance"),
        skewness=_number(fields.get("skewness"), "skewness"),
        kurtosis=_number(fields.get("kurtosis"), "kurtosis"),
    )


def _check_distribution(value: Any, where: str, length: int) -> None:
    """The simulator's per-token distributions are checked for shape only: the cache does not keep them."""
    if not isinstance(value, list) or (value and (len(value) != length or not isinstance(value[0], list))):
        raise FormatError(f"{where} should be a list with one list of numbers per token ({length})")


def _scored_sequence(obj: Any, where: str) -> ScoredSequence:
    fields = _fields(obj, "ScoredSequenceSimulation", where)
    sim = _fields(fields["simulation"], "SequenceSimulation", f"{where}.simulation")
    tokens = _tokens(sim["tokens"], f"{where}.simulation.tokens")
    expected = _vector(sim["expected_activations"], f"{where}.simulation.expected_activations")
    truth = _vector(fields["true_activations"], f"{where}.true_activations")
    if not (len(tokens) == expected.size == truth.size):
        raise FormatError(f"{where} has {len(tokens)} tokens, {expected.size} expected and {truth.size} true "
                          "activations; they should be equal")
    scale = sim["activation_scale"]
    if scale not in ACTIVATION_SCALES:
        raise FormatError(f"{where}.simulation.activation_scale is {scale!r}, not one of "
                          f"{', '.join(ACTIVATION_SCALES)}")
    _check_distribution(sim["distribution_values"], f"{where}.simulation.distribution_values", len(tokens))
    _check_distribution(sim["distribution_probabilities"], f"{where}.simulation.distribution_probabilities",
                        len(tokens))
    return ScoredSequence(
        tokens=tokens,
        expected_activations=expected,
        activation_scale=scale,
        true_activations=truth,
        ev_correlation_score=_number(fields["ev_correlation_score"], f"{where}.ev_correlation_score"),
    )


def parse_simulation_results(obj: Any) -> NeuronExplanations:
    """NeuronExplanations from the JSON line of an explanations file (FormatError with the reason otherwise)."""
    fields = _fields(obj, "NeuronSimulationResults", "the file")
    layer, neuron = _neuron_id(fields["neuron_id"], "neuron_id")
    items = fields["scored_explanations"]
    if not isinstance(items, list):
        raise FormatError("scored_explanations should be a list of ScoredExplanations")
    explanations = []
    for i, item in enumerate(items):
        where = f"scored_explanations[{i}]"
        scored = _fields(item, "ScoredExplanation", where)
        text = scored["explanation"]
        if not isinstance(text, str):
            raise FormatError(f"{where}.explanation should be text")
        simulation = _fields(scored["scored_simulation"], "ScoredSimulation", f"{where}.scored_simulation")
        sequences = simulation["scored_sequence_simulations"]
        if not isinstance(sequences, list):
            raise FormatError(f"{where}.scored_simulation.scored_sequence_simulations should be a list")
        explanations.append(ScoredExplanation(
            text=text,
            sequences=tuple(_scored_sequence(s, f"{where}.scored_sequence_simulations[{j}]")
                            for j, s in enumerate(sequences)),
            ev_correlation_score=_number(simulation.get("ev_correlation_score"),
                                         f"{where}.scored_simulation.ev_correlation_score"),
        ))
    return NeuronExplanations(layer, neuron, tuple(explanations))


# --- OpenAI's rules -----------------------------------------------------------------------------------------------


def openai_split(index: int, count: int, splits: Sequence[str]) -> str | None:
    """OpenAI's split of record `index` of `count` (get_slices_for_splits with n_examples_per_split left at its
    default, count // len(splits)): interleaved, and None for records past the last whole round."""
    per_split = count // len(splits)
    return splits[index % len(splits)] if index < per_split * len(splits) else None


def record_split(kind: ExcerptKind, index: int, count: int, rule: str = SPLIT_RULE_OPENAI) -> Split:
    """Our split of an imported record: OpenAI's split mapped by SPLIT_MAP, or ours when the files are our own
    export of a cache we built (quantile samples are shown only either way)."""
    if rule == SPLIT_RULE_OURS:
        if kind == ExcerptKind.TOP:
            return top_split(index)
        return random_split(index) if kind == ExcerptKind.RANDOM else Split.VIEW
    if kind == ExcerptKind.TOP:
        return SPLIT_MAP[openai_split(index, count, TOP_SPLITS)]
    if kind == ExcerptKind.RANDOM:
        return SPLIT_MAP[openai_split(index, count, RANDOM_SPLITS)]
    return Split.VIEW


def pooled_ev_correlation(sequences: Sequence[ScoredSequence]) -> float | None:
    """OpenAI's aggregate score: Pearson r between true and expected activations of every token of every
    sequence concatenated (not a mean of per-sequence scores); None where np.corrcoef would give NaN."""
    if not sequences:
        return None
    truth = np.concatenate([s.true_activations for s in sequences])
    expected = np.concatenate([s.expected_activations for s in sequences])
    return pearson(truth, expected)


# --- writing ------------------------------------------------------------------------------------------------------


def _json_number(value: float | None) -> float | None:
    """NaN and None become null, as OpenAI's orjson writer does."""
    return None if value is None or not math.isfinite(value) else float(value)


def _record_json(record: ActivationRecord) -> dict[str, Any]:
    return {"dataclass_name": "ActivationRecord", "tokens": list(record.tokens),
            "activations": [float(v) for v in record.activations]}


def _neuron_id_json(layer: int, neuron: int) -> dict[str, Any]:
    return {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": neuron}


def neuron_record_json(record: NeuronRecord) -> dict[str, Any]:
    """The JSON object of a collated-activations file for this record (every object with its dataclass_name)."""
    return {
        "dataclass_name": "NeuronRecord",
        "neuron_id": _neuron_id_json(record.layer, record.neuron),
        "random_sample": [_record_json(r) for r in record.random],
        "random_sample_by_quantile": None if record.quantile_samples is None
        else [[_record_json(r) for r in bin_records] for bin_records in record.quantile_samples],
        "quantile_boundaries": None if record.quantile_boundaries is None else list(record.quantile_boundaries),
        "mean": _json_number(record.mean),
        "variance": _json_number(record.variance),
        "skewness": _json_number(record.skewness),
        "kurtosis": _json_number(record.kurtosis),
        "most_positive_activation_records": [_record_json(r) for r in record.top],
    }


def _sequence_json(sequence: ScoredSequence) -> dict[str, Any]:
    return {
        "dataclass_name": "ScoredSequenceSimulation",
        "simulation": {
            "dataclass_name": "SequenceSimulation",
            "tokens": list(sequence.tokens),
            "expected_activations": [float(v) for v in sequence.expected_activations],
            "activation_scale": sequence.activation_scale,
            "distribution_values": [list(v) for v in sequence.distribution_values],
            "distribution_probabilities": [list(p) for p in sequence.distribution_probabilities],
            "uncalibrated_simulation": None,
        },
        "true_activations": [float(v) for v in sequence.true_activations],
        "ev_correlation_score": _json_number(sequence.ev_correlation_score),
        "rsquared_score": None,
        "absolute_dev_explained_score": None,
    }


def simulation_results_json(results: NeuronExplanations) -> dict[str, Any]:
    """The JSON object of the single line of an explanations file."""
    return {
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": _neuron_id_json(results.layer, results.neuron),
        "scored_explanations": [
            {
                "dataclass_name": "ScoredExplanation",
                "explanation": e.text,
                "scored_simulation": {
                    "dataclass_name": "ScoredSimulation",
                    "scored_sequence_simulations": [_sequence_json(s) for s in e.sequences],
                    "ev_correlation_score": _json_number(e.ev_correlation_score),
                    "rsquared_score": None,
                    "absolute_dev_explained_score": None,
                },
            }
            for e in results.explanations
        ],
    }


def dumps(obj: Any) -> str:
    """Compact JSON as in OpenAI's files (NaN was mapped to null before; a stray NaN is an error, not a token)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

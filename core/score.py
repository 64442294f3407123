"""The score stage: how well an explanation predicts a neuron's activations.

Reads a neuron's held-out excerpts from the cache (SCORE split by default: top and random excerpts the explainer
never saw), has a simulator predict every token's activation from the explanation alone, and correlates prediction
with truth. Writes nothing: `score_explanation` is what the dashboard calls to score a person's text live, and the
explain stage stores what it returns.

The score is Pearson's r pooled over every token of the scoring excerpts (OpenAI's "top-and-random"), also
reported over the top excerpts only, the random ones only, and per excerpt. A constant prediction or a constant
truth has no correlation: it is None ("undefined"), never NaN.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core import prompts
from core.simulate import SimulationError, Simulator
from core.store import CacheReader
from core.types import ExcerptKind, ExcerptSimulation, NeuronExcerpt, NeuronId, Scores, Split

log = logging.getLogger(__name__)

MAX_EXPLANATION_CHARS = 100
"""Longest explanation kept: one phrase a person can read aloud (OpenAI's viewer: "the word 'ME'")."""

MAX_QUOTED_TOKENS = 5
"""Most quoted tokens an explanation may name: more is a lookup table, not an explanation."""

SCORED_KINDS = (ExcerptKind.TOP, ExcerptKind.RANDOM)
"""Excerpt kinds that are simulated and scored (OpenAI's top-and-random)."""

_CONSTANT = 1e-9
"""A series whose spread is at most this is treated as constant."""


class ScoreError(ValueError):
    """An explanation or neuron that cannot be scored; the message says what to do."""


@dataclass(frozen=True)
class ScoredExplanation:
    """An explanation simulated on a neuron's held-out excerpts and scored (nothing stored)."""

    neuron: NeuronId
    text: str
    simulator: str
    """Spec of the simulator that made the predictions, e.g. "baseline"."""
    split: Split
    """Which excerpts were simulated: SCORE for reported scores, CALIBRATE when choosing among candidates."""
    excerpts: tuple[ExcerptSimulation, ...]
    """Real and simulated activations of every token, top excerpts first."""
    scores: Scores
    """Correlations pooled over `excerpts`: all (top-and-random), top only, random only."""
    calibration: Scores | None = None
    """The same on the CALIBRATE excerpts when asked for (`score_explanation(..., calibrate=True)`): what lets a
    stored explanation compete for the neuron's best, which is never chosen on the SCORE excerpts."""


_ACTIVATION_NUMBERS = re.compile(
    r"\(\s*[-+]?\d+(?:[.,]\d+)?\s*\)"  # "(9.4)" after a token
    r"|\b(?:activations?|levels?|scores?|strength|values?|weights?)\s*(?:of|=|:|is|at|around|about|near|~)?\s*"
    r"[-+]?\d"  # "activation 7", "level: 3"
    r"|\b\d+(?:[.,]\d+)?\s*(?:/\s*10\b|out\s+of\s+10\b)",  # "9/10", "8 out of 10"
    re.IGNORECASE,
)
"""How activation numbers are written in explanations (quoted tokens are removed first: "10" is a token)."""


def readability_problem(text: str) -> str | None:
    """Why `text` is not an explanation a person can read aloud, as a message that says what to do; None if it is.

    The rule every explainer's output and every stored explanation meets: at most MAX_EXPLANATION_CHARS
    characters, no activation numbers, at most MAX_QUOTED_TOKENS quoted tokens."""
    text = text.strip()
    if not text:
        return "the explanation is empty: write what the neuron responds to, e.g. \"the word 'return'\""
    if len(text) > MAX_EXPLANATION_CHARS:
        return (f"the explanation is {len(text):,} characters long; the limit is {MAX_EXPLANATION_CHARS}: "
                "shorten it to one phrase, e.g. \"numbers in a list\"")
    quoted = prompts.QUOTED.findall(text)
    if len(quoted) > MAX_QUOTED_TOKENS:
        return (f"the explanation quotes {len(quoted)} tokens; the limit is {MAX_QUOTED_TOKENS}: "
                "name what they share instead (e.g. \"Python keywords\")")
    found = _ACTIVATION_NUMBERS.search(prompts.QUOTED.sub(" ", text))
    if found:
        return (f"the explanation states activation numbers ({found.group(0).strip()!r}): "
                "say it in words instead (\"mostly\", \"also\", \"weakly\")")
    return None


def is_readable(text: str) -> bool:
    """Whether `text` meets the readability rule (see `readability_problem`)."""
    return readability_problem(text) is None


def check_explanation(text: str) -> str:
    """The explanation stripped of edge whitespace; ScoreError with what to do if it breaks the readability rule
    (empty, too long, activation numbers, too many quoted tokens)."""
    text = (text or "").strip()
    problem = readability_problem(text)
    if problem:
        raise ScoreError(problem)
    return text


def pearson(truth: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> float | None:
    """Pearson correlation, or None when it is undefined (fewer than 2 values, or either side constant)."""
    return Truth(truth).pearson(predicted)


class Truth:
    """Real activations centred once, for the correlation of many predictions with them (the offline writer tries
    hundreds of phrases on the same excerpts); `pearson` is this with one prediction."""

    def __init__(self, truth: Sequence[float] | np.ndarray) -> None:
        x = np.asarray(truth, dtype=np.float64)
        self.size = x.size
        self._defined = x.size >= 2 and bool(np.isfinite(x).all())
        self._x = x - x.mean() if self._defined else x
        self._sx = float(np.sqrt((self._x * self._x).sum())) if self._defined else 0.0
        self._constant = self._defined and self._sx <= _CONSTANT * max(1.0, np.abs(self._x).max())

    def pearson(self, predicted: Sequence[float] | np.ndarray) -> float | None:
        """The correlation of `predicted` with these activations; None when undefined."""
        y = np.asarray(predicted, dtype=np.float64)
        if y.shape != self._x.shape:
            raise ValueError(f"truth has {self.size} values but the prediction has {y.size}")
        if not self._defined or not np.isfinite(y).all():
            return None
        y = y - y.mean()
        sy = float(np.sqrt((y * y).sum()))
        if self._constant or sy <= _CONSTANT * max(1.0, np.abs(y).max()):
            return None
        return min(1.0, max(-1.0, float((self._x * y).sum()) / (self._sx * sy)))


def score_simulations(excerpts: Sequence[ExcerptSimulation]) -> Scores:
    """Pooled correlations over all, top-only and random-only excerpts."""

    def pooled(chosen: list[ExcerptSimulation]) -> float | None:
        if not chosen:
            return None
        truth = np.concatenate([np.asarray(e.activations, dtype=np.float64) for e in chosen])
        predicted = np.concatenate([np.asarray(e.normalized_predictions, dtype=np.float64) for e in chosen])
        return pearson(truth, predicted)

    everything = list(excerpts)
    return Scores(
        all=pooled(everything),
        top=pooled([e for e in everything if e.kind == ExcerptKind.TOP]),
        random=pooled([e for e in everything if e.kind == ExcerptKind.RANDOM]),
        tokens=sum(len(e.tokens) for e in everything),
    )


def scoring_excerpts(store: CacheReader, neuron: NeuronId, split: Split = Split.SCORE) -> list[NeuronExcerpt]:
    """The neuron's top and random excerpts of one split (ScoreError when it has none)."""
    if split not in (Split.SCORE, Split.CALIBRATE):
        raise ScoreError(f"scores use the {Split.SCORE} or {Split.CALIBRATE} excerpts, not {split}")
    store.check_neuron(neuron)
    return _required(store.neuron_excerpts(neuron, kinds=SCORED_KINDS, splits=[split]), store, neuron, split)


def explaining_excerpts(store: CacheReader, neuron: NeuronId) -> dict[Split, list[NeuronExcerpt]]:
    """What explaining one neuron reads, in one query: the top excerpts of the explain split, the top and random
    excerpts of the calibrate and score splits (ScoreError when a split has none)."""
    store.check_neuron(neuron)
    found: dict[Split, list[NeuronExcerpt]] = {Split.EXPLAIN: [], Split.CALIBRATE: [], Split.SCORE: []}
    for excerpt in store.neuron_excerpts(neuron, kinds=SCORED_KINDS, splits=list(found)):
        if excerpt.split != Split.EXPLAIN or excerpt.kind == ExcerptKind.TOP:
            found[excerpt.split].append(excerpt)
    return {split: _required(excerpts, store, neuron, split) for split, excerpts in found.items()}


def _required(excerpts: list[NeuronExcerpt], store: CacheReader, neuron: NeuronId, split: Split
              ) -> list[NeuronExcerpt]:
    if not excerpts:
        raise ScoreError(f"neuron {neuron} has no {split} excerpts in {store.path}: rebuild the cache")
    return excerpts


def simulate_and_score(
    neuron: NeuronId, text: str, simulator: Simulator, excerpts: Sequence[NeuronExcerpt], split: Split
) -> ScoredExplanation:
    """Simulate `text` on these excerpts and score it (SimulationError when the simulator fails)."""
    predictions = simulator.simulate(text, [e.excerpt for e in excerpts])
    if len(predictions) != len(excerpts) or any(
        len(p) != len(e.activations) for p, e in zip(predictions, excerpts, strict=False)
    ):
        raise SimulationError(f"{simulator.spec} returned predictions that do not match the excerpts' tokens")
    simulations = []
    for excerpt, predicted in zip(excerpts, predictions, strict=True):
        simulations.append(
            ExcerptSimulation(
                excerpt_id=excerpt.excerpt.excerpt_id,
                kind=excerpt.kind,
                split=excerpt.split,
                tokens=excerpt.excerpt.tokens,
                activations=excerpt.activations,
                normalized_predictions=tuple(float(v) for v in predicted),
                score=pearson(excerpt.activations, predicted),
            )
        )
    ordered = tuple(sorted(simulations, key=lambda s: s.kind != ExcerptKind.TOP))
    return ScoredExplanation(neuron, text, simulator.spec, split, ordered, score_simulations(ordered))


def score_explanation(
    store: CacheReader, neuron: NeuronId, text: str, simulator: Simulator, *, split: Split = Split.SCORE,
    calibrate: bool = False,
) -> ScoredExplanation:
    """Simulate and score a free-text explanation of a neuron live, WITHOUT writing anything; with `calibrate` also
    on the CALIBRATE excerpts (for an explanation that will be stored and may become the neuron's best).

    Raises ScoreError for a text that breaks the readability rule or a neuron the cache lacks, and SimulationError
    (from core.simulate) when the simulator fails; an LLM simulator may raise core.llm.LLMError.
    """
    text = check_explanation(text)
    excerpts = scoring_excerpts(store, neuron, split)
    scored = simulate_and_score(neuron, text, simulator, excerpts, split)
    if not calibrate:
        return scored
    held_out = scoring_excerpts(store, neuron, Split.CALIBRATE)
    calibration = simulate_and_score(neuron, text, simulator, held_out, Split.CALIBRATE).scores
    return dataclasses.replace(scored, calibration=calibration)


def format_score(value: float | None, digits: int = 2) -> str:
    """A score for tables: "undefined" for None."""
    return "undefined" if value is None else f"{value:.{digits}f}"

"""Plain records passed between the pipeline's stages (record, explain, simulate, score, view).

Nothing here computes; the stages make these and the store turns them into rows and back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_NEURON_RE = re.compile(r"^\s*(\d+)\s*[:/.,]\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class NeuronId:
    """One MLP neuron: a hidden unit of a block's MLP, the input of its output projection."""

    layer: int
    """Block index, 0-based."""
    neuron: int
    """Index of the hidden unit inside the block's MLP, 0-based."""

    def __str__(self) -> str:
        return f"{self.layer}:{self.neuron}"

    @classmethod
    def parse(cls, text: str) -> NeuronId:
        """Read "LAYER:NEURON" (e.g. "3:42")."""
        match = _NEURON_RE.match(text)
        if not match:
            raise ValueError(f"not a neuron: {text!r}; write LAYER:NEURON, for example 3:42")
        return cls(int(match.group(1)), int(match.group(2)))


class ExcerptKind(StrEnum):
    """Why an excerpt is stored for a neuron."""

    TOP = "top"
    """Among the K excerpts with the highest maximum activation."""
    BOTTOM = "bottom"
    """Among the K excerpts with the lowest minimum activation (gated MLPs go negative)."""
    QUANTILE = "quantile"
    """A sample from one quantile bin of the per-excerpt maximum."""
    RANDOM = "random"
    """A uniform random excerpt of the corpus."""


class Split(StrEnum):
    """Which stage may read a (neuron, excerpt) pair; explain and score never share an excerpt."""

    EXPLAIN = "explain"
    """Shown to the explainer (top excerpts only)."""
    CALIBRATE = "calibrate"
    """Held out from explaining; used to pick the best of several candidate explanations."""
    SCORE = "score"
    """Held out from explaining and calibrating; the reported score uses only these."""
    VIEW = "view"
    """Shown in the viewer only (bottom excerpts, quantile samples)."""


QUANTILE_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.5), (0.5, 0.9), (0.9, 0.99), (0.99, 0.999))
"""Quantile bins of the per-excerpt maximum activation that samples are drawn from (as OpenAI's viewer)."""


def top_split(rank: int) -> Split:
    """Split of the top excerpt at this rank (0 = highest): even ranks explain, then calibrate and score alternate."""
    if rank % 2 == 0:
        return Split.EXPLAIN
    return Split.CALIBRATE if rank % 4 == 1 else Split.SCORE


def random_split(rank: int) -> Split:
    """Split of the random excerpt at this rank: calibrate and score alternate."""
    return Split.CALIBRATE if rank % 2 == 0 else Split.SCORE


@dataclass(frozen=True)
class Excerpt:
    """A fixed-length window of corpus tokens (no BOS: the recorder adds it when the model wants one)."""

    excerpt_id: int
    """Row id in the cache's excerpts table."""
    token_ids: tuple[int, ...]
    """Tokenizer ids, excerpt_len of them."""
    tokens: tuple[str, ...]
    """Each token decoded on its own, for display."""


@dataclass(frozen=True)
class NeuronExcerpt:
    """An excerpt as stored for one neuron, with that neuron's activation on every token."""

    neuron: NeuronId
    excerpt: Excerpt
    kind: ExcerptKind
    rank: int
    """Order within its kind: 0 is the highest max for top, the lowest min for bottom."""
    split: Split
    activations: tuple[float, ...]
    """Raw activation on each token, in the model's units (not normalized)."""
    quantile_bin: int | None = None
    """Index into QUANTILE_BINS for quantile samples, else None."""

    @property
    def max_activation(self) -> float:
        return max(self.activations)


@dataclass(frozen=True)
class NeuronStats:
    """Summary of one neuron's activations over every recorded token."""

    neuron: NeuronId
    max_activation: float
    min_activation: float
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    """Excess kurtosis (0 for a normal distribution)."""
    density: float
    """Share of tokens with activation above zero."""
    hist_edges: tuple[float, ...]
    """Histogram bin edges (len = len(hist_counts) + 1), raw units."""
    hist_counts: tuple[int, ...]
    """Tokens per histogram bin."""
    quantile_edges: tuple[float, ...]
    """Per-excerpt-max values at quantiles 0, 0.5, 0.9, 0.99, 0.999 and 1: the QUANTILE_BINS boundaries."""


@dataclass(frozen=True)
class TokenMean:
    """Mean activation of a neuron over every occurrence of one vocabulary token."""

    token_id: int
    token: str
    count: int
    """Occurrences of the token in the recorded corpus."""
    mean_activation: float


# --- what people write in the dashboard (NAME.notes.duckdb, written through core.store.NotesStore) ---


class Rating(StrEnum):
    """A person's verdict on an explanation."""

    RIGHT = "right"
    """The explanation says what the neuron does."""
    PARTLY = "partly"
    """Part of it is right, or it is too broad or too narrow."""
    WRONG = "wrong"
    """It does not describe the neuron."""


@dataclass(frozen=True)
class LiveSimulation:
    """The simulator's prediction for one scoring excerpt, made live in the dashboard."""

    excerpt_id: int
    normalized_predictions: tuple[float, ...]
    """Predicted activation of each token on the 0-10 scale."""
    score: float | None
    """Pearson correlation with the real activations on this excerpt alone; None when undefined."""


@dataclass(frozen=True)
class LiveScore:
    """An explanation text simulated and scored in the dashboard (kept so it is not computed twice)."""

    score_id: int
    neuron: NeuronId
    text: str
    simulator: str
    """Spec of the simulator that made the predictions, e.g. "baseline"."""
    score_all: float | None
    """Correlation pooled over the top and random scoring excerpts; None when undefined."""
    score_top: float | None
    """The same over the top scoring excerpts only."""
    score_random: float | None
    """The same over the random scoring excerpts only."""
    simulations: tuple[LiveSimulation, ...] = ()
    author_saw_score_excerpts: bool = True
    """Whether the text's author could have seen the scoring excerpts (the scoring page shows them): the score is
    then optimistic, is shown as such, and never picks the neuron's best explanation."""


@dataclass(frozen=True)
class Suggestion:
    """An explanation someone typed (or had an LLM generate) in the dashboard, with its live score."""

    suggestion_id: int
    neuron: NeuronId
    text: str
    author: str
    """The name typed beside it ("anonymous" when empty)."""
    source: str
    """"person", or the explainer spec when the dashboard generated it (e.g. "openai:gpt-4o-mini")."""
    created_at: str
    """ISO timestamp (UTC, seconds)."""
    score: LiveScore | None = None


@dataclass(frozen=True)
class HumanRating:
    """A person's rating of one explanation of one neuron."""

    rating_id: int
    neuron: NeuronId
    explanation_text: str
    explanation_ref: str
    """Which explanation was rated: "explanation:ID" (the cache), "suggestion:ID" (the notes) or ""."""
    score: float | None
    """The explanation's score shown when it was rated (None when it had none)."""
    rating: Rating
    note: str
    author: str
    created_at: str
    """ISO timestamp (UTC, seconds)."""


@dataclass(frozen=True)
class ClassShare:
    """The teacher's "show this neuron to the class": where the class is asked to look."""

    share_id: int
    """Grows with every share (a student follows each share once)."""
    neuron: NeuronId
    page: str
    """The page the teacher was on (a dashboard page name, e.g. "insights")."""
    created_at: str
    """ISO timestamp (UTC, seconds)."""


@dataclass(frozen=True)
class BoardSettings:
    """What the teacher set for one neuron's class board."""

    neuron: NeuronId
    open: bool = True
    """Whether students may add explanations and ratings (a closed board is still shown)."""
    pinned_suggestion: int | None = None
    """The suggestion shown first, whatever its score."""
    cleared_suggestions: int = 0
    """Suggestions with this id or lower are hidden from the board (cleared; kept in the notes)."""
    cleared_ratings: int = 0
    """Ratings with this id or lower are not counted on the board (cleared; kept in the notes)."""


@dataclass(frozen=True)
class Disagreement:
    """A neuron whose human ratings contradict its score (the home page lists these)."""

    neuron: NeuronId
    explanation_text: str
    score: float
    rated_right: int
    rated_partly: int
    rated_wrong: int


@dataclass(frozen=True)
class NeuronRow:
    """One neuron as listed by the dashboard's picker: its statistics and best explanation."""

    neuron: NeuronId
    max_activation: float
    min_activation: float
    density: float
    """Share of tokens with activation above zero."""
    explanation: str | None
    """Text of the best-scoring explanation, None when the neuron has none."""
    score: float | None
    """That explanation's top-and-random score, None when unscored."""
    made: bool = False
    """The explanation is not the command line's but one the notes keep (the dashboard's, made when the neuron was
    first viewed): lists mark it."""


@dataclass(frozen=True)
class LayerScores:
    """How well one layer's neurons are explained (the home page's chart)."""

    layer: int
    scored: int
    """Neurons of this layer with a scored explanation."""
    mean_score: float
    """Mean of each neuron's best top-and-random score."""
    median_score: float


# --- related tokens and related neurons (core/related.py; formulas in docs/related.md) ---


class RelatedTokenKind(StrEnum):
    """Which list of a neuron's related tokens."""

    ACTIVATION_TOP = "activation_top"
    """Highest mean activation over the recorded corpus (from the cache's token_means, with counts)."""
    ACTIVATION_BOTTOM = "activation_bottom"
    """Lowest mean activation over the recorded corpus."""
    INPUT_UP = "input_up"
    """Tokens whose embedding, alone at the MLP input, gives the highest neuron value."""
    INPUT_DOWN = "input_down"
    """The same, lowest value."""
    OUTPUT_UP = "output_up"
    """Tokens whose logits the neuron's output weights raise most (through the final norm gain)."""
    OUTPUT_DOWN = "output_down"
    """Tokens whose logits they lower most."""


class RelatedNeuronKind(StrEnum):
    """Which list of a neuron's related neurons."""

    UPSTREAM_POSITIVE = "upstream_positive"
    """Earlier-layer neurons whose output weights push this neuron's input up most."""
    UPSTREAM_NEGATIVE = "upstream_negative"
    """Earlier-layer neurons whose output weights push it down most."""
    DOWNSTREAM_POSITIVE = "downstream_positive"
    """Later-layer neurons this neuron's output weights push up most."""
    DOWNSTREAM_NEGATIVE = "downstream_negative"
    """Later-layer neurons it pushes down most."""
    CORRELATED = "correlated"
    """Neurons of any layer whose activations correlate most (Pearson, positive only) over a corpus sample."""


@dataclass(frozen=True)
class RelatedToken:
    """One vocabulary token related to a neuron."""

    token_id: int
    token: str
    """Display text of the token (spaces shown as spaces)."""
    value: float
    """activation_*: mean raw activation; input_*: the neuron's value (gated MLPs) or pre-activation (others)
    with the token's embedding alone at the MLP input; output_*: change of the token's logit per unit of
    activation, before the final norm's 1/rms scale."""
    count: int | None = None
    """Occurrences in the recorded corpus for activation_*; None for the weight-based kinds."""


@dataclass(frozen=True)
class RelatedNeuron:
    """One neuron related to another."""

    neuron: NeuronId
    strength: float
    """upstream/downstream: weight-path strength (see docs/related.md), signed; correlated: Pearson r."""


# --- explain, simulate, score (core/explain.py, simulate.py, score.py) -------------------------------------------


class ExplanationStatus(StrEnum):
    """Whether a neuron's explain-and-score run finished."""

    OK = "ok"
    """Explained, simulated and scored."""
    FAILED = "failed"
    """The explainer or the simulator failed; the reason is stored and the next run retries the neuron."""


@dataclass(frozen=True)
class Scores:
    """Pearson correlations between real and simulated activations, pooled over tokens; None means undefined
    (a constant prediction or a constant truth), never NaN."""

    all: float | None
    """Over every token of the top and random scoring excerpts together (OpenAI's "top-and-random")."""
    top: float | None
    """Over the tokens of the top excerpts only."""
    random: float | None
    """Over the tokens of the random excerpts only."""
    tokens: int
    """Tokens pooled for `all`."""


@dataclass(frozen=True)
class ExcerptSimulation:
    """One excerpt as a simulator saw it: real activations beside the simulated ones, token by token."""

    excerpt_id: int
    kind: ExcerptKind
    """TOP or RANDOM."""
    split: Split
    """CALIBRATE or SCORE (the stored and reported scores use SCORE only)."""
    tokens: tuple[str, ...]
    activations: tuple[float, ...]
    """Real activation of each token, raw units."""
    normalized_predictions: tuple[float, ...]
    """Simulated activation of each token on the 0-10 scale (an expected value, so fractional)."""
    score: float | None
    """Pearson correlation on this excerpt alone; None when undefined."""


@dataclass(frozen=True)
class ExplanationRecord:
    """One stored explanation of one neuron, with its scores on the SCORE-split excerpts."""

    explanation_id: int
    neuron: NeuronId
    text: str | None
    """The explanation; None when the explainer failed before writing one."""
    explainer: str
    """Spec that wrote it: "baseline", "local", "local:MODEL", "openai:MODEL", or "human" (typed by a person)."""
    model: str | None
    """The language model that wrote it (None for baseline and human)."""
    prompt_version: str | None
    """Version of the prompt (or, for baseline, the explanation format) that produced it (core.prompts)."""
    simulator: str
    """Spec of the simulator that scored it (and chose it among candidates)."""
    status: ExplanationStatus
    failure: str | None
    """Why it failed, when status is FAILED."""
    candidates: int
    """How many candidate explanations were generated; the best on the CALIBRATE excerpts was kept."""
    calibration_score: float | None
    """Its top-and-random score on the CALIBRATE excerpts (the choice among candidates), None if not computed."""
    created_at: str
    """ISO timestamp (UTC, seconds)."""
    score_all: float | None
    """Top-and-random score on the SCORE excerpts; None when undefined or not scored."""
    score_top: float | None
    score_random: float | None

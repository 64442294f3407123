"""What each dashboard page shows, read from the cache in one call: a view-model per page (the page draws it).

Each function takes a CacheReader (and, for what people wrote, the NotesQueries) and returns frozen records of
core/types.py, so the dashboard can cache a view for every session (st.cache_data, keyed by the cache files'
signature and the arguments) and `python -m core show` prints the same data. Nothing here formats text for people:
labels and titles belong to the pages.

| page | views |
|---|---|
| app.py (the frame) | info |
| pages/home.py | home, disagreements |
| pages/picker.py | neuron_list_on_view |
| pages/insights.py | insights, people, evidence, on_view_explanations |
| pages/scoring.py | scoring, people, simulation or live_simulation, on_view_explanations |
| pages/related.py | related, on_view_explanations |
| pages/try_text.py | stats, neuron_rows |
"""

from __future__ import annotations

from dataclasses import dataclass

from core.offline.evidence import TokenStat, fires_most, token_evidence
from core.store import CacheInfo, CacheReader, NotesQueries
from core.types import (
    QUANTILE_BINS,
    Disagreement,
    ExcerptKind,
    ExplanationRecord,
    ExplanationStatus,
    HumanRating,
    LayerScores,
    NeuronExcerpt,
    NeuronId,
    NeuronRow,
    NeuronStats,
    RelatedNeuron,
    RelatedNeuronKind,
    RelatedToken,
    RelatedTokenKind,
    Split,
    Suggestion,
)

HOME_LIST_LENGTH = 5
"""Neurons in each of the home page's best / worst / surprising lists."""

INSIGHTS_TOKEN_KINDS = (RelatedTokenKind.ACTIVATION_TOP, RelatedTokenKind.INPUT_UP, RelatedTokenKind.OUTPUT_UP,
                        RelatedTokenKind.OUTPUT_DOWN)
"""Related-token lists on the insights page."""

RELATED_TOKEN_KINDS = (RelatedTokenKind.INPUT_UP, RelatedTokenKind.INPUT_DOWN, RelatedTokenKind.OUTPUT_UP,
                       RelatedTokenKind.OUTPUT_DOWN)
"""Related-token lists on the related page (the weight-based ones)."""

RELATED_TOKENS_SHOWN = 15
"""Tokens per related-token list."""


# --- the frame, home and picker ---------------------------------------------------------------------------------


def info(reader: CacheReader) -> CacheInfo:
    """The cache's model, corpus, sizes and counts (the frame needs the layers and neurons per layer)."""
    return reader.info()


@dataclass(frozen=True)
class HomeView:
    """The cache in use and how well it is explained."""

    info: CacheInfo
    layer_scores: tuple[LayerScores, ...]
    best: tuple[NeuronRow, ...]
    worst: tuple[NeuronRow, ...]
    surprising: tuple[NeuronRow, ...]
    """The best explained neurons of the last third of the layers (deep yet well explained)."""


def home(reader: CacheReader, made_by: str | None = None) -> HomeView:
    """The home page's summary of the cache; with `made_by` (a source of the notes, which must be attached), the
    lists rank that source's explanations of neurons the command line did not explain with the rest."""
    summary = reader.info()

    def best(descending: bool, min_layer: int | None = None) -> tuple[NeuronRow, ...]:
        return tuple(reader.neuron_table(order="score", descending=descending, scored_only=True, min_layer=min_layer,
                                         limit=HOME_LIST_LENGTH, made_by=made_by))

    return HomeView(summary, tuple(reader.scores_by_layer()), best(True), best(False),
                    best(True, 2 * summary.layers // 3))


def home_on_view(reader: CacheReader, notes: NotesQueries) -> HomeView:
    """`home` with the explanations made when neurons were first viewed (held out as the command line's are:
    chosen on the CALIBRATE excerpts, scored on the SCORE ones) in its lists: what a class browsing found shows on
    the home page (a view of the notes too)."""
    from core.live import ON_VIEW_SOURCE

    return home(reader, ON_VIEW_SOURCE)


def disagreements(reader: CacheReader, notes: NotesQueries) -> tuple[Disagreement, ...]:
    """Rated explanations whose ratings contradict their score (the notes only)."""
    return tuple(notes.disagreements())


@dataclass(frozen=True)
class NeuronList:
    """One page of the picker's table."""

    count: int
    """Neurons matching the filter (the table shows at most `limit`)."""
    rows: tuple[NeuronRow, ...]
    limit: int


def neuron_list(
    reader: CacheReader, layer: int | None, search: str, order: str, descending: bool, limit: int,
    made_by: str | None = None,
) -> NeuronList:
    """Neurons of one layer (or all), searched by explanation text and sorted (a core.store.NEURON_ORDERS key);
    with `made_by`, that notes source's explanations fill the neurons without one (CacheReader.neuron_table)."""
    count = reader.count_neurons(layer=layer, search=search, made_by=made_by)
    rows = reader.neuron_table(layer=layer, search=search, order=order, descending=descending, limit=limit,
                               made_by=made_by)
    return NeuronList(count, tuple(rows), limit)


def neuron_list_on_view(
    reader: CacheReader, notes: NotesQueries, layer: int | None, search: str, order: str, descending: bool, limit: int
) -> NeuronList:
    """`neuron_list` with the explanations made when neurons were first viewed (the notes) filling the neurons the
    command line has not explained: searched, sorted and marked with the rest (a view of the notes too)."""
    from core.live import ON_VIEW_SOURCE

    return neuron_list(reader, layer, search, order, descending, limit, ON_VIEW_SOURCE)


# --- one neuron ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExcerptGroup:
    """Excerpts stored for one reason: a kind, and for quantile samples the bin (an index into QUANTILE_BINS)."""

    kind: ExcerptKind
    quantile_bin: int | None
    excerpts: tuple[NeuronExcerpt, ...]


@dataclass(frozen=True)
class InsightsView:
    """Everything recorded and explained about one neuron."""

    neuron: NeuronId
    stats: NeuronStats | None
    """None when the neuron was not recorded."""
    explanations: tuple[ExplanationRecord, ...]
    """Best first (core.store: finished and scored before unscored and failed)."""
    groups: tuple[ExcerptGroup, ...]
    """Top excerpts, each quantile bin from the highest, the random sample, the bottom excerpts."""
    tokens: tuple[tuple[RelatedTokenKind, tuple[RelatedToken, ...]], ...]
    """INSIGHTS_TOKEN_KINDS with their tokens (empty until computed)."""


def insights(reader: CacheReader, neuron: NeuronId) -> InsightsView:
    """The insights page's data for one neuron."""
    records = reader.neuron_excerpts(neuron)

    def group(kind: ExcerptKind, quantile_bin: int | None = None) -> ExcerptGroup:
        chosen = tuple(r for r in records if r.kind == kind and r.quantile_bin == quantile_bin)
        return ExcerptGroup(kind, quantile_bin, chosen)

    groups = (group(ExcerptKind.TOP),
              *(group(ExcerptKind.QUANTILE, index) for index in reversed(range(len(QUANTILE_BINS)))),
              group(ExcerptKind.RANDOM), group(ExcerptKind.BOTTOM))
    return InsightsView(neuron, reader.neuron_stats(neuron), tuple(reader.explanations(neuron)), groups,
                        related_tokens(reader, neuron, INSIGHTS_TOKEN_KINDS))


def related_tokens(
    reader: CacheReader, neuron: NeuronId, kinds: tuple[RelatedTokenKind, ...]
) -> tuple[tuple[RelatedTokenKind, tuple[RelatedToken, ...]], ...]:
    """The neuron's related tokens of these kinds, RELATED_TOKENS_SHOWN each."""
    found = reader.related_tokens_of_kinds(neuron, kinds, RELATED_TOKENS_SHOWN)
    return tuple((kind, tuple(found[kind])) for kind in kinds)


@dataclass(frozen=True)
class PeopleView:
    """What people wrote about one neuron in the dashboard."""

    suggestions: tuple[Suggestion, ...]
    """Best live score first."""
    ratings: tuple[HumanRating, ...]
    """Newest first."""


def people(reader: CacheReader, notes: NotesQueries, neuron: NeuronId) -> PeopleView:
    """Suggestions and ratings of one neuron (the notes only)."""
    return PeopleView(tuple(notes.suggestions(neuron)), tuple(notes.ratings(neuron)))


@dataclass(frozen=True)
class ScoringView:
    """A neuron's finished explanations with their scores."""

    neuron: NeuronId
    stats: NeuronStats | None
    explained: tuple[ExplanationRecord, ...]
    """Finished explanations with text, best first (chosen on the CALIBRATE excerpts)."""


def scoring(reader: CacheReader, neuron: NeuronId) -> ScoringView:
    """The scoring page's (and `python -m core show`'s) explanations of one neuron."""
    explained = tuple(e for e in reader.explanations(neuron) if e.status == ExplanationStatus.OK and e.text)
    return ScoringView(neuron, reader.neuron_stats(neuron), explained)


@dataclass(frozen=True)
class SimulatedExcerpt:
    """A scoring excerpt with real activations, and a simulation of it when there is one."""

    excerpt: NeuronExcerpt
    predictions: tuple[float, ...] | None
    """Simulated activation per token on the 0-10 scale; None when not simulated."""
    score: float | None
    """Correlation on this excerpt alone; None when undefined or not simulated."""


@dataclass(frozen=True)
class SimulationView:
    """Real against simulated activations on a neuron's SCORE-split excerpts, top ones first."""

    scale: float
    """The neuron's max activation: real activations are shown as 10 * activation / scale."""
    excerpts: tuple[SimulatedExcerpt, ...]

    @property
    def simulated(self) -> bool:
        """Whether any excerpt has a simulation."""
        return any(e.predictions is not None for e in self.excerpts)


def simulation(reader: CacheReader, neuron: NeuronId, explanation_id: int | None = None) -> SimulationView:
    """The scoring excerpts with a stored explanation's simulation (none when `explanation_id` is None)."""
    stored = reader.simulations(explanation_id) if explanation_id is not None else []
    return _simulation_view(reader, neuron, {s.excerpt_id: (s.normalized_predictions, s.score) for s in stored
                                             if s.split == Split.SCORE})


def live_simulation(reader: CacheReader, notes: NotesQueries, neuron: NeuronId, score_id: int) -> SimulationView:
    """The scoring excerpts with a live score's simulation (from the notes)."""
    live = notes.live_score_by_id(score_id)
    made = live.simulations if live else ()
    return _simulation_view(reader, neuron, {s.excerpt_id: (s.normalized_predictions, s.score) for s in made})


def _simulation_view(
    reader: CacheReader, neuron: NeuronId, predicted: dict[int, tuple[tuple[float, ...], float | None]]
) -> SimulationView:
    """The neuron's SCORE-split excerpts, top first, each with its prediction by excerpt id when there is one."""
    stats = reader.neuron_stats(neuron)
    real = reader.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP, ExcerptKind.RANDOM], splits=[Split.SCORE])
    excerpts = []
    for record in sorted(real, key=lambda r: (r.kind != ExcerptKind.TOP, r.rank)):
        predictions, score = predicted.get(record.excerpt.excerpt_id, (None, None))
        excerpts.append(SimulatedExcerpt(record, predictions, score))
    return SimulationView(max(stats.max_activation, 1e-9) if stats else 1.0, tuple(excerpts))


@dataclass(frozen=True)
class RelatedView:
    """A neuron's related neurons (with their best explanations) and related tokens."""

    best: NeuronRow | None
    """The neuron's own statistics and best explanation."""
    neurons: tuple[tuple[RelatedNeuronKind, tuple[RelatedNeuron, ...]], ...]
    """Every RelatedNeuronKind with its neurons, strongest first."""
    rows: dict[NeuronId, NeuronRow]
    """Best explanation of each related neuron."""
    tokens: tuple[tuple[RelatedTokenKind, tuple[RelatedToken, ...]], ...]
    """RELATED_TOKEN_KINDS with their tokens."""

    @property
    def computed(self) -> bool:
        """Whether `python -m core related` has filled the neuron lists."""
        return any(found for _, found in self.neurons)


def related(reader: CacheReader, neuron: NeuronId, limit: int) -> RelatedView:
    """The related page's data: `limit` neurons per kind."""
    of_kinds = reader.related_neurons_of_kinds(neuron, list(RelatedNeuronKind), limit)
    found = tuple((kind, tuple(of_kinds[kind])) for kind in RelatedNeuronKind)
    others = [r.neuron for _, group in found for r in group]
    rows = reader.neuron_rows([neuron, *others])
    return RelatedView(rows.get(neuron), found, rows, related_tokens(reader, neuron, RELATED_TOKEN_KINDS))


def stats(reader: CacheReader, neuron: NeuronId) -> NeuronStats | None:
    """A neuron's statistics (None when not recorded)."""
    return reader.neuron_stats(neuron)


def neuron_rows(reader: CacheReader, neurons: tuple[NeuronId, ...]) -> dict[NeuronId, NeuronRow]:
    """These neurons' statistics and best explanations."""
    return reader.neuron_rows(neurons)


# --- explanations made on view, and the evidence beside an explanation -----------------------------------------


def on_view_explanations(
    reader: CacheReader, notes: NotesQueries, neurons: tuple[NeuronId, ...]
) -> dict[NeuronId, Suggestion]:
    """The explanations the dashboard made by the offline default when these neurons were first viewed (the notes;
    core.live.explain_on_view makes them), by neuron."""
    from core.live import ON_VIEW_SOURCE

    return notes.suggestions_from(ON_VIEW_SOURCE, neurons)


def evidence(reader: CacheReader, neuron: NeuronId) -> tuple[TokenStat, ...]:
    """The tokens the neuron fires on most in the excerpts its explanations are written from, with levels and
    counts: evidence shown beside an explanation, never the explanation."""
    return tuple(token_evidence(reader, neuron))


def insights_evidence(view: InsightsView) -> tuple[TokenStat, ...]:
    """`evidence` from the excerpts an insights view holds already (the same table, without reading them again)."""
    return tuple(fires_most([r for group in view.groups if group.kind == ExcerptKind.TOP
                             for r in group.excerpts if r.split == Split.EXPLAIN]))

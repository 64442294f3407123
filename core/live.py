"""Live work asked for in the dashboard, without Streamlit: score a person's explanation now, generate one now (its
cost estimated first), run the model on a person's text.

Results are kept in the notes (core.store.NotesStore), never in the cache's results. Model work runs inside
`queue(label)`, a context manager the caller supplies (the dashboard's queue shows "queued" and lets one job run
at a time); the default runs at once. Every failure a person can cause or fix is a LiveError with one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.backends import BackendKind, BackendSpec, BackendSpecError, LLMSettings, wire
from core.store import CacheReader, NotesStore, StoreError
from core.types import (
    ExcerptKind,
    ExplanationStatus,
    LiveScore,
    LiveSimulation,
    NeuronId,
    Scores,
    Split,
    Suggestion,
)

if TYPE_CHECKING:
    from core.explain import ExplanationResult

log = logging.getLogger(__name__)

Queue = Callable[[str], AbstractContextManager[object]]
"""queue(label) -> a context manager around one job of model work."""


def run_now(label: str) -> AbstractContextManager[object]:
    """The default queue: no waiting."""
    return nullcontext()


class LiveError(Exception):
    """Live work that failed or cannot run here; the message is one line saying why."""


@dataclass(frozen=True)
class LiveBackend:
    """What a dashboard session's live work runs with (the sidebar's choice)."""

    spec: BackendSpec
    settings: LLMSettings = field(default_factory=LLMSettings)


@dataclass(frozen=True)
class Suggested:
    """A suggestion kept with its live score, and the neuron's best explanation scored by the same simulator."""

    suggestion: Suggestion
    current: LiveScore | None
    """The best stored explanation's live score (None when the neuron has none)."""


@dataclass(frozen=True)
class TextActivations:
    """One layer's neurons on a person's text."""

    tokens: tuple[str, ...]
    activations: np.ndarray
    """float32 [tokens, neurons_per_layer]."""
    cut: bool = False
    """The text was longer than the tokens read (only its beginning is here)."""


CHARS_PER_TOKEN_CAP = 32
"""Characters of a text read per token asked for: more than any tokenizer packs into one token, so cutting the text
there first changes nothing but spares tokenizing a pasted megabyte."""


SIMULATED_TOKENS_PER_TOKEN = 8
"""Completion tokens a chat simulator is assumed to write per excerpt token (a JSON value and punctuation), for the
cost shown before generating; an overestimate on purpose."""

_FAILURES: tuple[type[Exception], ...] = (StoreError, BackendSpecError)


def _failures() -> tuple[type[Exception], ...]:
    """The errors of live work that are reported to the person, not raised as bugs (imported late: they pull in
    the model and API modules)."""
    from core.llm import LLMError
    from core.models import ModelError
    from core.score import ScoreError
    from core.simulate import SimulationError, SimulatorSpecError

    return (*_FAILURES, LLMError, ModelError, ScoreError, SimulationError, SimulatorSpecError)


def score_text(
    reader: CacheReader,
    notes: NotesStore,
    neuron: NeuronId,
    text: str,
    backend: LiveBackend,
    queue: Queue = run_now,
    author_saw_score_excerpts: bool = True,
) -> LiveScore:
    """`text` simulated and scored on the neuron's scoring excerpts with the backend's simulator and kept in the
    notes (with whether its author could have seen those excerpts); the same text scored before with the same
    simulator is not scored again."""
    from core.score import score_explanation

    spec = str(backend.spec)
    found = notes.live_score(neuron, text, spec)
    if found is not None:
        return found
    try:
        with queue("Simulating and scoring"):
            simulator = wire(spec, settings=backend.settings, responses=notes.responses).simulator
            scored = score_explanation(reader, neuron, text, simulator)
    except _failures() as error:
        raise LiveError(f"Scoring failed: {error}") from error
    simulations = [LiveSimulation(s.excerpt_id, s.normalized_predictions, s.score) for s in scored.excerpts]
    return notes.add_live_score(neuron, text, spec, scored.scores, simulations, author_saw_score_excerpts)


def suggest(
    reader: CacheReader,
    notes: NotesStore,
    neuron: NeuronId,
    text: str,
    author: str,
    backend: LiveBackend,
    queue: Queue = run_now,
) -> Suggested:
    """Score a person's explanation live and keep it as a suggestion; the neuron's best explanation is scored by
    the same simulator too, so the two compare fairly. The person wrote theirs on the page that shows the scoring
    excerpts, so its score is kept as seen (optimistic); the stored explanation's explainer never saw them."""
    from core.score import readability_problem

    mine = score_text(reader, notes, neuron, text, backend, queue, author_saw_score_excerpts=True)
    best = next((e.text for e in reader.explanations(neuron) if e.status == ExplanationStatus.OK and e.text), None)
    if best is None:  # the one the dashboard made on view, if any, is what the page shows as the neuron's
        on_view = notes.suggestions_from(ON_VIEW_SOURCE, [neuron]).get(neuron)
        best = on_view.text if on_view is not None else None
    # a cache explained before the readability rule holds explanations the simulators refuse to read (a token
    # table of 900 characters): then there is nothing to compare with, and the person's suggestion still counts
    current = (score_text(reader, notes, neuron, best, backend, queue, author_saw_score_excerpts=False)
               if best and readability_problem(best) is None else None)
    return Suggested(notes.add_suggestion(neuron, text, author, "person", mine.score_id), current)


def generate(
    reader: CacheReader, notes: NotesStore, neuron: NeuronId, backend: LiveBackend, queue: Queue = run_now
) -> Suggestion:
    """Have the backend explain the neuron, score the explanation with the same backend, and keep it as a
    suggestion from that explainer (the dashboard never writes the cache's results)."""
    from core.explain import explain_neuron

    spec = str(backend.spec)
    try:
        with queue(f"Generating an explanation with {spec}"):
            made = wire(spec, explainer=spec, settings=backend.settings, responses=notes.responses)
            assert made.explainer is not None  # asked for above
            result = explain_neuron(reader, neuron, made.explainer, made.simulator)
    except _failures() as error:
        raise LiveError(f"Generation failed: {error}") from error
    if result.status != ExplanationStatus.OK or result.scored is None or not result.text:
        raise LiveError(f"Generation failed: {result.failure or 'no explanation'}")
    simulations = [LiveSimulation(s.excerpt_id, s.normalized_predictions, s.score) for s in result.scored.excerpts]
    # an explainer reads only the EXPLAIN excerpts, never the scoring ones
    live = notes.add_live_score(neuron, result.text, spec, result.scored.scores, simulations,
                                author_saw_score_excerpts=False)
    return notes.add_suggestion(neuron, result.text, "", source=result.explainer, score_id=live.score_id)


ON_VIEW_SOURCE = "offline default, on view"
"""Source of the explanations the dashboard makes when a neuron without one is first viewed (notes.suggestions)."""

ON_VIEW_AUTHOR = "offline default"

_ON_VIEW_LOCK = threading.Lock()
"""Held while checking for and keeping an on-view explanation, so two sessions viewing a neuron at once keep one."""


def explain_on_view(
    reader: CacheReader, notes: NotesStore, neuron: NeuronId, queue: Queue = run_now,
    make: Callable[[CacheReader, NeuronId], ExplanationResult] | None = None,
) -> Suggestion | None:
    """The neuron's on-view explanation: the one kept in the notes, else one made now by the offline default
    (core.explain.explain_on_first_view: baseline explainer and simulator, chosen on CALIBRATE excerpts, scored on
    SCORE excerpts; or `make`, the same made elsewhere: core.workers.OfflineWorkers) and kept as a suggestion from
    ON_VIEW_SOURCE; None when the offline default finds nothing to say (no excerpts, or no readable phrase)."""
    from core.explain import explain_on_first_view

    kept = notes.suggestions_from(ON_VIEW_SOURCE, [neuron]).get(neuron)
    if kept is not None:
        return kept
    try:
        with queue(f"Explaining neuron {neuron} with the offline default"):
            result = (make or explain_on_first_view)(reader, neuron)
    except _failures() as error:
        raise LiveError(f"The offline default could not explain {neuron}: {error}") from error
    if result.status != ExplanationStatus.OK or not result.text:
        log.info("no on-view explanation of %s: %s", neuron, result.failure)
        return None
    simulations = ([LiveSimulation(s.excerpt_id, s.normalized_predictions, s.score) for s in result.scored.excerpts]
                   if result.scored else [])
    scores = result.scored.scores if result.scored else Scores(None, None, None, 0)
    with _ON_VIEW_LOCK:
        kept = notes.suggestions_from(ON_VIEW_SOURCE, [neuron]).get(neuron)
        if kept is not None:
            return kept
        live = notes.add_live_score(neuron, result.text, result.simulator, scores, simulations,
                                    author_saw_score_excerpts=False)
        return notes.add_suggestion(neuron, result.text, ON_VIEW_AUTHOR, ON_VIEW_SOURCE, live.score_id)


def generation_cost(reader: CacheReader, neuron: NeuronId, backend: LiveBackend) -> float | None:
    """US dollars that `generate` may cost with an openai backend (one explainer call on the EXPLAIN excerpts,
    one simulator call per SCORE excerpt); 0 for offline backends, None when the model has no known price."""
    from core import prompts
    from core.llm import CHARS_PER_TOKEN_ESTIMATE, price_per_million
    from core.offline.evidence import normalize

    if backend.spec.kind != BackendKind.OPENAI:
        return 0.0
    price = price_per_million(backend.spec.model)
    if price is None:
        return None
    shown = reader.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
    scale = max((max(e.activations) for e in shown), default=0.0)
    examples = [prompts.ExampleExcerpt(e.excerpt.tokens, tuple(round(v) for v in normalize(e.activations, scale)))
                for e in shown]
    prompt_chars = sum(len(m["content"]) for m in prompts.explain_activations_messages(examples))
    completion = 60
    for excerpt in reader.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP, ExcerptKind.RANDOM], splits=[Split.SCORE]):
        messages = prompts.simulate_chat_messages("x" * 200, excerpt.excerpt.tokens, json_answer=True)
        prompt_chars += sum(len(m["content"]) for m in messages)
        completion += SIMULATED_TOKENS_PER_TOKEN * len(excerpt.excerpt.tokens)
    prompt_tokens = int(prompt_chars / CHARS_PER_TOKEN_ESTIMATE) + 1
    return (prompt_tokens * price[0] + completion * price[1]) / 1_000_000


def text_activations(
    model: str, layer: int, text: str, max_tokens: int = 256, queue: Queue = run_now
) -> TextActivations:
    """The tokens of `text` (at most `max_tokens`) and every neuron of `layer` on them, from one forward pass of
    `model` (loaded once per process and shared with the local LLM backend, core.llm.local_model)."""
    from core.llm import local_model
    from core.models import neuron_activations, token_strings

    try:
        with queue("Running the model on your text"):
            subject = local_model(model)
            head = text[: max_tokens * CHARS_PER_TOKEN_CAP]
            ids = subject.tokenizer(head, add_special_tokens=False)["input_ids"]
            cut = len(ids) > max_tokens or len(head) < len(text)
            ids = ids[:max_tokens]
            activations = neuron_activations(subject, ids, layers=[layer])[layer]
    except _failures() as error:
        raise LiveError(f"Cannot run {model} here: {error}") from error
    return TextActivations(tuple(token_strings(subject.tokenizer, ids)), activations, cut)


def model_problem(model: str) -> str | None:
    """Why `model` cannot run here (not on this machine: nothing is downloaded at run time), or None when its
    tokenizer loads without a download. For caches whose model may be missing (imported ones); cheap: no weights."""
    from core.models import ModelError, load_tokenizer

    try:
        load_tokenizer(model)
    except ModelError as error:
        return str(error)
    return None


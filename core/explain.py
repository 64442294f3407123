"""The explain stage: write explanations of neurons, pick the best, score it, store it.

Reads each neuron's EXPLAIN-split excerpts (top excerpts only) from the cache; candidates are compared on the
CALIBRATE split and the kept one is scored on the SCORE split (core.score), so explained, calibrating and scoring
excerpts never overlap. Writes one explanations row per neuron and run (with its scores and every simulated token),
or a FAILED row with the reason, which the next run retries.

Every explainer's candidates must pass the readability rule (core.score.readability_problem: one phrase of at most
100 characters, no activation numbers, at most five quoted tokens); a candidate that breaks it is dropped and the
next one is used, and a neuron whose candidates all break it is stored as FAILED with the reason.

Explainers (specs as `make_explainer` takes them)
- "baseline": short phrases from the EXPLAIN excerpts' statistics (core.offline.writer): tokens and word forms,
  families a person names in a word, neighbours, places, the negative side; no language model.
- "baseline:themes": the same, plus a theme the built-in model names for top tokens that are ordinary words, kept
  only when it wins on CALIBRATE (best read by the simulator baseline:words).
- "local[:MODEL]": the token-space explainer: a plain-text few-shot completion naming what the top tokens (and the
  tokens before them) share, followed by a few of them; small models do this well (NOTES.md), not the activation
  prompt.
- "openai:MODEL": OpenAI's kind of prompt for capable chat models: tokens with activations on a 0-10 scale,
  few-shot, answer forced to begin "the main thing this neuron does is find".
"""

from __future__ import annotations

import builtins
import keyword
import logging
import re
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core import prompts
from core.baseline import BASELINE_SPEC
from core.killpoints import kill_point
from core.offline.evidence import neuron_statistics, normalize
from core.offline.writer import CANDIDATES, write_phrases
from core.score import (
    ScoredExplanation,
    explaining_excerpts,
    readability_problem,
    simulate_and_score,
)
from core.simulate import SimulationError, Simulator
from core.store import CacheReader, ResultsWriter
from core.types import ExplanationRecord, ExplanationStatus, NeuronExcerpt, NeuronId, Scores, Split

if TYPE_CHECKING:
    from core.llm import LLMClient, Usage

log = logging.getLogger(__name__)

HUMAN_SPEC = "human"
"""Explainer spec stored with an explanation a person wrote (`python -m core score --explanation`)."""

MAX_CANDIDATES = 20
"""Most candidates one neuron may get (each is simulated on the CALIBRATE excerpts)."""

SELECTION_MARGIN = 0.05
"""Candidates come in order of preference; a later one replaces the kept one only when its top-and-random score on
the CALIBRATE excerpts is higher by at least this much (10 excerpts: a smaller lead is mostly noise)."""


class ExplainFailure(Exception):
    """An explainer produced nothing usable for one neuron (stored as that neuron's failure)."""


class Explainer(Protocol):
    """Writes candidate explanations of one neuron from its EXPLAIN-split excerpts."""

    spec: str
    """As stored: "baseline", "local:smollm2-135m", "openai:gpt-4o"."""
    prompt_version: str
    default_candidates: int
    """Candidates written when the caller asks for no particular number."""

    @property
    def model(self) -> str | None:
        """The language model that writes (None for baseline)."""
        ...

    def write(self, excerpts: Sequence[NeuronExcerpt], candidates: int) -> list[str]:
        """Up to `candidates` distinct explanation texts (ExplainFailure, or core.llm.LLMError, when none)."""
        ...


# --- explainers ---------------------------------------------------------------------------------------------------


class BaselineExplainer:
    """Short readable phrases from the EXPLAIN excerpts' statistics (core.offline.writer), best fit first. With a
    `themes` client (spec baseline:themes) one more candidate, last: the theme a small model names for the top
    tokens when they are ordinary words ("fruits"); it is kept only when it wins on the CALIBRATE excerpts."""

    prompt_version = prompts.BASELINE_VERSION
    default_candidates = CANDIDATES

    def __init__(self, themes: LLMClient | None = None) -> None:
        self.themes = themes
        self.spec = BASELINE_SPEC if themes is None else THEMES_SPEC
        self.model = None if themes is None else themes.model

    def write(self, excerpts: Sequence[NeuronExcerpt], candidates: int) -> list[str]:
        texts = write_phrases(excerpts, max(1, candidates))
        if not texts:
            raise ExplainFailure("no phrase predicts the explain excerpts (the neuron never fires above zero)")
        if self.themes is not None:
            theme = self.theme(excerpts)
            if theme and theme not in texts:
                texts.append(theme)
        return texts

    def theme(self, excerpts: Sequence[NeuronExcerpt]) -> str | None:
        """The theme of the top tokens, when at least THEME_WORDS of the top 8 are ordinary words (small models name
        themes of words well, and fail on code and punctuation: NOTES.md)."""
        assert self.themes is not None
        words = [w for w, _ in top_tokens(excerpts, 8) if w.isalpha() and len(w) >= 3 and w not in _CODE_WORDS]
        if len(words) < THEME_WORDS:
            return None
        answer = self.themes.complete(prompts.explain_tokens_prompt(words), max_tokens=16,
                                      stop=list(prompts.EXPLAIN_TOKENS_STOP))
        theme = clean_answer(answer.text)
        return theme if theme and readability_problem(theme) is None else None


THEMES_SPEC = "baseline:themes"
"""The offline explainer with a theme candidate named by the built-in model (it loads the model)."""

THEME_WORDS = 5
"""Ordinary words among the top 8 tokens before a theme is asked for."""

_CODE_WORDS = frozenset(keyword.kwlist) | frozenset(n for n in dir(builtins) if not n.startswith("_"))


_LETTERS = re.compile(r"[^\W\d_]{2,}")


def top_tokens(
    excerpts: Sequence[NeuronExcerpt], limit: int, *, with_previous: bool = False
) -> list[tuple[str, str]]:
    """The most active tokens (by total level) as (word for the token-space prompt, exact token) pairs: edge spaces
    stripped, case-insensitive repeats dropped, and tokens with letters first (small models name themes of words,
    not of punctuation). `with_previous` writes each word as the phrase "previous token" + token."""
    stats = neuron_statistics(excerpts)
    best_previous: dict[str, tuple[float, str]] = {}
    if with_previous:
        for (token, previous), (count, mean) in stats.contexts.items():
            if count * mean > best_previous.get(token, (0.0, ""))[0]:
                best_previous[token] = (count * mean, previous)
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for stat in stats.unigrams:
        word = prompts.show_token(stat.token).strip()
        if stat.mean_level <= 0 or not word or word.casefold() in seen:
            continue
        seen.add(word.casefold())
        if with_previous and stat.token in best_previous:
            word = (best_previous[stat.token][1] + stat.token).strip()
        found.append((word, stat.token))
    wordy = [pair for pair in found if _LETTERS.search(pair[1])]
    chosen = wordy if len(wordy) >= 3 else found
    return chosen[:limit]


TOKEN_SPACE_LISTS: tuple[tuple[int, bool], ...] = ((8, False), (5, False), (12, False), (6, True))
"""(how many words, with the previous token) of each candidate of the token-space explainer, in order."""

TOKEN_SPACE_QUOTED = 3
"""How many of the listed tokens are quoted after the theme (fewer when the phrase would be too long)."""


class TokenSpaceExplainer:
    """Names the theme of the neuron's top tokens with a plain-text few-shot completion (works with small models).

    The stored explanation is the theme followed by the tokens it was named from, quoted: people read the theme, and
    a simulator that cannot relate a theme to tokens (the offline one) still has the tokens."""

    prompt_version = prompts.EXPLAIN_TOKENS_VERSION
    default_candidates = 1

    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.spec = client.spec
        self.model = client.model

    def write(self, excerpts: Sequence[NeuronExcerpt], candidates: int) -> list[str]:
        texts: list[str] = []
        for limit, with_previous in TOKEN_SPACE_LISTS[: max(1, candidates)]:
            pairs = top_tokens(excerpts, limit, with_previous=with_previous)
            if not pairs:
                continue
            answer = self.client.complete(prompts.explain_tokens_prompt([w for w, _ in pairs]), max_tokens=16,
                                          stop=list(prompts.EXPLAIN_TOKENS_STOP))
            theme = clean_answer(answer.text)
            if not theme:
                continue
            for shown in range(TOKEN_SPACE_QUOTED, 0, -1):
                quoted = ", ".join(prompts.quote_token(t) for _, t in pairs[:shown])
                text = prompts.EXPLAIN_TOKENS_RESULT.format(theme=theme, tokens=quoted)
                if readability_problem(text) is None:
                    break
            if text not in texts:
                texts.append(text)
        if not texts:
            raise ExplainFailure(f"{self.spec} named no theme for the top tokens")
        return texts


class ActivationExplainer:
    """OpenAI's kind of explainer prompt for capable chat models (tokens with 0-10 activations, few-shot)."""

    prompt_version = prompts.EXPLAIN_ACTIVATIONS_VERSION
    default_candidates = 1
    temperature_for_samples = 1.0
    """Sampling temperature when several candidates are asked for (one candidate is written greedily)."""

    def __init__(self, client: LLMClient, *, max_tokens: int = 60) -> None:
        self.client = client
        self.spec = client.spec
        self.model = client.model
        self.max_tokens = max_tokens

    def write(self, excerpts: Sequence[NeuronExcerpt], candidates: int) -> list[str]:
        scale = max((max(e.activations) for e in excerpts), default=0.0)
        shown = [
            prompts.ExampleExcerpt(e.excerpt.tokens, tuple(round(v) for v in normalize(e.activations, scale)))
            for e in excerpts
        ]
        n = max(1, candidates)
        answers = self.client.chat(
            prompts.explain_activations_messages(shown),
            max_tokens=self.max_tokens,
            temperature=self.temperature_for_samples if n > 1 else 0.0,
            n=n,
        )
        texts: list[str] = []
        for answer in answers:
            text = clean_answer(answer.text)
            if text and text not in texts:
                texts.append(text)
        if not texts:
            raise ExplainFailure(f"{self.spec} returned no explanation (answer: {answers[0].text[:80]!r})")
        return texts


def clean_answer(text: str) -> str:
    """An explainer's answer as stored: first line, forced prefix removed, edge quotes and final period stripped."""
    text = text.strip().split("\n")[0].strip()
    prefix = prompts.EXPLAIN_ACTIVATIONS_PREFIX
    if text.lower().startswith(prefix):
        text = text[len(prefix) :].strip(" :,")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    quotes = "\"'`"
    if len(text) > 1 and text[0] in quotes and text[-1] == text[0] and text.count(text[0]) == 2:
        text = text[1:-1].strip()  # one quoted answer; not '"a", "b"', whose edge quotes belong to its tokens
    return text


def make_explainer(spec: str, *, client: LLMClient | None = None) -> Explainer:
    """An explainer for `spec` ("baseline", "baseline:themes", "local[:MODEL]" or "openai:MODEL";
    core.backends.BackendSpec reads it). Explainers that use a language model use `client` (core.backends.wire
    makes it), or a client with the default settings."""
    from core.backends import BackendKind, BackendSpec

    parsed = BackendSpec.parse(spec, "explainer")
    if parsed.kind == BackendKind.BASELINE and not parsed.model:
        return BaselineExplainer()
    if client is None:
        from core.llm import make_client

        client = make_client(parsed.client_spec or str(parsed))
    if parsed.kind == BackendKind.BASELINE:  # baseline:themes
        return BaselineExplainer(themes=client)
    if parsed.kind == BackendKind.LOCAL:
        return TokenSpaceExplainer(client)
    return ActivationExplainer(client)


def check_client(client: LLMClient) -> None:
    """One tiny call, so a missing or wrong key, an unknown model or an unreachable server is one clear error
    (core.llm.LLMError) before any neuron is tried. Answers are cached, so a rerun costs nothing."""
    client.chat([{"role": "user", "content": "Reply with the word OK."}], max_tokens=1)


# --- one neuron ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One candidate explanation and how it did on the CALIBRATE excerpts."""

    text: str
    calibration: Scores | None
    """Its scores on the CALIBRATE excerpts (None when the simulator failed before it was scored). Every kept
    explanation has one: it is what picks a neuron's best explanation among runs (BEST_EXPLANATIONS in
    core/store/explanations.py)."""


@dataclass(frozen=True)
class ExplanationResult:
    """The outcome of explaining one neuron (not yet stored; `save_result` stores it)."""

    neuron: NeuronId
    explainer: str
    model: str | None
    prompt_version: str | None
    simulator: str
    status: ExplanationStatus
    failure: str | None
    """Why it failed (explainer or simulator), when status is FAILED."""
    text: str | None
    """The kept explanation (None when the explainer failed)."""
    candidates: tuple[Candidate, ...]
    """Every candidate, in the order written."""
    scored: ScoredExplanation | None
    """The kept explanation simulated and scored on the SCORE excerpts (None when failed)."""
    seconds: float
    """Wall time spent on this neuron."""


def _calibration_key(candidate: Candidate) -> float:
    score = candidate.calibration.all if candidate.calibration else None
    return -2.0 if score is None else score


def explain_neuron(
    store: CacheReader,
    neuron: NeuronId,
    explainer: Explainer,
    simulator: Simulator,
    candidates: int | None = None,
) -> ExplanationResult:
    """Write candidates from the EXPLAIN excerpts, keep the best on CALIBRATE, score it on SCORE. Writes nothing.

    A failing explainer or simulator gives a FAILED result with the reason; a spending cap reached, a bad neuron and
    an empty cache raise (they concern the whole run).
    """
    from core.llm import LLMError, SpendingCapReached

    started = time.perf_counter()
    count = min(MAX_CANDIDATES, candidates or explainer.default_candidates)
    splits = explaining_excerpts(store, neuron)  # one query for the three splits: a dashboard waits for this
    excerpts = splits[Split.EXPLAIN]

    def failed(reason: str, text: str | None = None, kept: Sequence[Candidate] = ()) -> ExplanationResult:
        log.info("neuron %s failed: %s", neuron, reason)
        return ExplanationResult(neuron, explainer.spec, explainer.model, explainer.prompt_version, simulator.spec,
                                 ExplanationStatus.FAILED, reason, text, tuple(kept), None,
                                 time.perf_counter() - started)

    try:
        texts, problems = readable_candidates(explainer.write(excerpts, count))
        for problem in problems:
            log.info("neuron %s: candidate dropped: %s", neuron, problem)
        if not texts:
            return failed(f"explainer: no candidate is readable ({problems[0] if problems else 'none written'})")
    except SpendingCapReached:
        raise
    except (LLMError, ExplainFailure) as error:
        return failed(f"explainer: {error}")
    try:
        calibrate = splits[Split.CALIBRATE]
        chosen = [Candidate(t, simulate_and_score(neuron, t, simulator, calibrate, Split.CALIBRATE).scores)
                  for t in texts]
        best = chosen[0]
        for candidate in chosen[1:]:
            if _calibration_key(candidate) >= _calibration_key(best) + SELECTION_MARGIN:
                best = candidate
        scored = simulate_and_score(neuron, best.text, simulator, splits[Split.SCORE], Split.SCORE)
    except SpendingCapReached:
        raise
    except (LLMError, SimulationError) as error:
        return failed(f"simulator: {error}", texts[0], [Candidate(t, None) for t in texts])
    return ExplanationResult(neuron, explainer.spec, explainer.model, explainer.prompt_version, simulator.spec,
                             ExplanationStatus.OK, None, best.text, tuple(chosen), scored,
                             time.perf_counter() - started)


def readable_candidates(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """The distinct candidates that pass the readability rule (stripped), and why each other one was dropped."""
    kept: list[str] = []
    problems: list[str] = []
    for text in texts:
        problem = readability_problem(text or "")
        if problem:
            problems.append(problem)
        elif text.strip() not in kept:
            kept.append(text.strip())
    return kept, problems


def explain_on_first_view(store: CacheReader, neuron: NeuronId) -> ExplanationResult:
    """Explain one neuron with the offline default (baseline explainer and simulator) without writing anything: for
    a dashboard that shows a neuron nobody has explained yet (bench/quality.py measures it: a fraction of a
    second). Store it with `save_result` where it should be kept."""
    from core.baseline import BaselineSimulator

    return explain_neuron(store, neuron, BaselineExplainer(), BaselineSimulator())


def save_result(store: ResultsWriter, result: ExplanationResult) -> int:
    """Store a result (replacing earlier failed runs of the same neuron, explainer and simulator); its id."""
    best_calibration = None
    for candidate in result.candidates:
        if candidate.text == result.text and candidate.calibration is not None:
            best_calibration = candidate.calibration.all
    return store.add_explanation(
        result.neuron,
        text=result.text,
        explainer=result.explainer,
        model=result.model,
        prompt_version=result.prompt_version,
        simulator=result.simulator,
        status=result.status,
        failure=result.failure,
        candidates=max(1, len(result.candidates)),
        calibration_score=best_calibration,
        scores=result.scored.scores if result.scored else None,
        simulations=result.scored.excerpts if result.scored else (),
    )


def save_human_explanation(store: ResultsWriter, scored: ScoredExplanation, prompt_version: str | None = None) -> int:
    """Store an explanation a person wrote, scored by `score_explanation` (an earlier one with the same text and
    simulator is replaced). Score it with `calibrate=True` so it can compete for the neuron's best explanation (which
    is chosen on CALIBRATE scores); without a calibration score it ranks after every explanation that has one."""
    return store.add_explanation(
        scored.neuron, text=scored.text, explainer=HUMAN_SPEC, model=None, prompt_version=prompt_version,
        simulator=scored.simulator, status=ExplanationStatus.OK,
        calibration_score=scored.calibration.all if scored.calibration else None, scores=scored.scores,
        simulations=scored.excerpts,
    )


# --- many neurons -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSummary:
    """Scores of one layer's neurons in a run (each neuron's latest explanation by this explainer and simulator)."""

    layer: int
    neurons: int
    """Neurons of this layer in the run."""
    explained: int
    """With a finished explanation."""
    failed: int
    undefined: int
    """Finished but with an undefined top-and-random score (a constant prediction)."""
    mean_all: float | None
    median_all: float | None
    mean_top: float | None
    mean_random: float | None


@dataclass(frozen=True)
class RunSummary:
    """What `explain_neurons` did."""

    neurons: int
    """Neurons asked for."""
    done: int
    """Explained and scored in this run."""
    skipped: int
    """Already finished by an earlier run (not redone)."""
    failed: int
    """Failed in this run (stored as failed; the next run retries them)."""
    retried: int
    """Neurons that had failed in an earlier run and were tried again in this one."""
    seconds: float
    layers: tuple[LayerSummary, ...]
    stopped: str | None = None
    """Why the run stopped early (a spending cap), None when it went through."""
    usage: tuple[tuple[str, Usage], ...] = field(default=())
    """(spec, usage) of each language-model client the run used."""


def summarize(records: dict[NeuronId, ExplanationRecord], neurons: Sequence[NeuronId]) -> tuple[LayerSummary, ...]:
    """Per-layer counts and score statistics of a run's neurons (undefined scores left out of the means)."""
    by_layer: dict[int, list[NeuronId]] = {}
    for neuron in neurons:
        by_layer.setdefault(neuron.layer, []).append(neuron)

    def mean(values: list[float]) -> float | None:
        return statistics.fmean(values) if values else None

    layers = []
    for layer in sorted(by_layer):
        rows = [records[n] for n in by_layer[layer] if n in records]
        ok = [r for r in rows if r.status == ExplanationStatus.OK]
        scores = [r.score_all for r in ok if r.score_all is not None]
        layers.append(LayerSummary(
            layer=layer, neurons=len(by_layer[layer]), explained=len(ok),
            failed=sum(r.status == ExplanationStatus.FAILED for r in rows),
            undefined=len(ok) - len(scores), mean_all=mean(scores),
            median_all=statistics.median(scores) if scores else None,
            mean_top=mean([r.score_top for r in ok if r.score_top is not None]),
            mean_random=mean([r.score_random for r in ok if r.score_random is not None]),
        ))
    return tuple(layers)


def explain_neurons(
    store: ResultsWriter,
    neurons: Sequence[NeuronId],
    explainer: Explainer,
    simulator: Simulator,
    *,
    candidates: int | None = None,
    concurrency: int = 1,
    processes: int = 1,
    on_done: Callable[[ExplanationResult | None], None] | None = None,
) -> RunSummary:
    """Explain, score and store each neuron not yet finished by this explainer and simulator; resumable.

    Neurons finished by an earlier run are skipped; failed ones are tried again. Each result is stored as soon as it
    is known, so a stopped run keeps its work. `on_done` is called once per neuron (None for a skipped one), e.g.
    to move a progress bar. A spending cap stops the run (reported in `stopped`); neurons in flight are finished.
    `concurrency`: neurons in flight at once in threads (language models wait on the network); `processes`: worker
    processes for the offline default (plain baseline explainer and simulator: its work is Python, one core per
    process), each reading the recording itself while this process stores the results; fewer when there are under
    two chunks of neurons (core.workers.OFFLINE_CHUNK) for each.
    """
    from core.llm import SpendingCapReached

    started = time.perf_counter()
    for neuron in neurons:
        store.check_neuron(neuron)
    earlier = store.run_explanations(neurons, explainer.spec, simulator.spec)
    todo = [n for n in neurons if n not in earlier or earlier[n].status != ExplanationStatus.OK]
    skipped = len(neurons) - len(todo)
    retried = sum(n in earlier for n in todo)
    for _ in range(skipped):
        if on_done:
            on_done(None)
    done = failed = 0
    stopped: str | None = None

    def keep(result: ExplanationResult) -> ExplanationResult:
        save_result(store, result)
        kill_point("explain.stored")  # tests/test_kill.py
        return result

    def one(neuron: NeuronId) -> ExplanationResult:
        return keep(explain_neuron(store, neuron, explainer, simulator, candidates))

    def count(result: ExplanationResult) -> None:
        nonlocal done, failed
        if result.status == ExplanationStatus.OK:
            done += 1
        else:
            failed += 1
        if on_done:
            on_done(result)

    if processes > 1 and not offline_default(explainer, simulator):
        raise ValueError(f"worker processes explain with the offline default only, not {explainer.spec} and "
                         f"{simulator.spec}")
    from core.workers import OFFLINE_CHUNK, offline_results

    processes = min(processes, len(todo) // (2 * OFFLINE_CHUNK))  # a worker's start is worth 8 neurons of work
    if processes > 1:
        for result in offline_results(store.path, todo, candidates, processes):
            count(keep(result))
    elif concurrency <= 1:
        for neuron in todo:
            try:
                count(one(neuron))
            except SpendingCapReached as error:
                stopped = str(error)
                break
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="explain") as pool:
            pending: set[Future[ExplanationResult]] = set()
            queue = list(reversed(todo))
            while queue or pending:
                while queue and len(pending) < concurrency and stopped is None:
                    pending.add(pool.submit(one, queue.pop()))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        count(future.result())
                    except SpendingCapReached as error:
                        stopped = str(error)
                if stopped is not None:
                    queue.clear()
    records = store.run_explanations(neurons, explainer.spec, simulator.spec)
    return RunSummary(
        neurons=len(neurons), done=done, skipped=skipped, failed=failed, retried=retried,
        seconds=time.perf_counter() - started, layers=summarize(records, neurons), stopped=stopped,
        usage=tuple(_usages(explainer, simulator)),
    )


def offline_default(explainer: Explainer, simulator: Simulator) -> bool:
    """Whether these are the plain baseline explainer and simulator (what worker processes can make again)."""
    return explainer.spec == BASELINE_SPEC and simulator.spec == BASELINE_SPEC


def _usages(explainer: Explainer, simulator: Simulator) -> list[tuple[str, Usage]]:
    """Usage of each distinct client behind the explainer and the simulator."""
    found: list[tuple[str, Usage]] = []
    for part in (explainer, simulator):
        client = getattr(part, "client", None)
        if client is not None and all(client.usage is not usage for _, usage in found):
            found.append((client.spec, client.usage))
    return found


def sample_neurons(layers: Sequence[int], neurons_per_layer: int, sample: int | None, seed: int) -> list[NeuronId]:
    """Every neuron of the layers, or `sample` of them spread evenly over the layers (seeded)."""
    import numpy as np

    if sample is None:
        return [NeuronId(layer, n) for layer in layers for n in range(neurons_per_layer)]
    rng = np.random.default_rng(seed)
    counts = [sample // len(layers) + (i < sample % len(layers)) for i in range(len(layers))]
    chosen = []
    for layer, count in zip(layers, counts, strict=True):
        picked = rng.choice(neurons_per_layer, size=min(count, neurons_per_layer), replace=False)
        chosen += [NeuronId(layer, int(n)) for n in sorted(picked)]
    return chosen

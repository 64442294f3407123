"""Live work for the dashboard without Streamlit (core/live.py): scoring, suggestions, generation, cost, a forward
pass on a person's text; on the tiny real cache and the tiny Llama."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from core.backends import BackendKind, BackendSpec
from core.live import LiveBackend, LiveError, generate, generation_cost, score_text, suggest, text_activations
from core.score import is_readable
from core.types import NeuronId

BASELINE = LiveBackend(BackendSpec(BackendKind.BASELINE))


@pytest.fixture
def cache(tiny_dashboard):
    return tiny_dashboard


class Queue:
    """A queue that lets every job run at once and remembers the labels."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self.labels.append(label)
        yield


def test_a_text_is_scored_once_and_kept_in_the_notes(cache):
    queue, neuron = Queue(), NeuronId(0, 1)
    first = score_text(cache.reader, cache.notes, neuron, "the word 'cat'", BASELINE, queue)
    again = score_text(cache.reader, cache.notes, neuron, "the word 'cat'", BASELINE, queue)
    assert again.score_id == first.score_id and queue.labels == ["Simulating and scoring"]  # once
    assert first.simulator == "baseline" and len(first.simulations) > 0
    assert cache.reader.explanations(neuron)[0].text == "cats and mats"  # the results are untouched


def test_a_suggestion_is_compared_with_the_best_explanation_by_the_same_simulator(cache):
    made = suggest(cache.reader, cache.notes, NeuronId(0, 1), "the word 'cat'", "Ada", BASELINE)
    assert made.suggestion.author == "Ada" and made.suggestion.score is not None
    assert made.current is not None and made.current.text == "cats and mats" and made.current.simulator == "baseline"
    assert [s.text for s in cache.notes.suggestions(NeuronId(0, 1))] == ["the word 'cat'"]
    alone = suggest(cache.reader, cache.notes, NeuronId(0, 9), "anything", "", BASELINE)
    assert alone.current is None and alone.suggestion.author == "anonymous"


def test_a_suggestion_counts_when_the_best_stored_explanation_predates_the_readability_rule(tiny_explained_cache,
                                                                                           tmp_path):
    from core.paths import copy_cache
    from core.store import DashboardCache, open_results_writer
    from core.types import ExplanationStatus, Scores

    path, neuron = tmp_path / "old.duckdb", NeuronId(1, 7)
    copy_cache(tiny_explained_cache, path)
    table = "token 'cat' 9.1, 'mat' 8.7, " * 40  # what explainers wrote before the rule: a token table
    with open_results_writer(path) as writer:
        writer.add_explanation(neuron, text=table, explainer="baseline", model=None, prompt_version="old",
                               simulator="baseline", status=ExplanationStatus.OK, calibration_score=0.9,
                               scores=Scores(0.9, 0.9, None, 32))
    opened = DashboardCache(path)
    try:
        with pytest.raises(LiveError, match="characters long"):  # the simulators refuse to read it
            score_text(opened.reader, opened.notes, neuron, table, BASELINE)
        made = suggest(opened.reader, opened.notes, neuron, "the word 'cat'", "Ada", BASELINE)
        assert made.current is None and made.suggestion.score is not None
        assert [s.text for s in opened.notes.suggestions(neuron)] == ["the word 'cat'"]
    finally:
        opened.close()


def test_generating_keeps_a_scored_suggestion_from_the_explainer(cache):
    made = generate(cache.reader, cache.notes, NeuronId(1, 7), BASELINE)
    assert made.source == "baseline" and is_readable(made.text) and made.score is not None
    assert cache.reader.explanations(NeuronId(1, 7)) == []  # never in the results


def test_an_api_backend_without_a_key_is_one_line_and_the_cost_is_estimated_first(cache, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    priced = LiveBackend(BackendSpec(BackendKind.OPENAI, "gpt-4o-mini"))
    with pytest.raises(LiveError, match=r"^Scoring failed: no OpenAI API key"):
        score_text(cache.reader, cache.notes, NeuronId(0, 1), "x", priced)
    cost = generation_cost(cache.reader, NeuronId(0, 1), priced)
    assert cost is not None and 0 < cost < 0.01
    assert generation_cost(cache.reader, NeuronId(0, 1), LiveBackend(BackendSpec(BackendKind.OPENAI, "mine"))) is None
    assert generation_cost(cache.reader, NeuronId(0, 1), BASELINE) == 0.0


def test_a_forward_pass_on_a_persons_text(tiny_model_folder, tmp_path):
    queue = Queue()
    found = text_activations(str(tiny_model_folder("llama")), 1, "the cat sat on the mat", queue=queue)
    assert found.activations.shape == (len(found.tokens), 48)
    assert "".join(found.tokens).strip() == "the cat sat on the mat"
    assert queue.labels == ["Running the model on your text"]
    with pytest.raises(LiveError, match=r"^Cannot run"):
        text_activations(str(tmp_path / "no-model"), 0, "x")


def test_a_neuron_viewed_first_is_explained_once_by_the_offline_default_into_the_notes(cache):
    from core.live import ON_VIEW_SOURCE, explain_on_view

    queue, neuron = Queue(), NeuronId(1, 3)
    made = explain_on_view(cache.reader, cache.notes, neuron, queue)
    assert made is not None and made.source == ON_VIEW_SOURCE and is_readable(made.text)
    assert made.score is not None and made.score.simulator == "baseline"
    assert made.score.author_saw_score_excerpts is False  # the offline explainer reads only EXPLAIN excerpts
    assert cache.notes.live_score_by_id(made.score.score_id).simulations  # kept for the scoring page
    again = explain_on_view(cache.reader, cache.notes, neuron, queue)
    assert again is not None and again.suggestion_id == made.suggestion_id and len(queue.labels) == 1
    assert cache.notes.suggestions_from(ON_VIEW_SOURCE, [neuron, NeuronId(1, 4)]) == {neuron: again}
    assert cache.reader.explanations(neuron) == []  # never in the results


def test_only_a_persons_suggestion_is_kept_as_written_after_seeing_the_scoring_excerpts(cache):
    made = suggest(cache.reader, cache.notes, NeuronId(0, 1), "the word 'mat'", "Ada", BASELINE)
    assert made.suggestion.score is not None and made.suggestion.score.author_saw_score_excerpts
    assert made.current is not None and not made.current.author_saw_score_excerpts  # the pipeline's explanation
    generated = generate(cache.reader, cache.notes, NeuronId(1, 8), BASELINE)
    assert generated.score is not None and not generated.score.author_saw_score_excerpts
    # a seen score, however high, never picks the best explanation: that is the results' own
    assert cache.reader.explanations(NeuronId(0, 1))[0].text == "cats and mats"


def test_a_suggestion_on_a_neuron_explained_on_view_is_compared_with_that_explanation(cache):
    from core.live import explain_on_view

    neuron = NeuronId(1, 6)
    shown = explain_on_view(cache.reader, cache.notes, neuron)
    assert shown is not None and shown.score is not None
    made = suggest(cache.reader, cache.notes, neuron, "the word 'cat'", "Ada", BASELINE)
    assert made.current is not None and made.current.text == shown.text
    assert made.current.score_id == shown.score.score_id  # the same simulator: scored once, on view

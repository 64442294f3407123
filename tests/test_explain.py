"""core.explain: explainers (baseline, token-space, activation prompt), best-of-n, storing, resuming, failures; the
command line's explain / score / show with bad input; one run through a real OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from fake_llm import FakeClient, answer

from core import prompts
from core.backends import BackendSpecError
from core.baseline import BaselineSimulator
from core.cli import main
from core.explain import (
    SELECTION_MARGIN,
    ActivationExplainer,
    BaselineExplainer,
    TokenSpaceExplainer,
    clean_answer,
    explain_neuron,
    explain_neurons,
    make_explainer,
    save_result,
)
from core.llm import LLMError, SpendingCapReached
from core.score import is_readable
from core.simulate import SimulationError
from core.store import open_reader, open_results_writer
from core.types import Excerpt, ExcerptKind, ExplanationStatus, NeuronId, Split

NEURON = NeuronId(0, 5)


class FlakySimulator(BaselineSimulator):
    """The baseline simulator, failing for chosen explanations' neurons until `healed`."""

    def __init__(self, fail_for: set[str]) -> None:
        self.fail_for = fail_for
        self.healed = False

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        if not self.healed and any(word in explanation for word in self.fail_for):
            raise SimulationError("answer not aligned with the text: 3 entries for 64 tokens")
        return super().simulate(explanation, excerpts)


# --- explainers ---------------------------------------------------------------------------------------------------


def test_baseline_keeps_the_best_candidate_on_calibration_and_scores_on_held_out(copy_cache):
    with open_results_writer(copy_cache()) as store:
        result = explain_neuron(store, NEURON, BaselineExplainer(), BaselineSimulator())
        assert result.status == ExplanationStatus.OK
        assert len(result.candidates) > 1
        assert all(c.calibration is not None for c in result.candidates)
        kept = next(c for c in result.candidates if c.text == result.text)
        assert is_readable(result.text)
        assert result.scored is not None and result.scored.split == Split.SCORE
        assert {e.split for e in result.scored.excerpts} == {Split.SCORE}
        explained = {e.excerpt.excerpt_id for e in store.neuron_excerpts(NEURON, splits=[Split.EXPLAIN])}
        assert explained.isdisjoint(e.excerpt_id for e in result.scored.excerpts)

        explanation_id = save_result(store, result)
        [record] = store.explanations(NEURON)
        assert record.explanation_id == explanation_id
        assert (record.text, record.explainer, record.prompt_version) == (result.text, "baseline", "baseline/2")
        assert record.candidates == len(result.candidates)
        assert record.score_all == pytest.approx(result.scored.scores.all)
        assert kept.calibration is not None and record.calibration_score == pytest.approx(kept.calibration.all)
        simulations = store.simulations(explanation_id)
        assert [s.excerpt_id for s in simulations] == [s.excerpt_id for s in result.scored.excerpts]
        for stored, made in zip(simulations, result.scored.excerpts, strict=True):
            assert stored.normalized_predictions == pytest.approx(made.normalized_predictions, abs=1e-5)
            assert stored.activations == pytest.approx(made.activations, abs=1e-5)
            assert stored.tokens == made.tokens and stored.kind == made.kind
        assert store.neuron_rows([NEURON])[NEURON].explanation == result.text
        assert store.info().explanations == 1 and store.info().scores == 1


class FixedExplainer:
    """Writes the given candidates, in order of preference."""

    spec, model, prompt_version = "fixed", None, "t"

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.default_candidates = len(texts)

    def write(self, excerpts: Sequence[object], candidates: int) -> list[str]:
        return self.texts[:candidates]


class OracleSimulator:
    """Knows the real activations: "the real activations" predicts them, "the real activations, blurred" adds a
    little noise, "the opposite" predicts their negation."""

    spec, prompt_version = "oracle", "t"

    def __init__(self, store) -> None:
        self.truth = {e.excerpt.excerpt_id: e.activations for e in store.neuron_excerpts(NEURON)}

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        sign = -1.0 if explanation == "the opposite" else 1.0
        rng = np.random.default_rng(0)
        noise = 0.02 if explanation.endswith("blurred") else 0.0
        return [[sign * v + noise * float(rng.standard_normal()) for v in self.truth[e.excerpt_id]] for e in excerpts]


@pytest.mark.parametrize(
    ("candidates", "kept"),
    [
        (["the opposite", "the real activations"], "the real activations"),  # a clear lead replaces the first
        (["the real activations, blurred", "the real activations"], "the real activations, blurred"),  # a tiny one not
        (["the real activations", "the opposite"], "the real activations"),
    ],
)
def test_a_later_candidate_is_kept_only_when_it_leads_by_the_margin(copy_cache, candidates, kept):
    with open_reader(copy_cache()) as store:
        result = explain_neuron(store, NEURON, FixedExplainer(candidates), OracleSimulator(store))
    calibration = {c.text: c.calibration.all for c in result.candidates if c.calibration is not None}
    assert calibration["the real activations"] == pytest.approx(1.0)
    assert result.text == kept
    if kept.endswith("blurred"):  # it stays first although the exact one is better, by less than the margin
        assert 0 < 1.0 - calibration[kept] < SELECTION_MARGIN
    assert result.scored is not None and result.scored.scores.all == pytest.approx(1.0, abs=SELECTION_MARGIN)


def test_activation_explainer_prompt_and_answers(copy_cache):
    def chat(messages, **options):
        assert options["n"] == 3 and options["temperature"] == 1.0
        assert "<start>" in messages[-1]["content"] and messages[0]["role"] == "system"
        return [answer("the main thing this neuron does is find the word 'return'."),
                answer("The main thing this neuron does is find closing brackets"),
                answer("the main thing this neuron does is find the word 'return'.")]

    client = FakeClient(on_chat=chat)
    explainer = make_explainer("openai:fake-model", client=client)
    assert isinstance(explainer, ActivationExplainer)
    with open_reader(copy_cache()) as store:
        excerpts = store.neuron_excerpts(NEURON, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
    assert explainer.write(excerpts, 3) == ["the word 'return'", "closing brackets"]
    lines = client.requests[0][1][-1]["content"].split("\n")
    values = [int(line.rsplit("\t", 1)[1]) for line in lines if "\t" in line]
    assert max(values) == 10 and min(values) >= 0


def test_token_space_explainer_names_a_theme_with_plain_completions(copy_cache):
    def complete(prompt, **options):
        assert prompt.startswith(prompts.EXPLAIN_TOKENS_HEAD) and prompt.endswith("Common theme:")
        assert options["stop"] == ["\n"]
        return answer(" depending on things")

    client = FakeClient(on_complete=complete, spec="local:tiny")
    explainer = make_explainer("local:tiny", client=client)
    assert isinstance(explainer, TokenSpaceExplainer)
    with open_reader(copy_cache()) as store:
        excerpts = store.neuron_excerpts(NEURON, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])
    [text] = explainer.write(excerpts, 1)
    theme, _, quoted = text.partition(", like ")
    assert theme == "depending on things" and is_readable(text)
    from core.explain import top_tokens

    pairs = top_tokens(excerpts, 8)
    assert quoted == ", ".join(prompts.quote_token(t) for _, t in pairs[:3])
    words = [w for w, _ in pairs]
    assert client.requests[0][1].endswith(f"Words: {', '.join(words)}\nCommon theme:")


def _planted(words: list[str]) -> list:
    from core.types import NeuronExcerpt

    tokens = tuple(t for w in words for t in (w, " the"))
    activations = tuple(v for _ in words for v in (8.0, 0.0))
    return [NeuronExcerpt(NEURON, Excerpt(i, tuple(range(len(tokens))), tokens), ExcerptKind.TOP, i, Split.EXPLAIN,
                          activations) for i in range(3)]


def test_the_themes_explainer_asks_for_a_theme_of_ordinary_words_only():
    def complete(prompt, **options):
        assert prompt.endswith("Words: apple, cherry, grape, melon, pear, plum\nCommon theme:")
        return answer(" fruits")

    client = FakeClient(on_complete=complete, spec="local:tiny")
    explainer = make_explainer("baseline:themes", client=client)
    assert explainer.spec == "baseline:themes" and explainer.model == "fake-model"
    texts = explainer.write(_planted([" apple", " pear", " plum", " cherry", " grape", " melon"]), 4)
    assert texts[-1] == "fruits" and len(client.requests) == 1
    code = explainer.write(_planted(["def", " return", "(", ")", " if", " len"]), 4)
    assert "fruits" not in code and len(client.requests) == 1  # code tokens: no theme asked for


def test_clean_answer_and_unknown_explainers():
    assert clean_answer(' the main thing this neuron does is find: "dates".\nmore') == "dates"
    assert clean_answer('"a" and "b"') == '"a" and "b"'  # the edge quotes belong to the tokens
    with pytest.raises(BackendSpecError, match="unknown explainer"):
        make_explainer("gpt-4o")


def test_unreadable_candidates_are_dropped_for_the_next_one_or_the_neuron_fails(copy_cache):
    long = "the main thing this neuron does is find " + "tokens that appear in many different places " * 3
    numbers = 'the main thing this neuron does is find "return" (9.5) and "yield" (4)'
    quoted = 'the main thing this neuron does is find "a", "b", "c", "d", "e", "f"'

    def chat(messages, **options):
        return [answer(long), answer(numbers), answer(quoted), answer("the word 'return'")][: options["n"]]

    explainer = make_explainer("openai:fake-model", client=FakeClient(on_chat=chat))
    with open_results_writer(copy_cache()) as store:
        result = explain_neuron(store, NEURON, explainer, BaselineSimulator(), candidates=4)
        assert result.status == ExplanationStatus.OK and result.text == "the word 'return'"
        assert [c.text for c in result.candidates] == ["the word 'return'"]
        result = explain_neuron(store, NEURON, explainer, BaselineSimulator(), candidates=3)
        assert result.status == ExplanationStatus.FAILED
        assert result.failure.startswith("explainer: no candidate is readable (the explanation is 1")
        save_result(store, result)
        assert [r.text for r in store.explanations(NEURON)] == [None]


def test_no_stored_explanation_breaks_the_readability_rule(copy_cache):
    with open_results_writer(copy_cache()) as store:
        neurons = [NeuronId(layer, n) for layer in (0, 5, 15, 29) for n in (3, 700, 1500)]
        summary = explain_neurons(store, neurons, BaselineExplainer(), BaselineSimulator())
        assert summary.done + summary.failed == len(neurons) and summary.done >= len(neurons) - 2
        stored = [r for n in neurons for r in store.explanations(n)]
        assert stored and all(is_readable(r.text) for r in stored if r.text is not None)
        # every finished run kept its calibration score (None only where it is undefined: nothing named there)
        assert any(r.calibration_score is not None for r in stored if r.status == ExplanationStatus.OK)


def test_the_best_explanation_is_chosen_on_calibrate_never_on_score(copy_cache):
    """Two explanations of one neuron: the one that does better on the SCORE excerpts but worse on CALIBRATE is
    not the best; the score shown is the chosen one's SCORE score."""
    from core.types import Scores

    with open_results_writer(copy_cache()) as store:
        lucky = store.add_explanation(NEURON, text="lucky on score", explainer="human", model=None,
                                      prompt_version=None, simulator="baseline", status=ExplanationStatus.OK,
                                      calibration_score=0.1, scores=Scores(0.9, 0.9, 0.9, 640))
        honest = store.add_explanation(NEURON, text="good on calibrate", explainer="baseline", model=None,
                                       prompt_version=None, simulator="baseline", status=ExplanationStatus.OK,
                                       calibration_score=0.6, scores=Scores(0.4, 0.5, 0.3, 640))
        store.add_explanation(NEURON, text="never calibrated", explainer="human", model=None, prompt_version=None,
                              simulator="baseline", status=ExplanationStatus.OK, scores=Scores(0.99, 1, 1, 640))
        assert lucky != honest
        assert store.explanations(NEURON)[0].explanation_id == honest
        [layer] = store.scores_by_layer()
        assert layer.mean_score == pytest.approx(0.4)
        [row] = store.neuron_rows([NEURON]).values()
        assert row.explanation == "good on calibrate" and row.score == pytest.approx(0.4)


def test_a_score_from_the_command_line_gets_a_calibration_score(copy_cache, capsys):
    cache = str(copy_cache())
    assert main(["score", cache, "--neurons", "0:1", "--explanation", "line breaks and commas"]) == 0
    with open_reader(cache) as store:
        [record] = store.explanations(NeuronId(0, 1))
    assert record.explainer == "human" and record.calibration_score is not None


def test_first_view_explains_one_neuron_with_the_offline_default_and_writes_nothing(copy_cache):
    from core.explain import explain_on_first_view

    with open_reader(copy_cache()) as store:
        result = explain_on_first_view(store, NEURON)
        assert result.status == ExplanationStatus.OK and is_readable(result.text)
        assert result.explainer == "baseline" and result.simulator == "baseline"
        assert store.explanations(NEURON) == []


# --- failures, resume ---------------------------------------------------------------------------------------------


def test_llm_and_simulator_failures_are_stored_with_the_reason(copy_cache):
    def broken(messages, **options):
        raise LLMError("the server failed with HTTP 500 after 4 retries")

    with open_results_writer(copy_cache()) as store:
        result = explain_neuron(store, NEURON, make_explainer("openai:x", client=FakeClient(on_chat=broken)),
                                BaselineSimulator())
        assert result.status == ExplanationStatus.FAILED
        assert result.failure == "explainer: the server failed with HTTP 500 after 4 retries"
        save_result(store, result)
        [record] = store.explanations(NEURON)
        assert record.status == ExplanationStatus.FAILED and record.text is None
        assert record.failure.startswith("explainer: the server failed")

        failing = FlakySimulator({""})  # fails on every explanation
        result = explain_neuron(store, NEURON, BaselineExplainer(), failing, candidates=1)
        assert result.status == ExplanationStatus.FAILED
        assert result.failure == "simulator: answer not aligned with the text: 3 entries for 64 tokens"
        assert result.text and result.scored is None


def test_a_second_run_skips_finished_neurons_and_retries_failed_ones(copy_cache):
    neurons = [NeuronId(0, 1), NeuronId(0, 2), NeuronId(1, 3)]
    with open_results_writer(copy_cache()) as store:
        explainer = BaselineExplainer()
        first_texts = {n: explain_neuron(store, n, explainer, BaselineSimulator(), 1).text for n in neurons}
        flaky = FlakySimulator({first_texts[NeuronId(0, 2)]})
        flaky.spec = "baseline"
        seen = []
        first = explain_neurons(store, neurons, explainer, flaky, candidates=1, on_done=seen.append)
        assert (first.done, first.failed, first.skipped, first.retried) == (2, 1, 0, 0)
        assert len(seen) == 3
        [failed] = store.explanations(NeuronId(0, 2))
        assert failed.status == ExplanationStatus.FAILED and "not aligned" in failed.failure
        assert sum(layer.failed for layer in first.layers) == 1

        flaky.healed = True
        second = explain_neurons(store, neurons, explainer, flaky, candidates=1, on_done=seen.append)
        assert (second.done, second.failed, second.skipped, second.retried) == (1, 0, 2, 1)
        [retried] = store.explanations(NeuronId(0, 2))  # the failed row was replaced, not kept beside
        assert retried.status == ExplanationStatus.OK
        assert all(len(store.explanations(n)) == 1 for n in neurons)
        third = explain_neurons(store, neurons, explainer, flaky, candidates=1)
        assert (third.done, third.skipped) == (0, 3)


def test_spending_cap_stops_the_run(copy_cache):
    def capped(messages, **options):
        raise SpendingCapReached("spending cap of $0.01 reached")

    explainer = make_explainer("openai:x", client=FakeClient(on_chat=capped))
    with open_results_writer(copy_cache()) as store:
        summary = explain_neurons(store, [NeuronId(0, 1), NeuronId(0, 2)], explainer, BaselineSimulator())
        assert summary.stopped == "spending cap of $0.01 reached"
        assert summary.done == summary.failed == 0
        assert store.explanations(NeuronId(0, 1)) == []


# --- the command line ---------------------------------------------------------------------------------------------


def test_cli_explain_show_and_score(copy_cache, capsys):
    cache = str(copy_cache())
    assert main(["explain", cache, "--neurons", "0:1-2,3:4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3 explained, 0 already done" in out
    assert "cost  no language model used" in out
    assert main(["explain", cache, "--layers", "0,3", "--sample", "4", "--quiet"]) == 0
    assert "already done" in capsys.readouterr().out
    assert main(["score", cache, "--neurons", "0:1", "--explanation", "words about modules"]) == 0
    out = capsys.readouterr().out
    assert "0:1" in out
    assert main(["show", cache, "--neuron", "0:1", "--tokens"]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "human" in out and "words about modules" in out
    assert main(["info", cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["explanations"] >= 4 and info["scores"] >= 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "{cache}", "--neurons", "0:99999"], "out of range"),
        (["explain", "{cache}", "--neurons", "40:1"], "out of range"),
        (["explain", "{cache}", "--neurons", "zero"], "--neurons: cannot read"),
        (["explain", "{cache}", "--neurons", "0:1", "--explainer", "gpt-4o"], "unknown explainer"),
        (["explain", "{cache}", "--neurons", "0:1", "--simulator", "magic"], "unknown simulator"),
        (["explain", "{cache}", "--neurons", "0:1", "--explainer", "openai:gpt-4o"], "no OpenAI API key"),
        (["score", "{cache}", "--neurons", "0:1", "--explanation", "  "], "the explanation is empty"),
        (["score", "{cache}", "--neurons", "0:1", "--explanation", "x" * 5000], "5,000 characters long"),
        (["score", "{cache}", "--neurons", "0:5000", "--explanation", "dates"], "out of range"),
        (["show", "{cache}", "--neuron", "0:5000"], "out of range"),
    ],
)
def test_cli_bad_input_is_one_clear_line(copy_cache, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    cache = str(copy_cache())
    assert main([a.format(cache=cache) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


class _Refusing(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses every key (401) or knows no model (404)."""

    status = 401

    def do_POST(self) -> None:
        body = json.dumps({"error": {"message": "Incorrect API key provided" if self.status == 401 else
                                     "The model does not exist", "type": "invalid_request_error"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "message"), [(401, "API key was refused"), (404, "not found")])
def test_cli_wrong_key_or_unknown_model_is_one_clear_line(copy_cache, capsys, status, message):
    handler = type("Handler", (_Refusing,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        code = main(["explain", str(copy_cache()), "--neurons", "0:1", "--explainer", "openai:nope", "--base-url",
                     url, "--quiet"])
    finally:
        server.shutdown()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


# --- a real OpenAI-compatible server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_cache(default_model, tmp_path_factory):
    """A real cache of the default model with 8-token excerpts (4 explain, 2 calibrate, 2 + 2 score per neuron), so
    the small model answering JSON on CPU stays quick."""
    from core.corpus import build_corpus
    from core.record import BuildPlan, RecordConfig, record_corpus

    path = tmp_path_factory.mktemp("short") / "short.duckdb"
    plan = BuildPlan(model="smollm2-135m", corpus="stdlib", tokens=512, excerpt_len=8, settings={})
    record_corpus(default_model, lambda: build_corpus("stdlib", default_model.tokenizer, max_tokens=512,
                                                      excerpt_len=8),
                  path, plan, RecordConfig(top_k=8, bottom_k=4, random_samples=4), progress=False)
    return path


def test_explain_and_score_through_a_real_openai_compatible_server(openai_server, openai_server_model, short_cache):
    """transformers serve returns no logprobs, so the simulator must settle on JSON answers; whatever the small
    model writes is either scored or stored as a failure with the reason."""
    from core.llm import make_client
    from core.simulate import ApiSimulator

    spec = f"openai:{openai_server_model}"
    with open_results_writer(short_cache) as store:
        client = make_client(spec, responses=store.responses, base_url=openai_server, timeout_s=300)
        explainer = make_explainer(spec, client=client)
        simulator = ApiSimulator(client)
        result = explain_neuron(store, NEURON, explainer, simulator, candidates=1)
        save_result(store, result)
        [record] = store.explanations(NEURON)
        assert record.explainer == spec and record.model == openai_server_model
        assert record.prompt_version == prompts.EXPLAIN_ACTIVATIONS_VERSION
        if record.status == ExplanationStatus.OK:
            assert record.score_all is not None or record.score_top is None
            assert len(store.simulations(record.explanation_id)) == 4
        else:
            assert record.failure.startswith(("explainer: ", "simulator: "))
        if record.text is not None:  # the explainer wrote something, so the simulator was tried
            assert simulator.mode == "json"  # no logprobs from this server: the logprob-free path
        assert client.usage.calls >= 1 and client.usage.prompt_tokens > 0

"""core.llm: the openai backend against the tests' fault server (tests/fault_server.py: retries, timeouts, malformed
answers, accounting, the spending cap, the cache) and against a real `transformers serve`, the local backend on the
default model, and bad specs. Whole runs of the explain stage under faults are in tests/test_llm_faults.py."""

from __future__ import annotations

import email.utils
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_server import Canned, FaultServer, pieces

from core.backends import BackendSpecError
from core.llm import (
    DUMMY_API_KEY,
    Budget,
    LLMError,
    SpendingCapReached,
    make_client,
    map_concurrent,
    price_per_million,
    prompt_token_bound,
)
from core.paths import copy_cache
from core.store import DashboardCache, RecordingWriter, ResponseCache, open_results_writer


@pytest.fixture
def fake() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def responses(tmp_path: Path) -> Iterator[ResponseCache]:
    """The response cache of a fresh cache's results file, as the command line has it."""
    path = tmp_path / "c.duckdb"
    RecordingWriter.create(path).close()
    with open_results_writer(path) as writer:
        yield writer.responses


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the real API through the developer's own environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


ASK = [{"role": "user", "content": "apples, bananas, cherries: what are they?"}]


def client_for(fake: FaultServer, model: str = "gpt-4o-mini", **kwargs: Any):
    settings: dict[str, Any] = {"max_retries": 2, "timeout_s": 5.0, **kwargs}
    return make_client(f"openai:{model}", base_url=fake.url, **settings)


# --- faults: retries, timeouts, and what the user is told ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "billed"),
    [("rate_limit", False), ("server_error", False), ("drop", True), ("stall", True), ("slow_body", True),
     ("cut_body", True)],
)
def test_a_transient_fault_is_retried_then_answered(fault: str, billed: bool) -> None:
    with FaultServer(faults=[fault], retry_after="0", stall_s=3.0) as fake:
        client = client_for(fake, timeout_s=1.0)
        [answer] = client.chat(ASK)
    assert answer.text.startswith("the main thing") and not answer.cached
    assert [r.fault for r in fake.requests] == [fault, None]
    assert client.usage.calls == 1 and client.usage.failures == 0 and client.usage.attempts == 2
    # a lost answer the server produced may have been billed: its worst case is kept, never forgotten
    assert client.usage.unconfirmed_calls == int(billed)
    assert (client.usage.unconfirmed_usd > 0) == billed


def test_retry_after_is_honoured(fake: FaultServer) -> None:
    fake.faults = ["rate_limit", "rate_limit"]
    fake.retry_after = "1"
    client_for(fake).chat(ASK)
    first, second, third = fake.requests
    assert second.at - first.at >= 1.0 and third.at - second.at >= 1.0  # waited as told, never less

    date = email.utils.formatdate(time.time() + 2, usegmt=True)  # an HTTP date two seconds ahead
    with FaultServer(faults=["rate_limit"], retry_after=date) as dated:
        client_for(dated).chat(ASK)
    assert dated.requests[1].at - dated.requests[0].at >= 0.5  # whole seconds in the date: at least 1 s minus rounding


def test_a_retry_after_too_long_is_not_waited_for(fake: FaultServer) -> None:
    fake.faults = ["rate_limit"]
    fake.retry_after = "3600"
    with pytest.raises(LLMError, match=r"asks to wait 3600 s before the next request \(HTTP 429\): try again later"):
        client_for(fake).chat(ASK)
    assert len(fake.requests) == 1


def test_openai_gives_up_after_the_retries(fake: FaultServer) -> None:
    fake.faults = ["server_error"] * 3
    client = client_for(fake, max_retries=2)
    with pytest.raises(LLMError, match=r"failed with HTTP 500 after 2 retries: The server had an error"):
        client.chat(ASK)
    assert len(fake.requests) == 3
    assert client.usage.failures == 1 and client.usage.calls == 0 and client.usage.attempts == 3


@pytest.mark.timeout(60)  # without the answer deadline this would wait for a 50-second body
def test_a_slow_body_is_abandoned_at_the_deadline(fake: FaultServer) -> None:
    fake.faults = ["slow_body"] * 2
    client = client_for(fake, timeout_s=0.5, max_retries=1)
    with pytest.raises(LLMError, match=r"not complete within 0\.5 s after 1 retry: is the server overloaded"):
        client.chat(ASK)
    assert fake.applied()["slow_body"] == 2 and client.usage.unconfirmed_calls == 2


def test_openai_wrong_key_is_not_retried(fake: FaultServer) -> None:
    fake.faults = ["unauthorized"]
    with pytest.raises(LLMError, match=r"^the API key was refused by http://127\.0\.0\.1:\d+/v1 \(401\)"):
        client_for(fake, api_key="sk-wrong-key").chat(ASK)
    assert len(fake.requests) == 1
    assert fake.requests[0].header("authorization") == "Bearer sk-wrong-key"


def test_openai_unknown_model(fake: FaultServer) -> None:
    fake.faults = ["unknown_model"]
    with pytest.raises(LLMError, match=r"^model gpt-9 not found on http://127\.0\.0\.1:\d+/v1 \(404\)"):
        client_for(fake, model="gpt-9").complete("hello")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "fault",
    ["truncated_json", "wrong_format", Canned(200, '"fruits"'), Canned(200, '{"object": "chat.completion", '
                                                                          '"choices": []}'),
     Canned(200, "<html><body>502 Bad Gateway</body></html>"), Canned(200, '{"choices": [{"message": 7}]}')],
)
def test_openai_malformed_answer(fake: FaultServer, fault: Any, responses: ResponseCache) -> None:
    fake.faults = [fault]
    client = client_for(fake, responses=responses)
    with pytest.raises(LLMError, match=r"returned a malformed chat\.completions answer for gpt-4o-mini"):
        client.chat(ASK)
    assert client.usage.failures == 1
    [answer] = client.chat(ASK)  # nothing malformed was cached: asked again, answered well
    assert not answer.cached and len(fake.requests) == 2


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_logprobs_that_do_not_spell_the_answer_are_rejected(
    fake: FaultServer, endpoint: str, responses: ResponseCache
) -> None:
    fake.faults = ["misaligned_logprobs"]
    client = client_for(fake, responses=responses)

    def ask() -> Any:
        if endpoint == "chat":
            return client.chat(ASK, top_logprobs=2)[0]
        return client.complete("apples,\tunknown", echo=True, logprobs=2, max_tokens=1)

    with pytest.raises(LLMError, match="cannot be aligned"):
        ask()
    answer = ask()
    assert answer.logprobs is not None and "".join(t.token for t in answer.logprobs) == answer.text
    assert fake.applied() == {"misaligned_logprobs": 1} and len(fake.requests) == 2


def test_an_answer_without_usage_counts_its_worst_case(fake: FaultServer) -> None:
    fake.faults = ["no_usage"]
    client = client_for(fake, model="gpt-4o")
    [answer] = client.chat(ASK, max_tokens=50)
    assert answer.text and client.usage.calls == 1
    assert client.usage.prompt_tokens == 0 and client.usage.unconfirmed_calls == 1
    worst = client.estimate_cost(prompt_token_bound([ASK[0]["content"]]), 50)
    assert client.usage.unconfirmed_usd == pytest.approx(worst)
    assert client.budget.spent_usd == pytest.approx(worst)
    assert "1 lost answers may also have been billed" in client.usage.describe()


def test_openai_server_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client("openai:gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(LLMError, match=rf"^cannot reach http://127\.0\.0\.1:{port}/v1 .*is the server running"):
        client.chat(ASK)
    assert client.usage.unconfirmed_calls == 0  # nothing was sent, so nothing can have been billed


# --- what is sent and what is parsed ---------------------------------------------------------------------------------


def test_openai_chat_parses_top_logprobs(fake: FaultServer) -> None:
    client = client_for(fake)
    answers = client.chat(ASK, max_tokens=5, top_logprobs=2, n=2, stop=["\n"], json_mode=True)
    sent = fake.requests[0].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["n"] == 2
    assert sent["max_tokens"] == 5 and sent["stop"] == ["\n"] and sent["response_format"] == {"type": "json_object"}
    assert fake.requests[0].header("authorization") == f"Bearer {DUMMY_API_KEY}"  # a custom server gets a dummy key
    assert len(answers) == 2
    logprobs = answers[1].logprobs
    assert logprobs is not None and [t.token for t in logprobs] == pieces(answers[1].text)
    assert len(logprobs) == 5 and answers[0].finish_reason == "length"  # cut at max_tokens
    assert all(t.logprob == -0.1 and len(t.top) == 2 for t in logprobs)
    assert logprobs[0].top[0][1] >= logprobs[0].top[1][1]  # most likely first


def test_openai_chat_without_logprobs(fake: FaultServer) -> None:
    [answer] = client_for(fake).chat(ASK)
    assert answer.logprobs is None and answer.finish_reason == "stop"
    assert "logprobs" not in fake.requests[0].body


def test_openai_complete_parses_echoed_logprobs(fake: FaultServer) -> None:
    prompt = "Description: apples\n<start>\napples\tunknown\nplums\tunknown"
    answer = client_for(fake).complete(prompt, max_tokens=1, echo=True, logprobs=2)
    assert fake.requests[0].path == "/v1/completions"
    assert fake.requests[0].body["echo"] is True and fake.requests[0].body["logprobs"] == 2
    assert answer.text.startswith(prompt) and answer.logprobs is not None
    assert "".join(t.token for t in answer.logprobs) == answer.text
    assert math.isnan(answer.logprobs[0].logprob) and answer.logprobs[0].top == ()  # the API gives no logprob there
    placeholders = [t for t in answer.logprobs if t.token == "unknown"]
    assert [p.top[0][0] for p in placeholders] == ["9", "0"]  # the fake model: the description names apples only
    assert answer.finish_reason == "length"


# --- accounting, spending cap, concurrency ---------------------------------------------------------------------------


def test_tokens_and_cost_are_counted(fake: FaultServer) -> None:
    fake.usage = (1000, 100)
    client = client_for(fake, model="gpt-4o-mini-2024-07-18")  # a dated snapshot takes its family's price
    client.chat(ASK)
    client.complete("hello")
    input_price, output_price = price_per_million("gpt-4o-mini")  # type: ignore[misc]
    assert client.usage.calls == 2 and client.usage.prompt_tokens == 2000 and client.usage.completion_tokens == 200
    assert client.usage.cost_usd == pytest.approx(2 * (1000 * input_price + 100 * output_price) / 1e6)
    assert client.usage.cost_usd == pytest.approx(fake.served_cost(price_per_million))
    assert "2 calls (0 cached)" in client.usage.describe()

    unpriced = client_for(fake, model="my-own-model", max_cost_usd=0.01)
    unpriced.chat(ASK)
    assert unpriced.usage.cost_usd is None and unpriced.usage.prompt_tokens == 1000
    assert unpriced.estimate_cost(10, 10) is None


def test_spending_cap_stops_before_sending(fake: FaultServer) -> None:
    fake.usage = (200_000, 10_000)  # gpt-4o: 200k x $2.50/M + 10k x $10/M = $0.60 a call
    client = client_for(fake, model="gpt-4o", max_cost_usd=1.00)
    client.chat(ASK, max_tokens=10)
    client.chat(ASK, max_tokens=11)  # $0.60 spent + a small estimate: still under $1.00
    assert client.usage.cost_usd == pytest.approx(1.20)
    with pytest.raises(SpendingCapReached, match=r"spending cap of \$1\.00 reached: \$1\.2000 spent"):
        client.chat(ASK, max_tokens=12)
    assert len(fake.requests) == 2  # the third call never reached the server
    assert client.usage.failures == 0


def test_spending_cap_counts_the_worst_case_of_the_next_call(fake: FaultServer) -> None:
    client = client_for(fake, model="gpt-4o", max_cost_usd=0.005)
    with pytest.raises(SpendingCapReached):
        client.chat(ASK, max_tokens=1000)  # up to 1000 x $10/M = $0.01 of output alone
    client.chat(ASK, max_tokens=100)
    assert len(fake.requests) == 1


def test_the_prompt_bound_is_never_below_what_a_server_bills(fake: FaultServer) -> None:
    """The greedy server bills every prompt byte as a token and max_tokens in full: the cap must still hold."""
    fake.greedy = True
    cap = 0.01
    client = client_for(fake, model="gpt-4o", max_cost_usd=cap)
    text = "şehir İstanbul 東京 🙂 " * 20  # many bytes per character: the worst case for a chars-based estimate
    with pytest.raises(SpendingCapReached):
        for _ in range(100):
            client.chat([{"role": "system", "content": "x"}, {"role": "user", "content": text}], max_tokens=40)
    assert fake.served_cost(price_per_million) <= cap
    assert client.usage.cost_usd == pytest.approx(fake.served_cost(price_per_million))


def test_one_budget_caps_two_clients(fake: FaultServer) -> None:
    fake.greedy = True  # bills the most the prompts and max_tokens allow
    budget = Budget(0.01)
    big = client_for(fake, model="gpt-4o", budget=budget)
    small = client_for(fake, model="gpt-4o-mini", budget=budget)
    with pytest.raises(SpendingCapReached):
        for _ in range(1000):
            big.chat(ASK, max_tokens=50)
            small.chat(ASK, max_tokens=50)
    served = fake.served_tokens()
    assert served["gpt-4o"][0] > 0 and served["gpt-4o-mini"][0] > 0
    assert fake.served_cost(price_per_million) <= 0.01
    assert budget.spent_usd == pytest.approx(fake.served_cost(price_per_million))
    assert budget.spent_usd == pytest.approx(big.usage.cost_usd + small.usage.cost_usd)


def test_a_lost_answer_counts_against_the_cap(fake: FaultServer) -> None:
    fake.faults = ["cut_body"]
    client = client_for(fake, model="gpt-4o", max_retries=0)
    worst = client.estimate_cost(prompt_token_bound([ASK[0]["content"]]), 100)
    client.budget.max_usd = 1.5 * worst  # room for one worst case, not two
    with pytest.raises(LLMError, match="broke off"):
        client.chat(ASK, max_tokens=100)
    with pytest.raises(SpendingCapReached):
        client.chat(ASK, max_tokens=100)
    assert len(fake.requests) == 1 and client.budget.spent_usd == pytest.approx(worst)


def test_concurrency_is_bounded_and_results_keep_their_order(fake: FaultServer) -> None:
    fake.faults = ["stall"] * 6
    fake.stall_s = 0.3
    client = client_for(fake, concurrency=2)

    def ask(index: int) -> str:
        if index == 3:
            raise ValueError("neuron 3 is bad")
        [answer] = client.chat([{"role": "user", "content": f"question {index}"}], max_tokens=1)
        return f"{index}:{answer.text}"

    results = map_concurrent(ask, range(6), concurrency=6)
    assert results[:3] == ["0:the", "1:the", "2:the"] and results[4:] == ["4:the", "5:the"]
    assert isinstance(results[3], ValueError)
    assert fake.max_in_flight == 2  # six threads, two requests at a time
    assert client.usage.calls == 5
    assert map_concurrent(str, [], 4) == []


# --- the response cache ----------------------------------------------------------------------------------------------


def test_response_cache_answers_repeats_and_survives_a_copy(fake: FaultServer, tmp_path: Path) -> None:
    fake.usage = (12, 3)
    path = tmp_path / "run.duckdb"
    RecordingWriter.create(path).close()
    store = open_results_writer(path)
    client = client_for(fake, responses=store.responses)
    first = client.chat(ASK, top_logprobs=2)
    again = client.chat(ASK, top_logprobs=2)
    assert len(fake.requests) == 1
    assert not first[0].cached and again[0].cached
    assert again[0].text == first[0].text and again[0].logprobs == first[0].logprobs
    assert client.usage.calls == 2 and client.usage.cached_calls == 1 and client.usage.prompt_tokens == 12
    client.chat(ASK, top_logprobs=3)  # another parameter is another request
    client.complete("hello")
    client.complete("hello")
    assert len(fake.requests) == 3
    assert client.usage.cost_usd == pytest.approx(3 * client.estimate_cost(12, 3))  # type: ignore[operator]
    store.close()

    copy = tmp_path / "copy.duckdb"
    copy_cache(path, copy)
    with open_results_writer(copy) as reopened:
        again = client_for(fake, responses=reopened.responses).chat(ASK, top_logprobs=2)
    assert again[0].cached and again[0].text == first[0].text
    assert len(fake.requests) == 3


def test_cache_key_covers_the_server() -> None:
    def key(base_url: str, api_key: str = "k") -> str:
        client = make_client("openai:gpt-4o-mini", base_url=base_url, api_key=api_key)
        return client.cache_key("chat.completions", {"model": "gpt-4o-mini", "messages": ASK})  # type: ignore[attr-defined]

    assert key("http://127.0.0.1:9/v1") == key("http://127.0.0.1:9/v1/", api_key="other")  # the key is not asked
    assert key("http://127.0.0.1:9/v1") != key("http://127.0.0.1:10/v1")


def test_response_cache_in_the_notes_file_of_the_dashboard(fake: FaultServer, tmp_path: Path) -> None:
    path = tmp_path / "built.duckdb"
    RecordingWriter.create(path).close()
    for _ in range(2):  # the dashboard started twice
        cache = DashboardCache(path)
        try:
            [answer] = client_for(fake, responses=cache.notes.responses).chat(ASK)
        finally:
            cache.close()
    assert answer.cached and len(fake.requests) == 1


# --- bad specs and keys ----------------------------------------------------------------------------------------------


def test_no_api_key_for_the_openai_api() -> None:
    with pytest.raises(LLMError, match=r"^no OpenAI API key: set OPENAI_API_KEY, .*--explainer baseline"):
        make_client("openai:gpt-4o-mini")


@pytest.mark.parametrize("spec", ["gpt-4o", "anthropic:claude", "openai:", ""])
def test_bad_spec(spec: str) -> None:
    with pytest.raises(BackendSpecError, match=r"openai:MODEL"):
        make_client(spec)


def test_baseline_needs_no_client() -> None:
    with pytest.raises(LLMError, match="needs no language model client"):
        make_client("baseline")


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(LLMError, match="more than 0 seconds"):
        make_client("openai:gpt-4o-mini", base_url="http://127.0.0.1:9/v1", timeout_s=0)


# --- the real server: transformers serve -----------------------------------------------------------------------------


def test_real_server_chat_and_complete(openai_server: str, openai_server_model: str) -> None:
    client = make_client(f"openai:{openai_server_model}", base_url=openai_server, timeout_s=300, max_retries=1)
    [answer] = client.chat([{"role": "user", "content": "Name a fruit."}], max_tokens=3, top_logprobs=2)
    assert answer.text.strip() and answer.logprobs is None  # transformers serve returns no logprobs
    assert answer.prompt_tokens > 5 and 0 < answer.completion_tokens <= 3
    completion = client.complete("apples, bananas, oranges,", max_tokens=3, logprobs=2)
    assert completion.text.strip() and completion.logprobs is None
    assert client.usage.calls == 2 and client.usage.failures == 0
    assert client.usage.prompt_tokens >= answer.prompt_tokens + 5
    assert client.usage.cost_usd is None  # a local path is no priced model


def test_real_server_unknown_model(openai_server: str) -> None:
    client = make_client("openai:no-such-model", base_url=openai_server, max_retries=0)
    with pytest.raises(LLMError, match=r"rejected the request for no-such-model .*no-such-model"):
        client.chat(ASK, max_tokens=1)


# --- the local backend -----------------------------------------------------------------------------------------------


def test_local_complete_greedy_logprobs_match_a_forward_pass() -> None:
    import torch

    from core.llm import local_model

    client = make_client("local")
    assert client.spec == "local:smollm2-135m"
    prompt = "apples, bananas, oranges,"
    answer = client.complete(prompt, max_tokens=3, logprobs=3)
    assert answer.text and answer.logprobs is not None and len(answer.logprobs) <= 3
    first = answer.logprobs[0]
    assert first.token == first.top[0][0] and first.logprob == first.top[0][1]  # greedy takes the most likely
    assert [v for _, v in first.top] == sorted((v for _, v in first.top), reverse=True)

    subject = local_model("smollm2-135m")
    ids = subject.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(subject.model(input_ids=ids).logits[0, -1], dim=-1)
    assert first.logprob == pytest.approx(float(expected.max()), abs=1e-4)
    assert client.usage.calls == 1 and client.usage.prompt_tokens == ids.shape[1]
    assert client.usage.completion_tokens == answer.completion_tokens and client.usage.cost_usd == 0.0


def test_local_complete_echo_and_stop() -> None:
    client = make_client("local")
    prompt = "Monday, Tuesday, Wednesday"
    answer = client.complete(prompt, max_tokens=4, echo=True, logprobs=1, stop=[","])
    assert answer.text.startswith(prompt) and "," not in answer.text[len(prompt):]
    tokens = answer.logprobs
    assert tokens is not None and "".join(t.token for t in tokens).startswith(prompt)
    assert math.isnan(tokens[0].logprob)  # no BOS: nothing predicts the first token
    assert all(t.logprob <= 0 and len(t.top) == 1 for t in tokens[1:])
    # max_tokens=0: only the prompt's own logprobs (one forward pass), the same as the echoed part above
    scored = client.complete(prompt, max_tokens=0, echo=True, logprobs=1)
    assert scored.text == prompt and scored.completion_tokens == 0 and scored.logprobs is not None
    echoed = tokens[: len(scored.logprobs)]
    assert [t.token for t in scored.logprobs] == [t.token for t in echoed]
    assert [t.logprob for t in scored.logprobs[1:]] == pytest.approx([t.logprob for t in echoed[1:]])


def test_local_chat() -> None:
    client = make_client("local")
    answers = client.chat([{"role": "user", "content": "Name a fruit."}], max_tokens=4, top_logprobs=2, n=2)
    assert len(answers) == 2 and answers[0] == answers[1]  # greedy: n identical answers
    assert answers[0].text.strip() and answers[0].finish_reason in ("stop", "length")
    assert answers[0].logprobs is not None and all(len(t.top) == 2 for t in answers[0].logprobs)
    assert answers[0].prompt_tokens > 10  # the chat template wraps the message
    assert client.usage.calls == 1 and client.usage.completion_tokens == answers[0].completion_tokens

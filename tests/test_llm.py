"""core.llm: the openai backend against a fake server of our own (faults, cap, cache) and against a real
`transformers serve`, the local backend on the default model, and bad specs."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.backends import BackendSpecError
from core.llm import (
    DUMMY_API_KEY,
    LLMError,
    SpendingCapReached,
    make_client,
    map_concurrent,
    price_per_million,
)
from core.paths import copy_cache
from core.store import DashboardCache, RecordingWriter, open_results_writer

# --- a fake OpenAI-compatible server ---------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the fake server does with one request."""

    status: int = 200
    body: str | None = None
    """Raw body to send; None: a well-formed answer to the request."""
    sleep_s: float = 0.0
    """Wait this long before answering (longer than the client's timeout: a timeout)."""


def error_body(message: str, code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})


@dataclass
class FakeServer:
    """Answers /v1/chat/completions and /v1/completions; replies follow `script`, then well-formed answers."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    usage: tuple[int, int] = (12, 3)
    """(prompt_tokens, completion_tokens) reported by every well-formed answer."""
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        prompt_tokens, completion_tokens = self.usage
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if path.endswith("/chat/completions"):
            choices = []
            for index in range(request.get("n", 1)):
                choice: dict[str, Any] = {"index": index, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "fruits"}}
                if request.get("logprobs"):
                    k = request.get("top_logprobs", 0)
                    choice["logprobs"] = {"content": [
                        {"token": "fru", "logprob": -0.25, "bytes": None,
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": None}
                                          for t, v in [("fru", -0.25), ("app", -1.5), ("veg", -3.0)][:k]]},
                        {"token": "its", "logprob": -0.01, "bytes": None,
                         "top_logprobs": [{"token": t, "logprob": v, "bytes": None}
                                          for t, v in [("its", -0.01), ("it", -4.6), ("s", -6.0)][:k]]},
                    ]}
                choices.append(choice)
            return {"id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                    "choices": choices, "usage": usage}
        text = " fruits"
        choice = {"index": 0, "finish_reason": "length", "text": request["prompt"] + text if request.get("echo")
                  else text, "logprobs": None}
        if request.get("logprobs") is not None:
            tokens, values = ["apples", ",", " fruits"], [None, -2.0, -0.5]
            tops = [None, {",": -2.0, " and": -1.0}, {" fruits": -0.5, " food": -2.5}]
            if not request.get("echo"):
                tokens, values, tops = tokens[2:], values[2:], tops[2:]
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                                  "text_offset": list(range(len(tokens)))}
        return {"id": "y", "object": "text_completion", "created": 0, "model": request["model"],
                "choices": [choice], "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    server: _FakeHTTPServer

    def do_POST(self) -> None:
        fake = self.server.fake
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        with fake.lock:
            fake.requests.append({"path": self.path, "body": request, "auth": self.headers.get("authorization")})
            reply = fake.script.pop(0) if fake.script else Reply()
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            time.sleep(reply.sleep_s)
            payload = (reply.body if reply.body is not None else json.dumps(fake.answer(self.path, request))).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("retry-after-ms", "10")  # keeps the SDK's backoff short in tests
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped waiting (the timeout case)
        finally:
            with fake.lock:
                fake.in_flight -= 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = _FakeHTTPServer(("127.0.0.1", 0), _Handler)
    server.fake = FakeServer(url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the real API through the developer's own environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


ASK = [{"role": "user", "content": "apples, bananas, cherries: what are they?"}]


def client_for(fake: FakeServer, model: str = "gpt-4o-mini", **kwargs: Any):
    settings: dict[str, Any] = {"max_retries": 2, "timeout_s": 5.0, **kwargs}
    return make_client(f"openai:{model}", base_url=fake.url, **settings)


# --- faults: the SDK's retries, and what the user is told ------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_openai_retries_a_transient_error_then_answers(fake: FakeServer, status: int) -> None:
    fake.script = [Reply(status, error_body("slow down" if status == 429 else "oops"))]
    client = client_for(fake)
    [answer] = client.chat(ASK)
    assert answer.text == "fruits" and not answer.cached
    assert len(fake.requests) == 2  # one failure, one retry
    assert client.usage.calls == 1 and client.usage.failures == 0


def test_openai_retries_after_a_timeout(fake: FakeServer) -> None:
    fake.script = [Reply(sleep_s=2.0)]
    client = client_for(fake, timeout_s=0.5)
    started = time.monotonic()
    [answer] = client.chat(ASK)
    assert answer.text == "fruits"
    assert len(fake.requests) == 2
    assert time.monotonic() - started < 2.0  # it gave up on the slow answer instead of waiting for it


def test_openai_gives_up_after_the_retries(fake: FakeServer) -> None:
    fake.script = [Reply(500, error_body("the model crashed"))] * 3
    client = client_for(fake, max_retries=2)
    with pytest.raises(LLMError, match=r"failed with HTTP 500 after 2 retries: the model crashed"):
        client.chat(ASK)
    assert len(fake.requests) == 3
    assert client.usage.failures == 1 and client.usage.calls == 0


def test_openai_wrong_key_is_not_retried(fake: FakeServer) -> None:
    fake.script = [Reply(401, error_body("Incorrect API key provided", "invalid_api_key"))]
    with pytest.raises(LLMError, match=r"^the API key was refused by http://127\.0\.0\.1:\d+/v1 \(401\)"):
        client_for(fake, api_key="sk-wrong").chat(ASK)
    assert len(fake.requests) == 1
    assert fake.requests[0]["auth"] == "Bearer sk-wrong"


def test_openai_unknown_model(fake: FakeServer) -> None:
    fake.script = [Reply(404, error_body("The model `gpt-9` does not exist", "model_not_found"))]
    with pytest.raises(LLMError, match=r"^model gpt-9 not found on http://127\.0\.0\.1:\d+/v1 \(404\)"):
        client_for(fake, model="gpt-9").complete("hello")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("body", ["{not json", '{"object": "chat.completion", "choices": []}', '"fruits"'])
def test_openai_malformed_answer(fake: FakeServer, body: str) -> None:
    fake.script = [Reply(200, body)]
    client = client_for(fake)
    with pytest.raises(LLMError, match=r"returned a malformed chat\.completions answer for gpt-4o-mini"):
        client.chat(ASK)
    assert client.usage.failures == 1


def test_openai_server_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client("openai:gpt-4o-mini", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(LLMError, match=rf"^cannot reach http://127\.0\.0\.1:{port}/v1 .*is the server running"):
        client.chat(ASK)


# --- what is sent and what is parsed ---------------------------------------------------------------------------------


def test_openai_chat_parses_top_logprobs(fake: FakeServer) -> None:
    client = client_for(fake)
    answers = client.chat(ASK, max_tokens=5, top_logprobs=2, n=2, stop=["\n"], json_mode=True)
    sent = fake.requests[0]["body"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["n"] == 2
    assert sent["max_tokens"] == 5 and sent["stop"] == ["\n"] and sent["response_format"] == {"type": "json_object"}
    assert fake.requests[0]["auth"] == f"Bearer {DUMMY_API_KEY}"  # a custom server without a key gets a dummy one
    assert len(answers) == 2
    logprobs = answers[1].logprobs
    assert logprobs is not None and [t.token for t in logprobs] == ["fru", "its"]
    assert logprobs[0].logprob == -0.25 and logprobs[0].top == (("fru", -0.25), ("app", -1.5))
    assert logprobs[1].top == (("its", -0.01), ("it", -4.6))
    assert answers[0].finish_reason == "stop"


def test_openai_chat_without_logprobs(fake: FakeServer) -> None:
    [answer] = client_for(fake).chat(ASK)
    assert answer.logprobs is None
    assert "logprobs" not in fake.requests[0]["body"]


def test_openai_complete_parses_echoed_logprobs(fake: FakeServer) -> None:
    answer = client_for(fake).complete("apples,", max_tokens=1, echo=True, logprobs=2)
    assert fake.requests[0]["path"] == "/v1/completions"
    assert fake.requests[0]["body"]["echo"] is True and fake.requests[0]["body"]["logprobs"] == 2
    assert answer.text == "apples, fruits"
    assert answer.logprobs is not None and [t.token for t in answer.logprobs] == ["apples", ",", " fruits"]
    assert math.isnan(answer.logprobs[0].logprob) and answer.logprobs[0].top == ()  # the API gives no logprob there
    assert answer.logprobs[1].top == ((" and", -1.0), (",", -2.0))  # most likely first
    assert answer.finish_reason == "length"


# --- accounting, spending cap, concurrency ---------------------------------------------------------------------------


def test_tokens_and_cost_are_counted(fake: FakeServer) -> None:
    fake.usage = (1000, 100)
    client = client_for(fake, model="gpt-4o-mini-2024-07-18")  # a dated snapshot takes its family's price
    client.chat(ASK)
    client.complete("hello")
    input_price, output_price = price_per_million("gpt-4o-mini")  # type: ignore[misc]
    assert client.usage.calls == 2 and client.usage.prompt_tokens == 2000 and client.usage.completion_tokens == 200
    assert client.usage.cost_usd == pytest.approx(2 * (1000 * input_price + 100 * output_price) / 1e6)
    assert "2 calls (0 cached)" in client.usage.describe()

    unpriced = client_for(fake, model="my-own-model", max_cost_usd=0.01)
    unpriced.chat(ASK)
    assert unpriced.usage.cost_usd is None and unpriced.usage.prompt_tokens == 1000
    assert unpriced.estimate_cost(10, 10) is None


def test_spending_cap_stops_before_sending(fake: FakeServer) -> None:
    fake.usage = (200_000, 10_000)  # gpt-4o: 200k x $2.50/M + 10k x $10/M = $0.60 a call
    client = client_for(fake, model="gpt-4o", max_cost_usd=1.00)
    client.chat(ASK, max_tokens=10)
    client.chat(ASK, max_tokens=11)  # $0.60 spent + a small estimate: still under $1.00
    assert client.usage.cost_usd == pytest.approx(1.20)
    with pytest.raises(SpendingCapReached, match=r"spending cap of \$1\.00 reached: \$1\.2000 spent"):
        client.chat(ASK, max_tokens=12)
    assert len(fake.requests) == 2  # the third call never reached the server
    assert client.usage.failures == 0


def test_spending_cap_counts_the_worst_case_of_the_next_call(fake: FakeServer) -> None:
    client = client_for(fake, model="gpt-4o", max_cost_usd=0.005)
    with pytest.raises(SpendingCapReached):
        client.chat(ASK, max_tokens=1000)  # up to 1000 x $10/M = $0.01 of output alone
    client.chat(ASK, max_tokens=100)
    assert len(fake.requests) == 1


def test_concurrency_is_bounded_and_results_keep_their_order(fake: FakeServer) -> None:
    fake.script = [Reply(sleep_s=0.3)] * 6
    client = client_for(fake, concurrency=2)

    def ask(index: int) -> str:
        if index == 3:
            raise ValueError("neuron 3 is bad")
        [answer] = client.chat([{"role": "user", "content": f"question {index}"}])
        return f"{index}:{answer.text}"

    results = map_concurrent(ask, range(6), concurrency=6)
    assert results[:3] == ["0:fruits", "1:fruits", "2:fruits"] and results[4:] == ["4:fruits", "5:fruits"]
    assert isinstance(results[3], ValueError)
    assert fake.max_in_flight == 2  # six threads, two requests at a time
    assert client.usage.calls == 5
    assert map_concurrent(str, [], 4) == []


# --- the response cache ----------------------------------------------------------------------------------------------


def test_response_cache_answers_repeats_and_survives_a_copy(fake: FakeServer, tmp_path: Path) -> None:
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
    assert again[0].cached and again[0].text == "fruits"
    assert len(fake.requests) == 3


def test_cache_key_covers_the_server() -> None:
    def key(base_url: str, api_key: str = "k") -> str:
        client = make_client("openai:gpt-4o-mini", base_url=base_url, api_key=api_key)
        return client.cache_key("chat.completions", {"model": "gpt-4o-mini", "messages": ASK})  # type: ignore[attr-defined]

    assert key("http://127.0.0.1:9/v1") == key("http://127.0.0.1:9/v1/", api_key="other")  # the key is not asked
    assert key("http://127.0.0.1:9/v1") != key("http://127.0.0.1:10/v1")


def test_response_cache_in_the_notes_file_of_the_dashboard(fake: FakeServer, tmp_path: Path) -> None:
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

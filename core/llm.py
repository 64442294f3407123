"""LLM backends for the explain, simulate and score stages: one interface over three kinds of model.

- ``openai:MODEL``: the official openai SDK against api.openai.com or any OpenAI-compatible server (``base_url`` or
  OPENAI_BASE_URL: vLLM, Ollama, LM Studio, ``transformers serve``). This module makes each HTTP attempt itself
  (the SDK's own retries are off) so that every attempt is accounted: retries with backoff on 408/409/429/5xx,
  dropped connections and timeouts, honouring Retry-After; a deadline on the whole answer, not only between bytes;
  bounded concurrency; token and cost accounting; a spending cap that holds even when answers are lost; and a
  response cache in the store (``llm_cache``) that keeps only answers that parsed.
- ``local[:MODEL]``: a transformers causal LM in this process (default: the built-in smollm2-135m), free.
- ``baseline`` is not a language model: the explain stage handles it without a client.

The API key goes only into the Authorization header of requests to the configured base URL; it is never part of a
cache key, a message or a log line, and a server that echoes it back has it replaced by "[API key]" before the
answer is read or cached.

Reads and writes: an ``llm_cache`` table (core.store.ResponseCache: the results file's for the command line, the
notes file's for the dashboard), one row per answer as soon as it parsed, so a stopped run never pays twice.
Importing this module needs no key, network or GPU.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import openai

    from core.models import SubjectModel
    from core.store import ResponseCache

log = logging.getLogger(__name__)

OPENAI_ENDPOINT = "https://api.openai.com/v1"
"""The real OpenAI API; any other base_url is a self-hosted or third-party OpenAI-compatible server."""

DUMMY_API_KEY = "not-needed"
"""Sent to a custom base_url when no key is given: local servers ignore the key but the SDK requires one."""

REDACTED = "[API key]"
"""What replaces the API key in anything a server sends back."""

# USD per 1M tokens (input, output), standard tier, as of 2025-08 (https://openai.com/api/pricing); dated snapshots
# such as gpt-4o-mini-2024-07-18 take their family's price. A model not listed here is unpriced (cost None).
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
}

CHARS_PER_TOKEN_ESTIMATE = 3.0
"""A typical-case estimate of prompt tokens for displays (English averages about 4 characters per token). The
spending cap does not use it: it uses `prompt_token_bound`, which can never be too low."""

PROMPT_OVERHEAD_TOKENS = 64
"""Tokens a chat template may add to a request besides its messages (reply priming, a default system text)."""

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat template may add around each message (role markers)."""

MAX_RETRY_AFTER_S = 60.0
"""The longest Retry-After a call waits for; a server that asks for more is told to be tried again later."""

BACKOFF_S = (0.5, 8.0)
"""First and longest wait between attempts when the server names none (doubling, minus up to 25% jitter)."""

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""An answer body larger than this is abandoned (no explain or simulate answer comes near it)."""

SLOW_HINT = "is the server overloaded? (--timeout gives it longer)"
"""What to do about answers that do not arrive in time."""
DROP_HINT = "is it a proxy, or a server that restarts?"
"""What to do about connections that break."""

MIN_SECRET_CHARS = 8
"""Keys shorter than this are not searched for in answers (too likely to match ordinary text)."""


class LLMError(Exception):
    """A language-model call that cannot succeed; the message is one line saying what to do."""


class SpendingCapReached(LLMError):
    """The next call could take the run past its spending cap, so it was not sent."""


@dataclass(frozen=True)
class TokenLogprob:
    """One token of an answer (or of an echoed prompt) with its log-probability."""

    token: str
    """The token's text as the server reports it (e.g. " the")."""
    logprob: float
    """Natural log of its probability; NaN where the server gives none (the first token of an echoed prompt)."""
    top: tuple[tuple[str, float], ...]
    """The most likely tokens at this position with their logprobs, most likely first; () when none were asked."""


@dataclass(frozen=True)
class Completion:
    """One answer of a chat or completions call."""

    text: str
    """The generated text (with echo: the prompt followed by the generated text)."""
    logprobs: tuple[TokenLogprob, ...] | None
    """Per-token logprobs when asked for and returned; None when the server returns none (transformers serve).
    When present, their tokens spell `text` exactly (an answer whose logprobs do not is rejected as malformed)."""
    prompt_tokens: int
    """Prompt tokens of the whole call (shared by the n answers of one call)."""
    completion_tokens: int
    """Generated tokens of the whole call (all n answers together)."""
    cached: bool
    """True when the answer came from the response cache: nothing was sent and nothing paid."""
    finish_reason: str | None
    """"stop" (end of text or a stop sequence), "length" (max_tokens reached), or what the server says."""


@dataclass
class Usage:
    """What a client has done so far. Token counts and cost cover calls that reached the model (not cached ones)."""

    calls: int = 0
    """Calls answered, cached ones included."""
    cached_calls: int = 0
    """Calls answered from the response cache."""
    prompt_tokens: int = 0
    """Prompt tokens the server reported (answers that failed to parse included: they were billed)."""
    completion_tokens: int = 0
    """Tokens generated, as the server reported them."""
    cost_usd: float | None = 0.0
    """Money spent in US dollars by the server's own counts; None when the model has no known price."""
    failures: int = 0
    """Calls that failed (after the retries) or returned a malformed answer."""
    attempts: int = 0
    """HTTP requests sent, retries included."""
    unconfirmed_calls: int = 0
    """Attempts the server may have billed whose token counts could not be read (a timeout, a connection lost
    after the request was sent, an unreadable answer, an answer without usage)."""
    unconfirmed_usd: float | None = 0.0
    """The worst case of those attempts (their max_tokens and prompt bound); None for an unpriced model."""

    def describe(self) -> str:
        """One line for a run's summary, e.g. "12 calls (3 cached), 4,512 + 380 tokens, $0.0012"."""
        cost = "cost unknown (unpriced model)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        failed = f", {self.failures} failed" if self.failures else ""
        unconfirmed = ""
        if self.unconfirmed_calls:
            worst = "" if self.unconfirmed_usd is None else f" (up to ${self.unconfirmed_usd:.4f} more)"
            unconfirmed = f"; {self.unconfirmed_calls} lost answers may also have been billed{worst}"
        return (
            f"{self.calls} calls ({self.cached_calls} cached{failed}), "
            f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens, {cost}{unconfirmed}"
        )


class LLMClient(Protocol):
    """What the explain, simulate and score stages call. Implementations are safe to share between threads."""

    spec: str
    """The resolved spec: "openai:gpt-4o-mini", "local:smollm2-135m"."""
    model: str
    """The model name sent to the server or loaded in process."""
    usage: Usage
    """Running totals (updated under a lock)."""

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        n: int = 1,
        top_logprobs: int | None = None,
        json_mode: bool = False,
        stop: Sequence[str] | None = None,
    ) -> list[Completion]:
        """n answers to a chat ({"role", "content"} messages); top_logprobs asks for that many alternatives."""
        ...

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        echo: bool = False,
        logprobs: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        """Continue plain text; echo returns the prompt's own tokens (with logprobs) before the generated ones."""
        ...

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for these token counts; None when the model has no known price."""
        ...


class Budget:
    """A spending cap shared by every client of one run (an explainer and a simulator on two priced models count
    against the same cap). Spent money is the servers' own counts plus the worst case of attempts whose counts were
    lost; each attempt reserves its worst case before it is sent."""

    def __init__(self, max_usd: float | None) -> None:
        self.max_usd = max_usd
        """The cap in US dollars; None: no cap (spending is still counted)."""
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self._lock = threading.Lock()

    def reserve(self, estimate: float, model: str) -> None:
        """Hold `estimate` for an attempt about to be sent; SpendingCapReached when it could pass the cap."""
        with self._lock:
            if self.max_usd is not None and self.spent_usd + self.reserved_usd + estimate > self.max_usd:
                raise SpendingCapReached(
                    f"spending cap of ${self.max_usd:.2f} reached: ${self.spent_usd:.4f} spent, "
                    f"${max(self.reserved_usd, 0.0):.4f} in flight, and the next call to {model} may cost up to "
                    f"${estimate:.4f}; raise --max-cost to go on (answers so far are cached)"
                )
            self.reserved_usd += estimate

    def settle(self, estimate: float, spent: float) -> None:
        """An attempt held `estimate` and cost `spent` (0 when nothing was billed)."""
        with self._lock:
            self.reserved_usd -= estimate
            self.spent_usd += spent


def make_client(
    spec: str,
    *,
    responses: ResponseCache | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    max_cost_usd: float | None = None,
    budget: Budget | None = None,
    concurrency: int = 4,
    timeout_s: float = 60.0,
    max_retries: int = 4,
) -> LLMClient:
    """A client for `spec` ("openai:MODEL", "local" or "local:MODEL"). openai answers are kept in `responses` when
    given (core.backends.wire passes the results file's for the command line, the notes file's for the dashboard).
    `max_cost_usd` caps the money a priced model may spend (`budget`, when given, is a cap shared with other clients
    and replaces it); it cannot be enforced for an unpriced model (a warning says so) and does not apply to local
    models. `timeout_s` bounds each attempt, from sending the request to the last byte of its answer."""
    from core.backends import BackendKind, BackendSpec

    parsed = BackendSpec.parse(spec, "LLM spec")
    if parsed.kind == BackendKind.BASELINE:
        raise LLMError("'baseline' builds explanations from token statistics and needs no language model client")
    if parsed.kind == BackendKind.OPENAI:
        if concurrency < 1:
            raise LLMError(f"concurrency must be at least 1, not {concurrency}")
        if not timeout_s > 0:
            raise LLMError(f"the timeout must be more than 0 seconds, not {timeout_s}")
        return OpenAIClient(
            parsed.model,
            responses=responses,
            base_url=base_url,
            api_key=api_key,
            max_cost_usd=max_cost_usd,
            budget=budget,
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
    from core.models import DEFAULT_MODEL

    return LocalClient(parsed.model or DEFAULT_MODEL)


# --- prices ----------------------------------------------------------------------------------------------------------

_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def price_per_million(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens of an OpenAI model or its dated snapshot; None when unknown."""
    name = model.lower()
    return PRICES_PER_MILLION.get(name) or PRICES_PER_MILLION.get(_SNAPSHOT_SUFFIX.sub("", name))


def _cost(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000


def prompt_token_bound(texts: Sequence[str]) -> int:
    """Prompt tokens a request with these message texts can never exceed: every token of a byte-level or
    byte-fallback tokenizer (GPT, Llama, Qwen, SmolLM) covers at least one UTF-8 byte, plus the template's own."""
    return PROMPT_OVERHEAD_TOKENS + sum(len(text.encode()) + MESSAGE_OVERHEAD_TOKENS for text in texts)


# --- the openai backend ----------------------------------------------------------------------------------------------


class _AttemptFailed(Exception):
    """One HTTP attempt that brought no answer; says whether to try again and whether it may have been billed."""

    def __init__(self, message: str, *, retry: bool, billed: bool, wait_s: float | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.billed = billed
        """The server may have produced (and billed) an answer that was lost."""
        self.wait_s = wait_s
        """The wait the server asked for (Retry-After), if any."""
        self.hint = hint
        """What to do, appended to the message when the call gives up."""

    def final(self, retries: int) -> str:
        """The user's message once no retry is left."""
        after = f" after {retries} {'retry' if retries == 1 else 'retries'}" if retries else ""
        return f"{self}{after}: {self.hint}" if self.hint else f"{self}{after}"


class OpenAIClient:
    """The official openai SDK, with our own attempts, a semaphore, a spending cap and a response cache around it."""

    def __init__(
        self,
        model: str,
        *,
        responses: ResponseCache | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_cost_usd: float | None = None,
        budget: Budget | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        max_retries: int = 4,
    ) -> None:
        import openai

        self.model = model
        self.spec = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_ENDPOINT).rstrip("/")
        self.is_openai = self.base_url == OPENAI_ENDPOINT
        self.server = "the OpenAI API" if self.is_openai else self.base_url
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.is_openai:
                raise LLMError(
                    "no OpenAI API key: set OPENAI_API_KEY, enter it in the dashboard sidebar, "
                    "or use --explainer baseline"
                )
            key = DUMMY_API_KEY
        self._secret = key if key != DUMMY_API_KEY and len(key) >= MIN_SECRET_CHARS else None
        self.price = price_per_million(model)
        self.usage = Usage(cost_usd=0.0 if self.price is not None else None,
                           unconfirmed_usd=0.0 if self.price is not None else None)
        self.budget = budget if budget is not None else Budget(max_cost_usd)
        self.max_cost_usd = self.budget.max_usd
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        if self.budget.max_usd is not None and self.price is None:
            log.warning(
                "%s has no known price: the spending cap of $%.2f cannot be enforced for it (tokens are still "
                "counted)",
                model,
                self.budget.max_usd,
            )
        # Retries are ours (max_retries=0 here), so that each attempt is reserved and accounted on its own. Requests
        # go to the base URL only: no redirect is followed (it would carry the prompts elsewhere), and a server on
        # this machine is reached directly even when HTTP_PROXY is set (a proxy would see the key, and cannot reach
        # this machine's loopback anyway).
        http = openai.DefaultHttpxClient(follow_redirects=False, trust_env=not _is_loopback(self.base_url))
        self._sdk: openai.OpenAI = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=timeout_s, max_retries=0,
                                                 http_client=http)
        self._responses = responses
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()  # guards usage

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for these token counts at this model's price; None when unpriced."""
        return _cost(self.price, prompt_tokens, completion_tokens)

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        n: int = 1,
        top_logprobs: int | None = None,
        json_mode: bool = False,
        stop: Sequence[str] | None = None,
    ) -> list[Completion]:
        """n answers from /chat/completions. An identical earlier request is answered from the cache, even at
        temperature > 0: ask for several samples with `n`, not with repeated calls."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(message) for message in messages],
            "temperature": temperature,
            "n": n,
        }
        # api.openai.com wants max_completion_tokens (newer models reject max_tokens); other servers know max_tokens
        params["max_completion_tokens" if self.is_openai else "max_tokens"] = max_tokens
        if top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = top_logprobs
        if json_mode:
            params["response_format"] = {"type": "json_object"}
        if stop:
            params["stop"] = list(stop)
        bound = prompt_token_bound([str(m.get("content", "")) for m in messages])
        return self._call("chat.completions", params, bound, max_tokens * n, _parse_chat)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        echo: bool = False,
        logprobs: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        """One answer from the legacy /completions endpoint (vLLM and llama.cpp servers keep echo + logprobs)."""
        params: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if echo:
            params["echo"] = True
        if logprobs is not None:
            params["logprobs"] = logprobs
        if stop:
            params["stop"] = list(stop)
        return self._call("completions", params, prompt_token_bound([prompt]), max_tokens, _parse_completion)

    # --- one request ---

    def cache_key(self, endpoint: str, params: dict[str, Any]) -> str:
        """sha256 of everything that shapes the answer: endpoint, server, model and every parameter (not the key)."""
        request = {"endpoint": endpoint, "base_url": self.base_url, "params": params}
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _call(
        self,
        endpoint: str,
        params: dict[str, Any],
        prompt_bound: int,
        completion_bound: int,
        parse: Callable[[dict[str, Any], bool], T],
    ) -> T:
        """The parsed answer, from the cache or the server. Only an answer that parsed is cached."""
        key = self.cache_key(endpoint, params)
        if self._responses is not None:
            stored = self._responses.get(key)
            if stored is not None:
                try:
                    data = json.loads(stored)
                    _check_shape(data, endpoint)
                    answer = parse(data, True)
                except _PARSE_ERRORS as error:  # cached by an older version that read answers differently
                    log.warning("ignoring a cached answer of %s that no longer parses: %s", self.model,
                                _one_line(error))
                else:
                    with self._lock:
                        self.usage.calls += 1
                        self.usage.cached_calls += 1
                    return answer
        estimate = self.estimate_cost(prompt_bound, completion_bound)
        body = self._request(endpoint, params, estimate)
        data = None
        try:
            data = json.loads(body)
            _check_shape(data, endpoint)
            answer = parse(data, False)
        except _PARSE_ERRORS as error:
            self._settle(estimate, _usage_tokens(data), ok=False)
            raise LLMError(
                f"{self.server} returned a malformed {endpoint} answer for {self.model} ({_one_line(error)}); "
                "is it an OpenAI-compatible server?"
            ) from error
        self._settle(estimate, _usage_tokens(data), ok=True)
        if self._responses is not None:
            self._remember(key, endpoint, body)
        return answer

    def _settle(self, estimate: float | None, tokens: tuple[int, int] | None, *, ok: bool) -> None:
        """Account an attempt the server answered: its own token counts, or the worst case when they are missing."""
        with self._lock:
            if ok:
                self.usage.calls += 1
            else:
                self.usage.failures += 1
            if tokens is None:
                self.usage.unconfirmed_calls += 1
                if estimate is not None and self.usage.unconfirmed_usd is not None:
                    self.usage.unconfirmed_usd += estimate
                spent = estimate
            else:
                self.usage.prompt_tokens += tokens[0]
                self.usage.completion_tokens += tokens[1]
                spent = self.estimate_cost(*tokens)
                if spent is not None and self.usage.cost_usd is not None:
                    self.usage.cost_usd += spent
        if estimate is not None:
            self.budget.settle(estimate, spent or 0.0)

    def _remember(self, key: str, endpoint: str, body: str) -> None:
        """Cache an answer at once; a cache that cannot be written costs a warning, not the paid answer."""
        import duckdb

        try:
            self._responses.put(key, endpoint, self.model, body)  # type: ignore[union-attr]
        except duckdb.Error as error:
            log.warning("could not cache an answer of %s: %s", self.model, _one_line(error))

    def _request(self, endpoint: str, params: dict[str, Any], estimate: float | None) -> str:
        """The body of a 200 answer, after up to max_retries retries. Each attempt reserves its worst case first;
        the reservation of the attempt that answered is left for `_settle`."""
        retries = 0
        with self._slots:  # held across backoff waits too, so a rate-limited server sees fewer requests
            while True:
                if estimate is not None:
                    self.budget.reserve(estimate, self.model)
                with self._lock:
                    self.usage.attempts += 1
                try:
                    return self._attempt(endpoint, params)
                except _AttemptFailed as failure:
                    if failure.billed:
                        with self._lock:
                            self.usage.unconfirmed_calls += 1
                            if estimate is not None and self.usage.unconfirmed_usd is not None:
                                self.usage.unconfirmed_usd += estimate
                    if estimate is not None:
                        self.budget.settle(estimate, estimate if failure.billed else 0.0)
                    wait = _backoff_s(retries) if failure.wait_s is None else failure.wait_s
                    if failure.retry and retries < self.max_retries:
                        log.info("%s; trying again in %.1f s (retry %d of %d)", failure, wait, retries + 1,
                                 self.max_retries)
                        time.sleep(wait)
                        retries += 1
                        continue
                    with self._lock:
                        self.usage.failures += 1
                    raise LLMError(failure.final(retries)) from None

    def _attempt(self, endpoint: str, params: dict[str, Any]) -> str:
        """One HTTP attempt: the whole body of a 200 answer within timeout_s, else _AttemptFailed."""
        import openai

        resource = self._sdk.chat.completions if endpoint == "chat.completions" else self._sdk.completions
        deadline = time.monotonic() + self.timeout_s
        try:
            with resource.with_streaming_response.create(**params) as response:
                return self._read_body(response, deadline)
        except _AttemptFailed:
            raise
        except openai.APIStatusError as error:
            raise self._status_failure(error) from None
        except openai.APITimeoutError:
            raise _AttemptFailed(f"no answer from {self.server} within {self.timeout_s:g} s", retry=True, billed=True,
                                 hint=SLOW_HINT) from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            if type(cause).__name__ in ("ConnectError", "ConnectTimeout"):  # the request never left
                raise _AttemptFailed(f"cannot reach {self.server} ({self._redact(_one_line(cause))})", retry=True,
                                     billed=False, hint="is the server running and the base URL right?") from None
            raise _AttemptFailed(
                f"{self.server} dropped the connection before answering ({self._redact(_one_line(cause))})",
                retry=True, billed=True, hint=DROP_HINT,
            ) from None
        except openai.APIError as error:
            raise _AttemptFailed(
                f"{self.server} gave an unusable answer: {self._redact(_one_line(error))}", retry=False, billed=True
            ) from None

    def _read_body(self, response: Any, deadline: float) -> str:
        """The body of a streamed 200 answer, abandoned at the deadline or past MAX_ANSWER_BYTES."""
        status = response.http_response.status_code
        if 300 <= status < 400:
            raise _AttemptFailed(self._redirect_message(status, response.http_response.headers), retry=False,
                                 billed=False)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise _AttemptFailed(
                        f"{self.server} sent an answer larger than {MAX_ANSWER_BYTES // 2**20} MiB", retry=False,
                        billed=True,
                    )
                if time.monotonic() > deadline:
                    raise _AttemptFailed(f"the answer from {self.server} was not complete within {self.timeout_s:g} s",
                                         retry=True, billed=True, hint=SLOW_HINT)
        except _AttemptFailed:
            raise
        except Exception as error:  # the transport's own errors (httpx or httpx2, depending on the SDK version)
            raise _AttemptFailed(f"the answer from {self.server} broke off ({self._redact(_one_line(error))})",
                                 retry=True, billed=True, hint=DROP_HINT) from None
        try:
            return self._redact(b"".join(chunks).decode("utf-8"))
        except UnicodeDecodeError:
            return "<the answer is not UTF-8 text>"

    def _status_failure(self, error: Any) -> _AttemptFailed:
        """What an HTTP error status means for this call: retry or not, and the message."""
        status = error.status_code
        message = self._redact(_api_message(error))
        if 300 <= status < 400:
            return _AttemptFailed(self._redirect_message(status, error.response.headers), retry=False, billed=False)
        if status == 401:
            return _AttemptFailed(
                f"the API key was refused by {self.server} (401): check OPENAI_API_KEY or the key in the dashboard "
                "sidebar", retry=False, billed=False,
            )
        if status == 403:
            return _AttemptFailed(f"the API key may not use {self.model} on {self.server} (403): {message}",
                                  retry=False, billed=False)
        if status == 404:
            return _AttemptFailed(f"model {self.model} not found on {self.server} (404): check the name after "
                                  "'openai:'", retry=False, billed=False)
        wait = _retry_after_s(error.response.headers)
        if wait is not None and wait > MAX_RETRY_AFTER_S:
            return _AttemptFailed(f"{self.server} asks to wait {wait:.0f} s before the next request (HTTP {status}): "
                                  "try again later (answers so far are cached)", retry=False, billed=False)
        if status == 429:
            if _error_code(error) == "insufficient_quota":
                return _AttemptFailed(f"the account has no credit left on {self.server} (insufficient_quota)",
                                      retry=False, billed=False)
            return _AttemptFailed(f"{self.server} is rate-limiting (HTTP 429)", retry=True, billed=False, wait_s=wait,
                                  hint="lower --concurrency or try again later")
        if status in (408, 409) or status >= 500:
            return _AttemptFailed(f"{self.server} failed with HTTP {status}", retry=True, billed=False, wait_s=wait,
                                  hint=message)
        return _AttemptFailed(f"{self.server} rejected the request for {self.model} (HTTP {status}): {message}",
                              retry=False, billed=False)

    def _redirect_message(self, status: int, headers: Any) -> str:
        location = self._redact(_one_line(headers.get("location") or "nowhere", 100))
        return (f"{self.server} redirects to {location} (HTTP {status}); requests go to the base URL only: give "
                "the address you mean as the base URL")

    def _redact(self, text: str) -> str:
        """`text` with the API key replaced (a server may echo the Authorization header back)."""
        return text.replace(self._secret, REDACTED) if self._secret else text


def _is_loopback(url: str) -> bool:
    """Whether the URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _retry_after_s(headers: Any) -> float | None:
    """Seconds the server asks to wait: retry-after-ms (OpenAI's), then Retry-After in seconds or as an HTTP date."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _backoff_s(retries: int) -> float:
    first, longest = BACKOFF_S
    return min(first * 2.0**retries, longest) * (1 - 0.25 * random.random())


_PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, LLMError)
"""What reading an answer of the wrong shape can raise (all of them mean: a malformed answer)."""


def _check_shape(data: Any, endpoint: str) -> None:
    """Raise LLMError unless the body has the fields we read."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise LLMError("no choices")
    for choice in data["choices"]:
        if not isinstance(choice, dict):
            raise LLMError("a choice is not an object")
        if endpoint == "chat.completions":
            message = choice.get("message")
            if not isinstance(message, dict) or not isinstance(message.get("content") or "", str):
                raise LLMError("a choice has no message")
        elif not isinstance(choice.get("text"), str):
            raise LLMError("a choice has no text")


def _usage_tokens(data: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens the server reports; None when it reports none or nonsense."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53 or value % 1:
            return None
        counts.append(int(value))
    return counts[0], counts[1]


def _parse_chat(data: dict[str, Any], cached: bool) -> list[Completion]:
    """Completions from a /chat/completions body (logprobs from choices[i].logprobs.content)."""
    prompt_tokens, completion_tokens = _usage_tokens(data) or (0, 0)
    answers = []
    for choice in data["choices"]:
        text = choice["message"].get("content") or ""
        raw = choice.get("logprobs")
        content = raw.get("content") if isinstance(raw, dict) else None
        logprobs = None
        if content is not None:
            try:
                logprobs = tuple(_chat_logprob(item) for item in content)
                spelled = b"".join(_token_bytes(item) for item in content)
            except (TypeError, KeyError, ValueError, AttributeError) as error:
                raise LLMError(f"malformed logprobs: {_one_line(error)}") from error
            _check_spelling(spelled, text)
        answers.append(
            Completion(
                text=text,
                logprobs=logprobs,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached=cached,
                finish_reason=_finish_reason(choice),
            )
        )
    return answers


def _chat_logprob(item: dict[str, Any]) -> TokenLogprob:
    top = tuple((str(alt["token"]), float(alt["logprob"])) for alt in item.get("top_logprobs") or ())
    return TokenLogprob(str(item["token"]), _float_or_nan(item.get("logprob")), top)


def _token_bytes(item: dict[str, Any]) -> bytes:
    """A chat logprob token's bytes (the `bytes` field when given: a token may hold part of a character)."""
    raw = item.get("bytes")
    return bytes(raw) if isinstance(raw, list) else str(item["token"]).encode()


def _check_spelling(spelled: bytes, text: str) -> None:
    """The logprob tokens must spell the answer, or every position read from them would be misread."""
    if spelled != text.encode():
        raise LLMError(
            f"the logprob tokens spell {_one_line(repr(spelled.decode(errors='replace')), 40)} but the answer is "
            f"{_one_line(repr(text), 40)}: they cannot be aligned"
        )


def _finish_reason(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return reason if isinstance(reason, str) else None


def _parse_completion(data: dict[str, Any], cached: bool) -> Completion:
    """A Completion from a /completions body (logprobs.tokens, token_logprobs, top_logprobs)."""
    prompt_tokens, completion_tokens = _usage_tokens(data) or (0, 0)
    choice = data["choices"][0]
    raw = choice.get("logprobs")
    logprobs = None
    if raw and isinstance(raw, dict) and raw.get("tokens") is not None:
        try:
            tokens = raw["tokens"]
            values = raw.get("token_logprobs") or [None] * len(tokens)
            tops = raw.get("top_logprobs") or [None] * len(tokens)
            logprobs = tuple(
                TokenLogprob(
                    str(token),
                    _float_or_nan(value),
                    tuple(sorted(((str(t), float(v)) for t, v in (top or {}).items()), key=lambda tv: -tv[1])),
                )
                for token, value, top in zip(tokens, values, tops, strict=True)
            )
        except (TypeError, AttributeError, ValueError) as error:
            raise LLMError(f"malformed logprobs: {_one_line(error)}") from error
        _check_spelling("".join(t.token for t in logprobs).encode(), choice["text"])
    return Completion(
        text=choice["text"],
        logprobs=logprobs,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached=cached,
        finish_reason=_finish_reason(choice),
    )


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _api_message(error: Any) -> str:
    """The server's own error message, one line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        message = body.get("message") or body.get("detail") or (inner.get("message") if isinstance(inner, dict)
                                                                  else inner)
        if message:
            return _one_line(message)
    return _one_line(getattr(error, "message", None) or error)


def _error_code(error: Any) -> str | None:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error")
        code = body.get("code") or (inner.get("code") if isinstance(inner, dict) else None)
        return str(code) if code else None
    return None


def _one_line(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the local backend -----------------------------------------------------------------------------------------------

_local_models: dict[str, SubjectModel] = {}
_local_models_lock = threading.Lock()


def local_model(spec: str) -> SubjectModel:
    """The in-process model for a spec, loaded once per process and shared (also by the local simulator)."""
    from core.models import load_model

    with _local_models_lock:
        if spec not in _local_models:
            _local_models[spec] = load_model(spec)
        return _local_models[spec]


class LocalClient:
    """A transformers causal LM in this process: free, one generation at a time (the model's lock)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.spec = f"local:{model}"
        self.usage = Usage(cost_usd=0.0)
        self._lock = threading.Lock()

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Local models cost nothing."""
        return 0.0

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        n: int = 1,
        top_logprobs: int | None = None,
        json_mode: bool = False,
        stop: Sequence[str] | None = None,
    ) -> list[Completion]:
        """n answers after the tokenizer's chat template; json_mode is not enforced on local models."""
        subject = local_model(self.model)
        tokenizer = subject.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise LLMError(f"{self.model} has no chat template: use a plain-text prompt (complete) with it")
        text = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
        prompt_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._generate(subject, prompt_ids, 0, max_tokens, temperature, n, top_logprobs, stop, None)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 60,
        temperature: float = 0.0,
        echo: bool = False,
        logprobs: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> Completion:
        """Continue plain text. With echo, the prompt's tokens come first, each with its logprob given the tokens
        before it (the first one NaN unless the tokenizer adds a BOS token, which is not itself returned)."""
        subject = local_model(self.model)
        ids = list(subject.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        prefix = [subject.bos_token_id] if subject.bos_token_id is not None else []
        echo_text = prompt if echo else None
        return self._generate(subject, prefix + ids, len(prefix), max_tokens, temperature, 1, logprobs, stop,
                              echo_text)[0]

    def _generate(
        self,
        subject: SubjectModel,
        prompt_ids: list[int],
        skip: int,
        max_tokens: int,
        temperature: float,
        n: int,
        top: int | None,
        stop: Sequence[str] | None,
        echo_text: str | None,
    ) -> list[Completion]:
        """Generate n continuations of prompt_ids; `skip` leading ids (a BOS) are never echoed."""
        import torch

        tokenizer = subject.tokenizer
        input_ids = torch.tensor([prompt_ids])  # [1, prompt]
        sampling = temperature > 0
        with subject.lock, torch.no_grad():
            echoed: tuple[TokenLogprob, ...] = ()
            if echo_text is not None and top is not None:
                logits = subject.model(input_ids=input_ids).logits[0]  # [prompt, vocab]
                echoed = _echo_logprobs(tokenizer, prompt_ids, logits, skip, top)
            rows: list[list[int]] = [[] for _ in range(n)]
            steps: list[torch.Tensor] = []
            if max_tokens > 0:
                out = subject.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=_generation_config(
                        tokenizer, max_tokens, temperature, n if sampling else 1, stop
                    ),
                    tokenizer=tokenizer,  # generate needs it to match stop strings
                )
                new = out.sequences[:, len(prompt_ids) :]  # [n or 1, new]
                steps = [torch.log_softmax(step.float(), dim=-1) for step in out.logits]  # new x [n or 1, vocab]
                rows = [row.tolist() for row in new]
        eos = set(_as_list(tokenizer.eos_token_id))
        decoded = [_decode_answer(tokenizer, row, steps, index, eos, top, stop) for index, row in enumerate(rows)]
        generated = sum(answer[3] for answer in decoded)  # the whole call, as the API reports it
        answers = []
        for text, tokens, finish, _ in decoded:
            if echo_text is not None:
                text = echo_text + text
                tokens = echoed + tokens if tokens is not None else None
            answers.append(
                Completion(
                    text=text,
                    logprobs=tokens,
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=generated,
                    cached=False,
                    finish_reason=finish,
                )
            )
        if not sampling:
            answers = answers[:1] * n  # greedy: n identical answers from one generation
        with self._lock:
            self.usage.calls += 1
            self.usage.prompt_tokens += len(prompt_ids)
            self.usage.completion_tokens += generated
        return answers


def _generation_config(
    tokenizer: Any, max_tokens: int, temperature: float, sequences: int, stop: Sequence[str] | None
) -> Any:
    """A fresh GenerationConfig, so the model's own defaults (top_k, repetition penalty...) do not leak in."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    settings: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "output_logits": True,
        "return_dict_in_generate": True,
        "num_return_sequences": sequences,
        "stop_strings": list(stop) if stop else None,
    }
    if temperature > 0:
        settings.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        settings.update(do_sample=False)
    return GenerationConfig(**settings)


def _decode_answer(
    tokenizer: Any,
    row: list[int],
    steps: list[Any],
    index: int,
    eos: set[int],
    top: int | None,
    stop: Sequence[str] | None,
) -> tuple[str, tuple[TokenLogprob, ...] | None, str, int]:
    """(text, logprobs, finish_reason, tokens generated) of one generated row, cut at EOS or a stop string."""
    kept: list[int] = []
    finish = "length"
    for token in row:
        if token in eos:
            finish = "stop"
            break
        kept.append(token)
    generated = len(kept) + (finish == "stop")
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = min((pos for pos in (text.find(s) for s in stop or ()) if pos >= 0), default=-1)
    if cut >= 0:
        text, finish = text[:cut], "stop"
        # keep the tokens that start before the stop string (as the API does, the stop string is not returned)
        kept = [t for i, t in enumerate(kept) if len(tokenizer.decode(kept[:i], skip_special_tokens=True)) < cut]
    if top is None:
        return text, None, finish, generated
    logprobs = tuple(
        _token_logprob(tokenizer, steps[position][index if steps[position].shape[0] > 1 else 0], token, top)
        for position, token in enumerate(kept)
    )
    return text, logprobs, finish, generated


def _echo_logprobs(tokenizer: Any, ids: list[int], logits: Any, skip: int, top: int) -> tuple[TokenLogprob, ...]:
    """Logprob of each prompt token given the ones before it; logits [prompt, vocab] predict the NEXT token."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [prompt, vocab]
    out = []
    for position in range(skip, len(ids)):
        if position == 0:
            out.append(TokenLogprob(tokenizer.decode([ids[0]]), math.nan, ()))
        else:
            out.append(_token_logprob(tokenizer, logprobs[position - 1], ids[position], top))
    return tuple(out)


def _token_logprob(tokenizer: Any, logprobs: Any, token: int, top: int) -> TokenLogprob:
    """TokenLogprob of `token` under one position's log-distribution [vocab], with the `top` most likely."""
    import torch

    alternatives: tuple[tuple[str, float], ...] = ()
    if top > 0:
        values, ids = torch.topk(logprobs, top)
        alternatives = tuple((tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, ids, strict=True))
    return TokenLogprob(tokenizer.decode([token]), float(logprobs[token]), alternatives)


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


# --- many calls at once ----------------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def map_concurrent(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R | Exception]:
    """fn over items on up to `concurrency` threads; results in input order, an item's exception as its result.

    A KeyboardInterrupt cancels the items not yet started and propagates."""
    items = list(items)
    if not items:
        return []

    def run(item: T) -> R | Exception:
        try:
            return fn(item)
        except Exception as error:  # returned per item: one failed neuron must not stop the others
            return error

    if concurrency <= 1 or len(items) == 1:
        return [run(item) for item in items]
    executor = ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="llm")
    try:
        futures = [executor.submit(run, item) for item in items]
        return [future.result() for future in futures]
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "PRICES_PER_MILLION",
    "Budget",
    "Completion",
    "LLMClient",
    "LLMError",
    "LocalClient",
    "OpenAIClient",
    "SpendingCapReached",
    "TokenLogprob",
    "Usage",
    "local_model",
    "make_client",
    "map_concurrent",
    "price_per_million",
]

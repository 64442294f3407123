"""LLM backends for the explain, simulate and score stages: one interface over three kinds of model.

- ``openai:MODEL``: the official openai SDK against api.openai.com or any OpenAI-compatible server (``base_url`` or
  OPENAI_BASE_URL: vLLM, Ollama, LM Studio, ``transformers serve``). Retries with backoff on 408/409/429/5xx,
  timeouts and dropped connections are the SDK's own (``max_retries``, ``timeout``). This module adds bounded
  concurrency, token and cost accounting, a spending cap, and a response cache in the store (``llm_cache``).
- ``local[:MODEL]``: a transformers causal LM in this process (default: the built-in smollm2-135m), free.
- ``baseline`` is not a language model: the explain stage handles it without a client.

Reads and writes: an ``llm_cache`` table (core.store.ResponseCache: the results file's for the command line, the
notes file's for the dashboard), one row per answer as soon as it arrives, so a stopped run never pays twice.
Importing this module needs no key, network or GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
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
"""For the spending cap's estimate of a request's prompt tokens before it is sent (English averages about 4
characters per token; 3 overestimates, which is the safe side for a cap)."""


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
    """Per-token logprobs when asked for and returned; None when the server returns none (transformers serve)."""
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
    """Prompt tokens sent."""
    completion_tokens: int = 0
    """Tokens generated."""
    cost_usd: float | None = 0.0
    """Money spent in US dollars; None when the model has no known price."""
    failures: int = 0
    """Calls that failed (after the SDK's retries) or returned a malformed answer."""

    def describe(self) -> str:
        """One line for a run's summary, e.g. "12 calls (3 cached), 4,512 + 380 tokens, $0.0012"."""
        cost = "cost unknown (unpriced model)" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        failed = f", {self.failures} failed" if self.failures else ""
        return (
            f"{self.calls} calls ({self.cached_calls} cached{failed}), "
            f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens, {cost}"
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


def make_client(
    spec: str,
    *,
    responses: ResponseCache | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    max_cost_usd: float | None = None,
    concurrency: int = 4,
    timeout_s: float = 60.0,
    max_retries: int = 4,
) -> LLMClient:
    """A client for `spec` ("openai:MODEL", "local" or "local:MODEL"). openai answers are kept in `responses` when
    given (core.backends.wire passes the results file's for the command line, the notes file's for the dashboard).
    `max_cost_usd` caps the money a priced model may spend; it cannot be enforced for an unpriced model (a warning
    says so) and does not apply to local models."""
    from core.backends import BackendKind, BackendSpec

    parsed = BackendSpec.parse(spec, "LLM spec")
    if parsed.kind == BackendKind.BASELINE:
        raise LLMError("'baseline' builds explanations from token statistics and needs no language model client")
    if parsed.kind == BackendKind.OPENAI:
        if concurrency < 1:
            raise LLMError(f"concurrency must be at least 1, not {concurrency}")
        return OpenAIClient(
            parsed.model,
            responses=responses,
            base_url=base_url,
            api_key=api_key,
            max_cost_usd=max_cost_usd,
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


# --- the openai backend ----------------------------------------------------------------------------------------------


class OpenAIClient:
    """The official openai SDK, with a semaphore, a spending cap and a response cache around it."""

    def __init__(
        self,
        model: str,
        *,
        responses: ResponseCache | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_cost_usd: float | None = None,
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
        self.price = price_per_million(model)
        self.usage = Usage(cost_usd=0.0 if self.price is not None else None)
        self.max_cost_usd = max_cost_usd
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        if max_cost_usd is not None and self.price is None:
            log.warning(
                "%s has no known price: the spending cap of $%.2f cannot be enforced (tokens are still counted)",
                model,
                max_cost_usd,
            )
        self._sdk: openai.OpenAI = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout_s, max_retries=max_retries
        )
        self._responses = responses
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()  # guards usage and the cap's reservations
        self._reserved_usd = 0.0

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
        prompt_chars = sum(len(str(m.get("content", ""))) + 8 for m in messages)
        data, cached = self._call("chat.completions", params, prompt_chars, max_tokens * n)
        return _parse_chat(data, cached, self.server)

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
        data, cached = self._call("completions", params, len(prompt), max_tokens)
        return _parse_completion(data, cached, self.server)

    # --- one request ---

    def cache_key(self, endpoint: str, params: dict[str, Any]) -> str:
        """sha256 of everything that shapes the answer: endpoint, server, model and every parameter."""
        request = {"endpoint": endpoint, "base_url": self.base_url, "params": params}
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _call(
        self, endpoint: str, params: dict[str, Any], prompt_chars: int, max_completion: int
    ) -> tuple[dict[str, Any], bool]:
        """The response body as a dict and whether it came from the cache."""
        key = self.cache_key(endpoint, params)
        if self._responses is not None:
            stored = self._responses.get(key)
            if stored is not None:
                with self._lock:
                    self.usage.calls += 1
                    self.usage.cached_calls += 1
                return json.loads(stored), True
        estimate = self._reserve(math.ceil(prompt_chars / CHARS_PER_TOKEN_ESTIMATE), max_completion)
        try:
            with self._slots:
                body = self._send(endpoint, params)
            try:
                data = json.loads(body)
                _check_shape(data, endpoint)
            except (ValueError, LLMError) as error:
                raise LLMError(
                    f"{self.server} returned a malformed {endpoint} answer for {self.model} ({_one_line(error)}); "
                    "is it an OpenAI-compatible server?"
                ) from error
        except LLMError:
            with self._lock:
                self.usage.failures += 1
                self._reserved_usd -= estimate
            raise
        if self._responses is not None:
            self._remember(key, endpoint, body)
        prompt_tokens, completion_tokens = _usage_tokens(data)
        with self._lock:
            self._reserved_usd -= estimate
            self.usage.calls += 1
            self.usage.prompt_tokens += prompt_tokens
            self.usage.completion_tokens += completion_tokens
            cost = self.estimate_cost(prompt_tokens, completion_tokens)
            if cost is not None and self.usage.cost_usd is not None:
                self.usage.cost_usd += cost
        return data, False

    def _remember(self, key: str, endpoint: str, body: str) -> None:
        """Cache an answer at once; a cache that cannot be written costs a warning, not the paid answer."""
        import duckdb

        try:
            self._responses.put(key, endpoint, self.model, body)  # type: ignore[union-attr]
        except duckdb.Error as error:
            log.warning("could not cache an answer of %s: %s", self.model, _one_line(error))

    def _reserve(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Check the cap against what is spent, what calls in flight may spend, and this call's worst case."""
        estimate = self.estimate_cost(prompt_tokens, completion_tokens)
        if estimate is None or self.max_cost_usd is None:
            return 0.0
        with self._lock:
            spent = self.usage.cost_usd or 0.0
            if spent + self._reserved_usd + estimate > self.max_cost_usd:
                raise SpendingCapReached(
                    f"spending cap of ${self.max_cost_usd:.2f} reached: ${spent:.4f} spent on {self.model}, "
                    f"${self._reserved_usd:.4f} in flight, and the next call may cost up to ${estimate:.4f}; "
                    "raise --max-cost to go on (answers so far are cached)"
                )
            self._reserved_usd += estimate
        return estimate

    def _send(self, endpoint: str, params: dict[str, Any]) -> str:
        """POST through the SDK (which retries with backoff) and return the raw body; SDK errors become LLMError."""
        import openai

        resource = self._sdk.chat.completions if endpoint == "chat.completions" else self._sdk.completions
        try:
            raw = resource.with_raw_response.create(**params)
            return raw.http_response.text
        except openai.AuthenticationError as error:
            raise LLMError(
                f"the API key was refused by {self.server} (401): check OPENAI_API_KEY or the key in the "
                "dashboard sidebar"
            ) from error
        except openai.PermissionDeniedError as error:
            raise LLMError(
                f"the API key may not use {self.model} on {self.server} (403): {_api_message(error)}"
            ) from error
        except openai.NotFoundError as error:
            raise LLMError(
                f"model {self.model} not found on {self.server} (404): check the name after 'openai:'"
            ) from error
        except openai.RateLimitError as error:
            if _error_code(error) == "insufficient_quota":
                raise LLMError(f"the account has no credit left on {self.server} (insufficient_quota)") from error
            raise LLMError(
                f"{self.server} kept rate-limiting after {self.max_retries} retries (429): lower --concurrency "
                "or try again later"
            ) from error
        except openai.APITimeoutError as error:
            raise LLMError(
                f"no answer from {self.server} within {self.timeout_s:g} s, {self.max_retries} retries included"
            ) from error
        except openai.APIConnectionError as error:
            raise LLMError(
                f"cannot reach {self.server} ({_one_line(error.__cause__ or error)}): is the server running "
                "and the base URL right?"
            ) from error
        except openai.InternalServerError as error:
            raise LLMError(
                f"{self.server} failed with HTTP {error.status_code} after {self.max_retries} retries: "
                f"{_api_message(error)}"
            ) from error
        except openai.APIStatusError as error:
            raise LLMError(
                f"{self.server} rejected the request for {self.model} (HTTP {error.status_code}): "
                f"{_api_message(error)}"
            ) from error
        except openai.APIError as error:
            raise LLMError(f"{self.server} gave an unusable answer: {_one_line(error)}") from error


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


def _usage_tokens(data: dict[str, Any]) -> tuple[int, int]:
    usage = data.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _parse_chat(data: dict[str, Any], cached: bool, server: str) -> list[Completion]:
    """Completions from a /chat/completions body (logprobs from choices[i].logprobs.content)."""
    prompt_tokens, completion_tokens = _usage_tokens(data)
    answers = []
    for choice in data["choices"]:
        content = (choice.get("logprobs") or {}).get("content")
        try:
            logprobs = None if content is None else tuple(_chat_logprob(item) for item in content)
        except (TypeError, KeyError, ValueError) as error:
            raise LLMError(f"{server} returned malformed logprobs: {_one_line(error)}") from error
        answers.append(
            Completion(
                text=choice["message"].get("content") or "",
                logprobs=logprobs,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cached=cached,
                finish_reason=choice.get("finish_reason"),
            )
        )
    return answers


def _chat_logprob(item: dict[str, Any]) -> TokenLogprob:
    top = tuple((str(alt["token"]), float(alt["logprob"])) for alt in item.get("top_logprobs") or ())
    return TokenLogprob(str(item["token"]), _float_or_nan(item.get("logprob")), top)


def _parse_completion(data: dict[str, Any], cached: bool, server: str) -> Completion:
    """A Completion from a /completions body (logprobs.tokens, token_logprobs, top_logprobs)."""
    prompt_tokens, completion_tokens = _usage_tokens(data)
    choice = data["choices"][0]
    raw = choice.get("logprobs")
    logprobs = None
    if raw and raw.get("tokens") is not None:
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
            raise LLMError(f"{server} returned malformed logprobs: {_one_line(error)}") from error
    return Completion(
        text=choice["text"],
        logprobs=logprobs,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached=cached,
        finish_reason=choice.get("finish_reason"),
    )


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def _api_message(error: Any) -> str:
    """The server's own error message, one line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or (body.get("error") or {}).get("message")
        if message:
            return _one_line(message)
    return _one_line(getattr(error, "message", None) or error)


def _error_code(error: Any) -> str | None:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        code = body.get("code") or (body.get("error") or {}).get("code")
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

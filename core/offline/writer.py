"""The offline explainer's writer: short phrases a person can read aloud, from what a neuron's EXPLAIN excerpts
show, with no language model.

Candidate parts are found in the statistics: single tokens and word forms (`the word " more"`), families a person
names in a word (`numbers`, `closing brackets`, `comments`), neighbours (`the token after "import"`), places
(`... in comments`), and the negative side where it is the larger one (`below zero on commas`). Parts are combined
greedily into phrases with strength in words (`mostly "a", also "b"`). Every phrase is read back by the offline
reader (core.offline.reader) and ranked by how well that reading predicts the EXPLAIN excerpts themselves; the
best few go on to the explain stage, which keeps the one that does best on the CALIBRATE excerpts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core import prompts
from core.offline.families import BY_KEY, TOKEN_FAMILIES
from core.offline.reader import Reading, clause_levels, combine_levels, read_explanation
from core.offline.view import TokenView, token_view
from core.score import Truth, is_readable
from core.types import NeuronExcerpt

MAX_PARTS = 5
"""Most parts joined into one phrase (at most MAX_TOKENS quoted tokens among them)."""

MAX_TOKENS = 5
"""Most quoted tokens in one phrase (the readability rule's limit)."""

CANDIDATES = 8
"""Phrases handed to the explain stage (each is simulated on the CALIBRATE excerpts)."""

PLACES: dict[str, str] = {
    "comment": "in comments", "string": "inside strings", "code": "in code", "parens_region": "inside parentheses",
    "line_start": "at the start of a line",
}
"""Places a phrase may be narrowed to, as written after it."""

PLACE_PARTS = ("words inside parentheses", "text inside strings", "text in comments", "words at the start of a line")
"""Places named on their own (every token there)."""

NEGATIVE = "below zero on "
"""How the negative side is said."""

NEGATIVE_SHARE = 0.5
"""The negative side is offered when the lowest activation reaches this share of the highest below zero (gated MLPs
go negative, and the score is computed on raw activations); calibration decides whether it is said."""

MIN_GAIN = 0.02
"""A part is added to a phrase only when it raises the EXPLAIN fit by at least this much."""


@dataclass(frozen=True)
class Part:
    """A piece of a phrase and what kind it is (pieces of one kind share a clause: "numbers and commas")."""

    text: str
    kind: str
    """"plain" (tokens and families), "context" (its own clause: neighbours, places), "negative"."""
    tokens: int = 0
    """Quoted tokens in `text`."""
    mean: float = 0.0
    """Mean activation on the EXPLAIN tokens it names fully: plain parts are said strongest first, and a much
    weaker one with "also" or "weakly"."""


@dataclass
class _Excerpts:
    """The EXPLAIN excerpts as the writer reads them."""

    views: list[TokenView]
    activations: np.ndarray
    """Every token's raw activation, excerpts concatenated."""
    scale: float
    """The largest activation (level 10)."""
    low: float
    """The lowest activation."""
    truth: Truth
    """The activations centred once: every phrase tried is correlated with them."""

    clauses: dict[str, np.ndarray] = field(default_factory=dict)
    """Each clause's levels over every excerpt, by the clause's repr: the phrases tried for a neuron share their
    parts, so each part's clause is read on the excerpts once."""

    def concat(self, per_view: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(per_view) if per_view else np.zeros(0)

    def predict(self, reading: Reading) -> np.ndarray:
        """The reader's prediction of every token of the excerpts (concatenated) under `reading`."""
        levels = []
        for clause in reading.clauses:
            key = repr(clause)  # equal clauses, equal reprs (a clause holds a dict: no hash)
            if (found := self.clauses.get(key)) is None:
                found = self.clauses[key] = self.concat([clause_levels(clause, view) for view in self.views])
            levels.append(found)
        return combine_levels(reading, levels, self.activations.size)


def _read(excerpts: Sequence[NeuronExcerpt]) -> _Excerpts:
    views = [token_view(tuple(e.excerpt.tokens)) for e in excerpts]
    activations = np.concatenate([np.asarray(e.activations, dtype=np.float64) for e in excerpts])
    if not activations.size:
        return _Excerpts(views, activations, 0.0, 0.0, Truth(activations))
    return _Excerpts(views, activations, float(activations.max()), float(activations.min()), Truth(activations))


def fit(text: str, data: _Excerpts) -> float:
    """How well the reader's reading of `text` predicts the EXPLAIN excerpts (Pearson, pooled; -1 if undefined)."""
    score = data.truth.pearson(data.predict(read_explanation(text)))
    return -1.0 if score is None else score


# --- parts ------------------------------------------------------------------------------------------------------------


def _token_phrase(tokens: Sequence[str]) -> str:
    quoted = [prompts.quote_token(t) for t in tokens]
    if len(quoted) == 1:
        word = tokens[0].strip()
        return f"the word {quoted[0]}" if word.isalpha() else quoted[0]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _indicator_r(mask: np.ndarray, data: _Excerpts) -> float:
    score = data.truth.pearson(mask.astype(np.float64))
    return -1.0 if score is None else score


def _token_scores(data: _Excerpts, sign: float = 1.0) -> list[tuple[float, str]]:
    """Exact tokens by how well "this token" alone predicts the excerpts (Pearson of its indicator; negated for the
    negative side). Tokens seen in only one excerpt come after all others: they seldom appear again."""
    tokens: list[str] = []
    excerpt_of: list[int] = []
    for number, view in enumerate(data.views):
        tokens += view.tokens
        excerpt_of += [number] * len(view)
    positions: dict[str, list[int]] = defaultdict(list)
    for index, token in enumerate(tokens):
        positions[token].append(index)
    extreme = (sign * data.activations) >= 0.3 * max(abs(data.scale if sign > 0 else data.low), 1e-9)
    scored = []
    for token, where in positions.items():
        if not extreme[where].any():
            continue
        mask = np.zeros(len(tokens), dtype=bool)
        mask[where] = True
        spread = len({excerpt_of[i] for i in where}) >= 2
        scored.append((spread, sign * _indicator_r(mask, data), token))
    scored.sort(key=lambda x: (not x[0], -x[1], x[2]))
    return [(score, token) for _, score, token in scored]


def _frequent_tokens(data: _Excerpts) -> list[str]:
    """Tokens by how often they reach half the largest activation (ties by text)."""
    counts: dict[str, int] = defaultdict(int)
    high = data.activations >= 0.5 * data.scale
    at = 0
    for view in data.views:
        for offset, token in enumerate(view.tokens):
            if high[at + offset]:
                counts[token] += 1
        at += len(view)
    return sorted(counts, key=lambda t: (-counts[t], t))


def _family_scores(data: _Excerpts, sign: float = 1.0) -> list[tuple[float, str]]:
    """Token families by how well their indicator predicts the excerpts (negated for the negative side)."""
    scored = []
    for family in TOKEN_FAMILIES:
        mask = data.concat([family.mask(view) for view in data.views])
        if mask.sum() < 2:
            continue
        scored.append((sign * _indicator_r(mask, data), family.key))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return scored


def _after_scores(data: _Excerpts) -> list[tuple[float, str, float]]:
    """Previous tokens (stripped, case-folded) after which the next token is active: (r, token, share of names)."""
    previous: dict[str, list[int]] = defaultdict(list)
    offset = 0
    names: list[bool] = []
    for view in data.views:
        for index in range(1, len(view)):
            previous[view.folded[index - 1]].append(offset + index)
        names += [bool(s) and s.replace("_", "").isalnum() and not s[0].isdigit() for s in view.stripped]
        offset += len(view)
    high = data.activations >= 0.3 * data.scale
    scored = []
    for token, where in previous.items():
        if not token or len(where) < 2 or not high[where].any():
            continue
        mask = np.zeros(len(data.activations), dtype=bool)
        mask[where] = True
        share = float(np.mean([names[i] for i in where]))
        scored.append((_indicator_r(mask, data), token, share))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return scored


def _plain_parts(data: _Excerpts) -> list[Part]:
    """Tokens and families, best first."""
    parts: list[Part] = []
    for score, key in _family_scores(data)[:6]:
        if score > 0.05:
            parts.append(Part(BY_KEY[key].phrase, "plain"))
    tokens = [t for score, t in _token_scores(data)[:8] if score > 0.02]
    for token in tokens:
        parts.append(Part(prompts.quote_token(token), "plain", tokens=1))
    return parts


def _context_parts(data: _Excerpts) -> list[Part]:
    parts = [Part(text, "context") for text in (*PLACE_PARTS, "words")]
    for score, token, share in _after_scores(data)[:3]:
        if score <= 0.05:
            continue
        quoted = prompts.quote_token(token)
        noun = "the name" if share >= 0.7 else "the token"
        parts.append(Part(f"{noun} right after {quoted}", "context", tokens=1))
    return parts


def _negative_parts(data: _Excerpts) -> list[Part]:
    """Where the neuron goes below zero, when that side is the larger one."""
    if data.activations.size == 0 or -data.low < NEGATIVE_SHARE * data.scale:
        return []
    parts = []
    for score, key in _family_scores(data, sign=-1.0)[:2]:
        if score > 0.05:
            parts.append(Part(NEGATIVE + BY_KEY[key].phrase, "negative"))
    for score, token in _token_scores(data, sign=-1.0)[:3]:
        if score > 0.05:
            parts.append(Part(NEGATIVE + prompts.quote_token(token), "negative", tokens=1))
    return parts


# --- phrases ----------------------------------------------------------------------------------------------------------


def join(parts: Sequence[Part], graded: bool = True) -> str:
    """Parts as one phrase: plain parts share a clause ("numbers and commas"), strongest first, and with `graded` a
    much weaker one is said with "also" or "weakly"; contexts get their own clause (", and ..."), and the negative
    side its own sentence ("; below zero on ...")."""
    plain = sorted((p for p in parts if p.kind == "plain"), key=lambda p: -p.mean)
    strengths = _strengths([p.mean for p in plain]) if graded else [""] * len(plain)
    texts: list[str] = []
    if plain and any(strengths):
        groups: list[tuple[str, list[str]]] = []  # parts of one strength together: "mostly a and b, also c"
        for part, strength in zip(plain, strengths, strict=True):
            lead = strength or "mostly"
            if groups and groups[-1][0] == lead:
                groups[-1][1].append(part.text)
            else:
                groups.append((lead, [part.text]))
        texts.append(", ".join(f"{lead} {_and(names)}" for lead, names in groups))
    elif plain and all(p.tokens == 1 and p.text.startswith('"') for p in plain):
        texts.append(_token_phrase([prompts.unquote(p.text) for p in plain]))
    elif plain:
        texts.append(_and([p.text for p in plain]))
    contexts = [p.text for p in parts if p.kind == "context"]
    negatives = [p.text.removeprefix(NEGATIVE) for p in parts if p.kind == "negative"]
    text = ", and ".join(texts + contexts)
    if negatives:
        text = "; ".join([t for t in [text] if t] + [NEGATIVE + _and(negatives)])
    return text


def _and(names: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _with_mean(part: Part, data: _Excerpts) -> Part:
    """The part with the mean activation on what it names fully (not its loose matches)."""
    predicted = data.predict(read_explanation(part.text))
    chosen = data.activations[predicted >= predicted.max()] if predicted.max() > 0 else predicted[:0]
    return Part(part.text, part.kind, part.tokens, float(chosen.mean()) if chosen.size else 0.0)


def _strengths(means: Sequence[float]) -> list[str]:
    """Strength words for each part after the first (the strongest), from the mean activations of what they name."""
    result = [""]
    for mean in means[1:]:
        ratio = mean / means[0] if means[0] > 0 else 1.0
        result.append("weakly" if ratio < 0.45 else "also" if ratio < 0.8 else "")
    return result


def write_phrases(excerpts: Sequence[NeuronExcerpt], limit: int = CANDIDATES) -> list[str]:
    """Up to `limit` readable phrases, best first (fit on the EXPLAIN excerpts, a little less for length and quoted
    tokens); none when nothing is active."""
    data = _read(excerpts)
    if data.activations.size == 0 or (data.scale <= 0 and data.activations.min() >= 0):
        return []
    plain = [_with_mean(p, data) for p in _plain_parts(data)]
    singles = plain + _context_parts(data) + _negative_parts(data)
    scored: dict[str, float] = {}
    position = {part: index for index, part in enumerate(singles)}  # one order per set of parts

    considered: dict[frozenset[Part], float] = {}  # the greedy search meets the same sets from several seeds

    def consider(parts: Sequence[Part]) -> float:
        """The best fit of the phrases these parts make (one order per set of parts): flat, and graded by strength
        ("mostly a, also b")."""
        if sum(p.tokens for p in parts) > MAX_TOKENS:
            return -1.0
        if (found := considered.get(key := frozenset(parts))) is not None:
            return found
        best = -1.0
        for graded in (False, True):
            text = join(sorted(parts, key=position.__getitem__), graded)
            if text and (text in scored or is_readable(text)):  # only readable phrases are ever scored
                if text not in scored:
                    scored[text] = fit(text, data)
                best = max(best, scored[text])
        considered[key] = best
        return best

    single_fit = {part: consider([part]) for part in singles}
    ranked_singles = sorted(singles, key=lambda p: -single_fit[p])
    # greedy: from each of the best few single parts, add the part (among the best few) that helps most, while it
    # helps
    for seed in ranked_singles[:SEEDS]:
        chosen = [seed]
        best = single_fit[seed]
        while len(chosen) < MAX_PARTS:
            options = [(consider([*chosen, p]), p) for p in ranked_singles[:ADDITIONS] if p not in chosen]
            if not options:
                break
            score, part = max(options, key=lambda x: x[0])
            if score < best + MIN_GAIN:
                break
            chosen.append(part)
            best = score
    # the tokens most often at half the maximum or more (the token-lookup reference's choice), five and three
    frequent = _frequent_tokens(data)
    for count in (5, 3):
        if len(frequent) >= count:
            text = _token_phrase(frequent[:count])
            if text not in scored and is_readable(text):
                scored[text] = fit(text, data)
    # word forms together: a word in any case or spacing, or in any form
    for part in plain[:8]:
        word = prompts.unquote(part.text).strip() if part.tokens == 1 and part.text.startswith('"') else ""
        if word.isalpha() and len(word) >= 3:
            for how in ("in any case or spacing", "in any form"):
                text = f"{prompts.quote_token(word)} {how}"
                if text not in scored and is_readable(text):
                    scored[text] = fit(text, data)
    # places: the best phrases narrowed to a place, or kept out of one
    for text in sorted(scored, key=lambda t: -scored[t])[:3]:
        if ";" in text or ", and" in text or text.startswith("mostly "):
            continue  # a place said after several clauses would read as if it narrowed them all
        for place in PLACES.values():
            for phrase in (f"{text} {place}", f"{text}, not {place}"):
                if is_readable(phrase) and phrase not in scored:
                    score = fit(phrase, data)
                    if score >= scored[text] + MIN_GAIN:  # a place that changes nothing is not worth saying
                        scored[phrase] = score
    ranked = sorted(scored, key=lambda t: (-preference(t, scored[t]), t))
    return [t for t in ranked if scored[t] > -1.0][:limit]


SEEDS = 4
"""Single parts the greedy search starts from."""

ADDITIONS = 12
"""Single parts (the best by their own fit) the greedy search may add at each step."""


LENGTH_COST = 0.001
"""Fit given up per character when phrases are ranked: of two that fit alike, the shorter comes first."""

QUOTE_COST = 0.01
"""Fit given up per quoted token: a family named in words ("commas") reads better than a quoted symbol."""


def preference(text: str, score: float) -> float:
    """The rank of a phrase: its fit on the EXPLAIN excerpts, less a little for length and quoted tokens."""
    return score - LENGTH_COST * len(text) - QUOTE_COST * len(prompts.QUOTED.findall(text))

"""The offline simulator's reader: turns an explanation a person (or the offline explainer) wrote into a prediction
for every token of an excerpt, on the 0-10 scale. No language model; it reads the explanation and the excerpt's
tokens, nothing else of the neuron.

What it reads
- quoted tokens in any quote style ("x", 'x', “x”, `x`), matched exactly, or at a little less when only case and
  edge spaces differ ("in any case or spacing" lifts that); written symbols (`->`, `::`, `[[`);
- words an explanation names, even function words: "the word the", "words like within, below", "such as";
- families by their everyday names and plurals (core.offline.families): "numbers", "Python keywords",
  "closing brackets", "line breaks", "capitalised words", "word pieces", ...;
- places: "in comments", "inside strings", "words inside parentheses", "at the start of a line", and their
  negation ("not in comments", "outside strings");
- neighbours: "X after Y", "the token after X", "the name right after def", "X before Y", "'and' between two
  names";
- strength in words: "mostly X, also Y", "weakly Z"; the negative side: "below zero on commas";
- every other content word by its stem ("words about depending" lights " depends", "Dependency"), and, with
  knowledge of words (`baseline:words`, core.offline.knowledge), every word that belongs to what the content words
  name ("animals" lights " giraffe");
- the statistics format of earlier versions (`"x" (9.4)`, `"x" after "y" (7)`, `any token after "y" (5)`), so
  old explanations and the token-table reference still read as they were written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np

from core import prompts
from core.offline.families import BY_KEY, REGION_NAMES, TOKEN_FAMILY_NAMES
from core.offline.view import TokenView, token_view

FULL = 10.0
"""Level of what an explanation names without saying how strongly."""

ALSO = 7.0
"""Level of what comes after "also", "as well as", "plus"."""

WEAK = 4.0
"""Level of what comes after "weakly", "a little", "sometimes", "to a lesser extent"."""

LOOSE_FACTOR = 0.8
"""A quoted token matched only when case and edge spaces are ignored gets this share of its level."""

EXAMPLE_SHARE = 0.5
"""Share of the level for the other members of a family whose examples are listed."""

NEGATIVE_BASE = 2.0
"""When an explanation names where the neuron goes below zero, every other token is predicted this level (so the
named ones can sit below it on the 0-10 scale)."""


@dataclass(frozen=True)
class Selector:
    """Which tokens a part of an explanation names."""

    exact: dict[str, float | None] = field(default_factory=dict)
    """Quoted tokens -> their stated level (old statistics format) or None."""
    loose: frozenset[str] = frozenset()
    """Named words and written symbols, matched stripped and case-folded."""
    stems: frozenset[str] = frozenset()
    """Stems of content words: a token whose letters have this stem (or extend it) is named."""
    families: tuple[str, ...] = ()
    """Keys of token families."""
    generic: str | None = None
    """"any" (any token), "word" (tokens with letters) or "name" (identifier-like tokens) when the text says only
    "the token", "words", "the name"."""
    every_case: bool = False
    """Quoted tokens count fully in any case or spacing ("in any case or spacing")."""
    theme: str = ""
    """The content words, as written ("animals", "feelings"): with knowledge of words, a word that belongs to what
    they name is named too (core.offline.knowledge)."""
    family_share: float = 1.0
    """Strength of the families' members: EXAMPLE_SHARE when the text also lists examples ("prepositions like in
    and by": the examples are what was seen firing, the rest of the family less so)."""

    def grounded(self) -> bool:
        """Whether it names tokens the reader can find by rule (not only by the stems of content words)."""
        return bool(self.exact or self.loose or self.families or self.generic)

    def empty(self) -> bool:
        return not (self.exact or self.loose or self.stems or self.families or self.generic)


@dataclass(frozen=True)
class Clause:
    """One statement of an explanation: which tokens, where, how strongly."""

    target: Selector
    level: float = FULL
    negative: bool = False
    after: Selector | None = None
    """The previous token must be one of these."""
    before: Selector | None = None
    """The next token must be one of these."""
    inside: tuple[str, ...] = ()
    """Region families the token must lie in (all of them)."""
    outside: tuple[str, ...] = ()
    """Region families the token must not lie in."""
    exclude: Selector | None = None
    """Tokens taken out again ("numbers but not years")."""


@dataclass(frozen=True)
class Reading:
    """What the reader understood of one explanation."""

    clauses: tuple[Clause, ...]

    @property
    def has_negative(self) -> bool:
        return any(c.negative for c in self.clauses)


# --- words ----------------------------------------------------------------------------------------------------------

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
    form forms name names right just directly immediately next previous following follows followed whatever
    anything everything come comes coming precede precedes preceding preceded appear appears appearing inside
    outside case cases spacing spelling sign signs mark marks lot lots little bit mostly primarily chiefly
    stand alone standalone single two three place places position positions end ends start starts begin beginning
    line lines piece pieces go goes going high higher highest low lower lowest strong weak"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
"""Words of free text that name no token by themselves (function words and the vocabulary of explanations)."""

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


# --- parsing --------------------------------------------------------------------------------------------------------

_LEVEL = re.compile(r"\s*\(\s*(-?\d{1,2}(?:\.\d+)?)\s*\)")
_SYMBOL_RUN = re.compile(r"(?<![\w\\])(?:[^\w\s\"'“”‘’`(),.;:!?]{2,}|::|\[\[|\]\]|\(\)|\.\.\.|[=+*/%<>|&^~@#$-])"
                         r"(?![\w\"'“”‘’`])")
"""Symbols written without quotes: two or more together (`->`, `::`, `[[`), or one standing alone (`=`)."""
_SLOT = re.compile(r"\x00(\d+)\x00")
_WORD = re.compile(r"[a-z][a-z'_-]*|\x00\d+\x00|[^\sa-z\x00]")

_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(rf"(?<![\w-])(?:{pattern})(?![\w-])")) for kind, pattern in (
        ("outside", r"(?:but |and )?(?:not|never) (?:in|inside|within)|except (?:in|inside|within)|outside(?: of)?"
                    r"|other than in"),
        ("exclude", r"but not|except(?: for)?|other than|excluding|apart from"),
        ("after", r"(?:(?:right|just|directly|immediately) )?(?:after|following|(?:that |which )?follows?|"
                  r"(?:that |which )?comes? after|coming after|preceded by)"),
        ("before", r"(?:(?:right|just|directly|immediately) )?(?:before|followed by|that precedes?|preceding|"
                   r"ahead of|in front of)"),
        ("between", r"between"),
        ("inside", r"in|inside|within|at"),
    )
)
"""Words that open a context, in the order they are tried at each place."""

_STRENGTH = re.compile(
    r"(?<![\w-])(?P<weak>(?:and |but )?(?:more |much )?(?:weakly|a little|a bit|slightly|sometimes|partly|less so|"
    r"less strongly|to a lesser (?:extent|degree)|less often|faintly))(?![\w-])"
    r"|(?<![\w-])(?P<also>(?:and )?also|as well as|plus|and to some extent)(?![\w-])"
    r"|(?<![\w-])(?P<strong>mostly|mainly|especially|above all|most strongly|strongly|primarily|chiefly|"
    r"in particular)(?![\w-])"
)
_NEGATIVE = re.compile(r"(?<![\w-])(?:(?:goes |going |is |are )?(?:below zero|negative|lowest|most negative|"
                       r"inhibited|suppressed|silenced)(?: on| by| for| at)?)(?![\w-])")
_ANY_CASE = re.compile(r"in (?:any|every|all) (?:case|cases|spelling|spacing)|any case|case-insensitive|"
                       r"upper or lower case|with or without (?:a )?(?:leading )?spaces?")
_FORMS = re.compile(r"(?:word )?forms of|and its forms|and other forms|in (?:any|all its|all|every) forms?|"
                    r"variants of")
_GENERIC = (
    ("any", re.compile(r"(?<![\w-])(?:tokens?|things?|whatever|anything|everything|one|ones|next one|what comes|"
                       r"what follows)(?![\w-])")),
    ("name", re.compile(r"(?<![\w-])(?:names?|identifiers?)(?![\w-])")),
    ("word", re.compile(r"(?<![\w-])(?:words?|terms?)(?![\w-])")),
)
_CONNECTORS = frozenset({"and", "or", "the", "a", "an", "as", "well", "other", "etc", "so", "on", "more"})


_FUNCTION_WORDS_TEXT = """
    right just directly immediately after before following inside within between like such including in at on of
    for with and or which who that to from by as is are starting ending beginning into onto over under than then
    not meaning about related relating describing naming referring denoting expressing used"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
"""Words that usually open a context: after "the word" they are named only when nothing follows ("the word in")."""

_NAMED_ONE = re.compile(r"(?<![\w-])(?:the )?(?:words?|tokens?|terms?|keywords?|names?|prepositions?|conjunctions?|"
                        r"pronouns?|articles?|verbs?|nouns?|symbols?|strings?|literals?) ([a-z_][a-z0-9_]*)"
                        r"(?P<end>\s*(?:$|[,;.]|and |or ))?")
_LISTED = re.compile(r"(?:(?<![\w-])(?:like|such as|eg|including|namely|as in|for example)|:)\s+"
                     r"((?:\x00\d+\x00|[a-z_][a-z0-9_]*)(?:\s*(?:,|and|or|, and|, or)\s*"
                     r"(?:\x00\d+\x00|[a-z_][a-z0-9_]*))*)")


class _Text:
    """An explanation in lower case with the tokens it names taken out into numbered slots: quoted tokens, written
    symbols, words named ("the word in", "words like within, below"), so the words around them can be read for
    their meaning."""

    def __init__(self, text: str) -> None:
        self.slots: list[tuple[str, float | None, bool]] = []  # (token, stated level, quoted)
        self.listed: set[int] = set()
        """Slots that are examples in a list ("like in and by")."""
        parts, at = [], 0
        for match in prompts.QUOTED.finditer(text):
            level_match = _LEVEL.match(text, match.end())
            level = min(max(float(level_match.group(1)), -10.0), 10.0) if level_match else None
            parts.append(text[at : match.start()].lower())
            parts.append(self._slot(prompts.unquote(match.group(0)), level, True))
            at = level_match.end() if level_match else match.end()
        parts.append(text[at:].lower())
        rest = "".join(parts)
        rest = re.sub(r"\be\.g\.|\bi\.e\.", "eg", rest)
        rest = _SYMBOL_RUN.sub(lambda m: self._slot(m.group(0), None, False), rest)
        rest = _NAMED_ONE.sub(self._named, rest)
        rest = _LISTED.sub(self._listed, rest)
        self.text = rest

    def _slot(self, token: str, level: float | None, quoted: bool) -> str:
        self.slots.append((token, level, quoted))
        return f" \x00{len(self.slots) - 1}\x00 "

    def _named(self, match: re.Match[str]) -> str:
        word = match.group(1)
        if (word in _FUNCTION_WORDS and match.group("end") is None) or word in _GENERIC_NOUNS:
            return match.group(0)
        for pattern, _ in (*TOKEN_FAMILY_NAMES, *REGION_NAMES):  # "word pieces", "string literals": a family
            found = pattern.search(match.string, match.start(0), match.end(1) + 40)
            if found and found.start() <= match.start(1) < found.end():
                return match.group(0)
        head = match.group(0)[: match.start(1) - match.start(0)]
        return head + self._slot(word, None, False) + (match.group("end") or "")

    def _listed(self, match: re.Match[str]) -> str:
        head = match.group(0)[: match.start(1) - match.start(0)]
        items = re.sub(r"(?<![\x00\d])\b([a-z_][a-z0-9_]*)\b",
                       lambda m: m.group(0) if m.group(1) in ("and", "or") else self._slot(m.group(1), None, False),
                       match.group(1))
        self.listed.update(int(n) for n in _SLOT.findall(items))
        return head + items


_GENERIC_NOUNS_TEXT = "token tokens word words term terms name names thing things one ones"
_GENERIC_NOUNS = frozenset(_GENERIC_NOUNS_TEXT.split())


_FAMILY_TABLES = {"tokens": TOKEN_FAMILY_NAMES, "regions": REGION_NAMES}
"""The names of token families and of places (regions), by which `_families` reads."""


def _families(text: str, table: str) -> tuple[list[str], str]:
    """Family keys of `table` ("tokens" or "regions") named in `text` (where names overlap, the longest wins:
    "keyword arguments" over "keyword") and the text with their names blanked."""
    found, blanked = _named_families(text, table)
    return list(found), blanked


@lru_cache(maxsize=16384)
def _named_families(text: str, table: str) -> tuple[tuple[str, ...], str]:
    # kept per text: the writer reads the same parts again in every phrase it tries
    matches = sorted(((m.start(), -len(m.group(0)), m.end(), f.key) for pattern, f in _FAMILY_TABLES[table]
                      for m in pattern.finditer(text)))
    found: list[str] = []
    blanked = list(text)
    taken = 0
    for start, _, end, key in matches:
        if start < taken:
            continue
        taken = end
        if key not in found:
            found.append(key)
        blanked[start:end] = " " * (end - start)
    return tuple(found), "".join(blanked)


def _selector(text: str, source: _Text, *, every_case: bool = False, context: bool = False) -> Selector:
    """What a piece of an explanation names. In a context ("after X") a bare word names that word."""
    exact: dict[str, float | None] = {}
    loose: set[str] = set()
    examples = any(int(n) in source.listed for n in _SLOT.findall(text))
    for match in _SLOT.finditer(text):
        token, level, quoted = source.slots[int(match.group(1))]
        if quoted:
            exact.setdefault(token, level)
        else:
            loose.add(token.strip().casefold())
    families, rest = _families(text, "tokens")
    places, rest = _families(rest, "regions")  # "comments" alone: every token in comments
    families += places
    forms = bool(_FORMS.search(rest))
    words = [w for w in re.findall(r"[a-z][a-z0-9_'-]*", _SLOT.sub(" ", rest))]
    stems: set[str] = set()
    content = []
    for word in words:
        if word not in STOPWORDS and len(word) >= 2 and not word.endswith("'s"):
            stems.add(stem(word))
            content.append(word)
    if forms:
        for token in [*exact, *loose]:
            if token.strip() and token.strip()[0].isalpha():
                stems.add(stem(token.strip()))
    if context and not (exact or loose or families):
        bare = [w for w in words if w not in _CONNECTORS and w not in ("a", "an", "the")]
        if len(bare) == 1 and not _GENERIC_WORDS.match(bare[0]):  # "after def", "after import"
            loose.add(bare[0])
            stems.discard(stem(bare[0]))
    generic = None
    if not (exact or loose or families or stems):
        for kind, pattern in _GENERIC:
            if pattern.search(rest):
                generic = kind
                break
    return Selector(exact, frozenset(loose), frozenset(stems), tuple(families), generic, every_case,
                    " ".join(content), EXAMPLE_SHARE if examples and families else 1.0)


_GENERIC_WORDS = re.compile(r"(?:tokens?|things?|words?|names?|terms?|identifiers?|ones?)$")


def _split_contexts(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The target part of a clause and its contexts [(kind, text)], split at the context words."""
    cuts: list[tuple[int, int, str]] = []
    for kind, pattern in _MARKERS:
        for match in pattern.finditer(text):
            if not any(start <= match.start() < end or match.start() <= start < match.end() for start, end, _ in cuts):
                cuts.append((match.start(), match.end(), kind))
    cuts.sort()
    if not cuts:
        return text, []
    target = text[: cuts[0][0]]
    contexts = []
    for index, (_, end, kind) in enumerate(cuts):
        stop = cuts[index + 1][0] if index + 1 < len(cuts) else len(text)
        contexts.append((kind, text[end:stop]))
    return target, contexts


def _neighbour(text: str, source: _Text) -> Selector | None:
    """What a neighbour must be ("after def", "before a comma"); None when the words name nothing the reader can
    find by rule ("after a module name"): a condition it cannot check does not silence the target."""
    selector = _selector(text, source, context=True)
    return selector if selector.grounded() else None


def _clause(text: str, source: _Text, level: float, negative: bool) -> Clause | None:
    every_case = bool(_ANY_CASE.search(text))
    if every_case:
        text = _ANY_CASE.sub(" ", text)
    target_text, contexts = _split_contexts(text)
    after = before = exclude = None
    inside: list[str] = []
    outside: list[str] = []
    extra: list[str] = []  # context words that name no place: read as part of the target ("in" as a word)
    for kind, part in contexts:
        if kind in ("inside", "outside"):
            regions, _ = _families(part, "regions")
            if regions:
                (inside if kind == "inside" else outside).extend(regions)
            else:
                # "numbers in a list": a place the reader does not know; the target still counts, and so do the
                # tokens the words there name ("pieces inside words, like 'inter'", "inside or outside: within")
                extra += _SLOT.findall(part)
        elif kind == "exclude":
            regions, _ = _families(part, "regions")
            if regions and not _families(part, "tokens")[0]:
                outside.extend(regions)
            else:
                exclude = _selector(part, source)
        elif kind == "after":
            after = _neighbour(part, source)
        elif kind == "before":
            before = _neighbour(part, source)
        elif kind == "between":
            first, _, second = part.partition(" and ")
            pair = re.match(r"\s*(?:two|2)\s+(.*)", part)
            if pair:
                after = before = _neighbour(pair.group(1), source)
            else:
                after = _neighbour(first, source)
                before = _neighbour(second or first, source)
    target = _selector(" ".join([target_text, *(f"\x00{n}\x00" for n in extra)]), source, every_case=every_case)
    if target.empty() and not (after or before or inside or outside):
        return None
    if target.empty():
        target = Selector(generic="any")
    return Clause(target, level, negative, after, before, tuple(inside), tuple(outside), exclude)


@lru_cache(maxsize=4096)
def read_explanation(text: str) -> Reading:
    """What the reader understands of an explanation (kept: the same text is read for many excerpts)."""
    source = _Text(text)
    clauses: list[Clause] = []
    for segment in re.split(r";|\.\s|\n", source.text):
        negative = False
        found = _NEGATIVE.search(segment)
        if found:
            negative = True
            segment = segment[: found.start()] + " " + segment[found.end() :]
        pieces: list[tuple[str, float]] = []
        at, level = 0, FULL
        for match in _STRENGTH.finditer(segment):
            pieces.append((segment[at : match.start()], level))
            at = match.end()
            level = WEAK if match.group("weak") else ALSO if match.group("also") else FULL
        pieces.append((segment[at:], level))
        for piece, piece_level in pieces:
            clause = _clause(piece, source, piece_level, negative)
            if clause is not None:
                clauses.append(clause)
    return Reading(tuple(clauses))


# --- predicting -----------------------------------------------------------------------------------------------------


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


class Knowledge(Protocol):
    """Knowledge of words (core.offline.knowledge.WordKnowledge)."""

    def membership(self, family: str, words: Sequence[str]) -> np.ndarray:
        """How much each word belongs to the family, 0-1."""
        ...


def _selector_strength(selector: Selector, view: TokenView, knowledge: Knowledge | None = None) -> np.ndarray:
    """How strongly each token is named by `selector`: 1, LOOSE_FACTOR for a loose match of a quoted token, a share
    from knowledge of words, 0."""
    strength = np.zeros(len(view), dtype=np.float64)
    if knowledge is not None and selector.theme:
        where = [i for i, s in enumerate(view.folded) if len(s) >= 3 and s.isalpha() and s not in STOPWORDS]
        if where:
            words = [view.stripped[i] for i in where]
            strength[where] = knowledge.membership(selector.theme, words)
    if selector.generic == "any":
        strength[:] = 1.0
    elif selector.generic == "word":
        strength = np.maximum(strength, view.masks_for("word", _has_letters))
    elif selector.generic == "name":
        strength = np.maximum(strength, view.masks_for("name", _is_name))
    for key in selector.families:
        strength = np.maximum(strength, selector.family_share * BY_KEY[key].mask(view))
    if selector.exact or selector.loose:
        loose_factor = 1.0 if selector.every_case else LOOSE_FACTOR
        for token in selector.exact:
            folded = token.strip().casefold()
            if folded:
                for index in view.by_folded.get(folded, ()):
                    strength[index] = max(strength[index], loose_factor)
        for token in selector.exact:
            for index in view.by_token.get(token, ()):
                strength[index] = 1.0
        for folded in selector.loose:
            for index in view.by_folded.get(folded, ()):
                strength[index] = 1.0
    if selector.stems:
        strength = np.maximum(strength, _stem_mask(view, selector.stems))
    return strength


def _has_letters(text: str) -> bool:
    return any(c.isalpha() for c in text)


def _is_name(text: str) -> bool:
    return bool(text) and text.replace("_", "").isalnum() and not text[0].isdigit()


@lru_cache(maxsize=65536)
def _stem_matches(folded: str, stems: frozenset[str]) -> bool:
    letters = _letters(folded)
    return len(letters) >= 2 and _stem_match(stem(letters), stems)


def _stem_mask(view: TokenView, stems: frozenset[str]) -> np.ndarray:
    """Tokens whose letters have one of the stems (each distinct token text is decided once)."""
    mask = np.zeros(len(view), dtype=np.float64)
    for folded, where in view.by_folded.items():
        if folded and _stem_matches(folded, stems):
            mask[where] = 1.0
    return mask


def _token_levels(selector: Selector, view: TokenView, level: float, knowledge: Knowledge | None) -> np.ndarray:
    """Level of each token under a clause's target: stated levels (old format) where given, else `level`."""
    strength = _selector_strength(selector, view, knowledge)
    levels = strength * level
    stated = {t: v for t, v in selector.exact.items() if v is not None}
    if stated:
        loose: dict[str, float] = {}
        for token, value in stated.items():
            loose.setdefault(token.strip().casefold(), value)
        for index, token in enumerate(view.tokens):
            if token in stated:
                levels[index] = stated[token]
            elif view.folded[index] in loose and strength[index] > 0 and token not in selector.exact:
                levels[index] = loose[view.folded[index]] * LOOSE_FACTOR
    return levels


def clause_levels(clause: Clause, view: TokenView, knowledge: Knowledge | None = None) -> np.ndarray:
    """The level (0 up) each token of `view` gets from one clause of a reading, before the clauses are combined."""
    levels = _token_levels(clause.target, view, clause.level, knowledge)
    if clause.after is not None:
        previous = np.concatenate([[0.0], _selector_strength(clause.after, view)[:-1]])
        if clause.target.generic == "any" and clause.after.exact and any(v is not None for v in
                                                                         clause.after.exact.values()):
            levels = np.zeros(len(view))  # old format: "any token after "y" (5)": the level stated after y
            after_level = next(v for v in clause.after.exact.values() if v is not None)
            levels[1:] = np.where(previous[1:] > 0, abs(after_level), 0.0)
        else:
            levels = levels * (previous > 0)
            stated = [v for v in clause.after.exact.values() if v is not None]
            if stated and not any(v is not None for v in clause.target.exact.values()):
                levels = np.where(levels > 0, abs(stated[0]), 0.0)
    if clause.before is not None:
        following = np.concatenate([_selector_strength(clause.before, view)[1:], [0.0]])
        levels = levels * (following > 0)
    for key in clause.inside:
        levels = levels * BY_KEY[key].mask(view)
    for key in clause.outside:
        levels = levels * ~BY_KEY[key].mask(view)
    if clause.exclude is not None:
        levels = levels * (_selector_strength(clause.exclude, view) == 0)
    return np.abs(levels)


def predict(reading: Reading, tokens: Sequence[str], knowledge: Knowledge | None = None) -> list[float]:
    """Predicted level (0-10) of each token under an explanation's reading (with `knowledge`, words that belong to
    a family the explanation names in its own words count too)."""
    return predict_view(reading, token_view(tuple(tokens)), knowledge).tolist()


def predict_view(reading: Reading, view: TokenView, knowledge: Knowledge | None = None) -> np.ndarray:
    """`predict` on an excerpt's view, as an array (the writer tries hundreds of phrases on the same views)."""
    return combine_levels(reading, [clause_levels(clause, view, knowledge) for clause in reading.clauses], len(view))


def combine_levels(reading: Reading, levels: Sequence[np.ndarray], size: int) -> np.ndarray:
    """The prediction from the levels of each of `reading`'s clauses (in its order) over `size` tokens: the
    strongest clause wins, and a reading with negative clauses puts unnamed tokens at a base above zero."""
    positive = np.zeros(size, dtype=np.float64)
    negative = np.zeros(size, dtype=np.float64)
    for clause, named in zip(reading.clauses, levels, strict=True):
        if clause.negative:
            negative = np.maximum(negative, named)
        else:
            positive = np.maximum(positive, named)
    positive = np.minimum(positive, prompts.SCALE_MAX)  # levels are absolute values: no lower bound to clip
    if not reading.has_negative:
        return positive
    base = NEGATIVE_BASE
    negative = np.minimum(negative, prompts.SCALE_MAX)
    return np.where(positive > 0, base + positive * (prompts.SCALE_MAX - base) / prompts.SCALE_MAX,
                    base * (1.0 - negative / prompts.SCALE_MAX))


def predict_text(explanation: str, tokens: Sequence[str], knowledge: Knowledge | None = None) -> list[float]:
    """Predicted level (0-10) of each token under an explanation."""
    return predict(read_explanation(explanation), tokens, knowledge)

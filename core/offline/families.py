"""Families of tokens a person names in a word ("numbers", "Python keywords", "closing brackets", "comments"), each
with the phrase the offline explainer writes for it, the everyday names the offline reader recognises, and which
tokens of an excerpt belong to it.

One table serves both sides, so every phrase the explainer writes reads back as the same family.
"""

from __future__ import annotations

import builtins
import keyword
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.offline.view import TokenView

Member = Callable[[TokenView], np.ndarray]
"""Which tokens of an excerpt belong to a family (one bool per token)."""


@dataclass(frozen=True)
class Family:
    """A family of tokens with a name people use."""

    key: str
    phrase: str
    """What the explainer writes: "numbers", "Python keywords"."""
    names: str
    """Regular expression (matched on lower-case text, whole words) of what people call it, plurals included."""
    members: Member
    region: bool = False
    """A place rather than a kind of token ("comments", "strings"): "X in comments" narrows X to it."""

    def mask(self, view: TokenView) -> np.ndarray:
        """Members among the view's tokens (computed once per excerpt and family)."""
        found = view.masks.get(self.key)
        if found is None:
            found = np.asarray(self.members(view), dtype=bool)
            view.masks[self.key] = found
        return found


def _each(test: Callable[[str], bool], *, word_start: bool = False) -> Member:
    """A family decided by each token's stripped text alone (optionally only where a word starts)."""

    def members(view: TokenView) -> np.ndarray:
        found = np.fromiter((test(s) for s in view.stripped), dtype=bool, count=len(view))
        return found & view.word_start if word_start else found

    return members


def _made_of(chars: str) -> Callable[[str], bool]:
    allowed = frozenset(chars)
    return lambda s: bool(s) and set(s) <= allowed


def _contains_any(chars: str) -> Callable[[str], bool]:
    wanted = frozenset(chars)
    return lambda s: bool(s) and _is_symbols(s) and bool(wanted & set(s))


_PUNCTUATION = frozenset(string.punctuation)


def _is_symbols(text: str) -> bool:
    return bool(text) and all(ch in _PUNCTUATION for ch in text)


def _is_number(text: str) -> bool:
    return bool(text) and text.replace(".", "").replace(",", "").replace("_", "").isdigit() and text[0].isdigit()


def _years(view: TokenView) -> np.ndarray:
    """Digits of a run of four that reads as a year (1500-2099): SmolLM2 writes " 1999" as " ", "1", "9", "9", "9"."""
    found = np.zeros(len(view), dtype=bool)
    digits = [s.isdigit() for s in view.stripped]
    index = 0
    while index < len(view):
        if not digits[index]:
            index += 1
            continue
        end = index
        while end < len(view) and digits[end] and not (end > index and view.tokens[end][:1].isspace()):
            end += 1
        run = "".join(view.stripped[index:end])
        if len(run) == 4 and (run[:2] == "20" or "15" <= run[:2] <= "19"):
            found[index:end] = True
        index = end
    return found


def _whitespace(view: TokenView) -> np.ndarray:
    return np.array([bool(t) and not t.strip() and "\n" not in t for t in view.tokens], dtype=bool)


def _indentation(view: TokenView) -> np.ndarray:
    """Runs of spaces at the start of a line (after a line break, or a token ending in one)."""
    found = np.zeros(len(view), dtype=bool)
    for index, token in enumerate(view.tokens):
        if token and not token.strip():
            after_break = index > 0 and view.tokens[index - 1].endswith("\n")
            found[index] = ("\n" in token and not token.endswith("\n")) or (after_break and "\n" not in token)
    return found


def _capitalised(text: str) -> bool:
    return len(text) >= 2 and text[0].isupper() and text[0].isalpha() and any(c.islower() for c in text)


def _upper(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 2 and all(c.isupper() for c in letters) and text.replace("_", "").isalnum()


def _pieces(view: TokenView) -> np.ndarray:
    return view.continues_word


def _names_in_code(view: TokenView) -> np.ndarray:
    """Identifiers written with an underscore or in camelCase, or right after a dot (attribute names)."""
    found = np.zeros(len(view), dtype=bool)
    for index, text in enumerate(view.stripped):
        if not text or not (text.replace("_", "").isalnum()):
            continue
        after_dot = index > 0 and view.tokens[index - 1].endswith(".") and not view.tokens[index][:1].isspace()
        found[index] = "_" in text or after_dot
    return found & ~view.in_comment


def _after_dot(view: TokenView) -> np.ndarray:
    found = np.zeros(len(view), dtype=bool)
    for index in range(1, len(view)):
        previous, token = view.tokens[index - 1], view.tokens[index]
        found[index] = (previous.strip() == "." and token[:1].isalpha()) or (
            previous.endswith(".") and len(previous.strip()) > 1 and token[:1].isalpha()
            and previous.strip()[-2:-1].isalnum())
    return found


def _called(view: TokenView) -> np.ndarray:
    """Names right before an opening round bracket: functions being called or defined."""
    found = np.zeros(len(view), dtype=bool)
    for index in range(len(view) - 1):
        following = view.tokens[index + 1]
        found[index] = following.startswith("(") and view.stripped[index].replace("_", "").isalnum()
    return found


def _keyword_arguments(view: TokenView) -> np.ndarray:
    """Names followed by "=" inside round brackets (keyword arguments)."""
    found = np.zeros(len(view), dtype=bool)
    for index in range(len(view) - 1):
        following = view.tokens[index + 1]
        found[index] = (following.startswith("=") and not following.startswith("==") and view.in_parens[index]
                        and view.stripped[index].replace("_", "").isalnum())
    return found


def _words_of(words: str) -> Callable[[str], bool]:
    chosen = frozenset(words.split())
    return lambda s: s.lower() in chosen


_KEYWORDS = frozenset(keyword.kwlist) | {"match", "case"}
_BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_") and n not in _KEYWORDS)
_OPERATORS_TEXT = "+ - * / // % ** = == != < > <= >= += -= *= /= //= %= **= & | ^ ~ << >> &= |= ^= <<= >>= -> := @"
_OPERATORS = frozenset(_OPERATORS_TEXT.split())

ARTICLES = "a an the"
PREPOSITIONS = ("in on at of to for with by from about into onto over under between through during before after "
                "above below within without via per across against among upon toward towards")
PRONOUNS = ("i you he she it we they me him her us them my your his its our their this that these those "
            "itself themselves yourself who whom which what")
CONJUNCTIONS = "and or but nor so yet because although though unless while whereas if whether"
AUXILIARIES = ("is are was were be been being am has have had do does did can could may might must shall should will "
               "would")
NEGATIONS = "not no never none nothing cannot n't"


def _in(flag: str) -> Member:
    return lambda view: getattr(view, flag)


FAMILIES: tuple[Family, ...] = (
    Family("year", "years", r"years?|dates?", _years),
    Family("number", "numbers", r"(?:numbers?|digits?|numerals?|numeric(?:al)?(?: values?)?|integers?|figures?)",
           _each(_is_number)),
    Family("keyword", "Python keywords", r"(?:python |reserved |language )?key ?words?|reserved words?",
           _each(_KEYWORDS.__contains__, word_start=True)),
    Family("builtin", "built-in names", r"built-?in (?:names?|functions?|types?)|builtins?",
           _each(_BUILTINS.__contains__, word_start=True)),
    Family("operator", "operators", r"(?:math(?:ematical)? |arithmetic |comparison )?operators?(?: symbols?)?"
           r"|math symbols?", _each(_OPERATORS.__contains__)),
    Family("open_bracket", "opening brackets", r"(?:opening|open|left) (?:brackets?|parenthes[ie]s|parens?|braces?)",
           _each(_contains_any("([{"))),
    Family("close_bracket", "closing brackets",
           r"(?:closing|close|right) (?:brackets?|parenthes[ie]s|parens?|braces?)", _each(_contains_any(")]}"))),
    Family("square", "square brackets", r"square brackets?", _each(_contains_any("[]"))),
    Family("brace", "curly braces", r"(?:curly )?braces?|curly brackets?", _each(_contains_any("{}"))),
    Family("bracket", "brackets", r"brackets?|parenthes[ie]s|parens?", _each(_contains_any("()[]{}"))),
    Family("comma", "commas", r"commas?", _each(_made_of(","))),
    Family("period", "full stops", r"periods?|full stops?|dots?", _each(_made_of("."))),
    Family("colon", "colons", r"colons?", _each(_made_of(":"))),
    Family("semicolon", "semicolons", r"semi-?colons?", _each(_made_of(";"))),
    Family("quote_mark", "quote marks", r"(?:quote|quotation) marks?|quotes?|quotation", _each(_made_of("\"'`"))),
    Family("backtick", "backticks", r"backticks?|back-ticks?", _each(_made_of("`"))),
    Family("equals", "equals signs", r"equals?(?: signs?)?|equal signs?", _each(_made_of("="))),
    Family("dash", "dashes", r"dash(?:es)?|hyphens?|minus(?: signs?)?", _each(_made_of("-"))),
    Family("underscore", "underscores", r"underscores?", _each(_made_of("_"))),
    Family("slash", "slashes", r"(?:forward )?slash(?:es)?", _each(_made_of("/"))),
    Family("backslash", "backslashes", r"backslash(?:es)?", _each(_made_of("\\"))),
    Family("star", "asterisks", r"asterisks?|stars?", _each(_made_of("*"))),
    Family("hash", "hash signs", r"hash(?:es| signs?)?|pound signs?", _each(_made_of("#"))),
    Family("at", "at signs", r"at signs?|decorators?", _each(_made_of("@"))),
    Family("question", "question marks", r"question marks?", _each(_made_of("?"))),
    Family("exclamation", "exclamation marks", r"exclamation (?:marks?|points?)", _each(_made_of("!"))),
    Family("percent", "percent signs", r"percent(?: signs?)?", _each(_made_of("%"))),
    Family("punctuation", "punctuation", r"punctuation(?: marks?)?|symbols?", _each(_is_symbols)),
    Family("newline", "line breaks", r"line ?breaks?|new ?lines?|newlines?|ends? of (?:a )?lines?|line ends?"
           r"|line endings?", lambda v: np.array(["\n" in t for t in v.tokens], dtype=bool)),
    Family("indentation", "indentation", r"indentation|indents?|leading (?:spaces|whitespace)", _indentation),
    Family("space", "spaces", r"spaces?|whitespace|blanks?", _whitespace),
    Family("capital", "capitalised words", r"capitali[sz]ed words?|capitali[sz]ed names?|words? (?:that )?(?:start"
           r"(?:s|ing)?|begin(?:s|ning)?) with (?:a )?capital(?: letters?)?|capital(?:i[sz]ed)? letters?|"
           r"title[- ]case words?|proper nouns?", _each(_capitalised, word_start=True)),
    Family("upper", "words in capitals", r"words? in (?:all )?capitals|all[- ]caps(?: words?)?|upper[- ]?case words?|"
           r"acronyms?|abbreviations?|constants? in capitals", _each(_upper, word_start=True)),
    Family("piece", "word pieces that continue a word", r"word pieces?(?: that continue a word)?|pieces? of words?|"
           r"parts? of (?:a )?words?|sub-?words?|(?:middles?|ends?) of (?:a )?words?|suffix(?:es)?|word endings?",
           _pieces),
    Family("dotted", "names after a dot", r"(?:names?|attributes?|methods?) after (?:a )?dots?|attribute names?|"
           r"attributes?|method names?", _after_dot),
    Family("called", "names before a bracket", r"(?:function|method) (?:names?|calls?)|names? before (?:a|an opening)"
           r" (?:bracket|parenthesis)|calls?", _called),
    Family("kwarg", "keyword arguments", r"keyword arguments?|named arguments?", _keyword_arguments),
    Family("code_name", "names in code", r"names? in code|variable names?|identifiers?|snake[_ ]case(?: names?)?",
           _names_in_code),
    Family("article", "articles", r"articles?", _each(_words_of(ARTICLES))),
    Family("preposition", "prepositions", r"prepositions?", _each(_words_of(PREPOSITIONS))),
    Family("pronoun", "pronouns", r"pronouns?", _each(_words_of(PRONOUNS))),
    Family("conjunction", "conjunctions", r"conjunctions?|linking words?", _each(_words_of(CONJUNCTIONS))),
    Family("auxiliary", "helping verbs", r"(?:helping|auxiliary) verbs?|forms of (?:the verb )?(?:to )?be",
           _each(_words_of(AUXILIARIES))),
    Family("function_word", "small function words", r"(?:small |common |short )?function words?|small words?|"
           r"stop ?words?|common (?:small |short )?words?|little words?|grammar words?",
           _each(_words_of(" ".join((ARTICLES, PREPOSITIONS, PRONOUNS, CONJUNCTIONS, AUXILIARIES))))),
    Family("negation", "negations", r"negations?|words? of negation", _each(_words_of(NEGATIONS))),
    Family("line_start", "the first token of a line", r"(?:first|opening) (?:tokens?|words?) (?:of|on) (?:a |each )?"
           r"lines?|(?:the )?(?:start|beginning)s? of (?:a |each )?lines?", _in("line_start")),
    Family("line_end", "the last token of a line", r"(?:last|final) (?:tokens?|words?) (?:of|on|before) (?:a |each |the"
           r" )?(?:lines?|line breaks?)", _in("line_end")),
    Family("string", "strings", r"string literals?|strings?|quoted text|text in quotes|quotes text",
           _in("in_string"), region=True),
    Family("comment", "comments", r"comments?", _in("in_comment"), region=True),
    Family("parens_region", "parentheses", r"parenthes[ie]s|round brackets?|brackets?|parens?", _in("in_parens"),
           region=True),
    Family("square_region", "square brackets", r"square brackets?|list literals?|indexing|subscripts?",
           _in("in_square"), region=True),
    Family("braces_region", "curly braces", r"(?:curly )?braces?|dict(?:ionar(?:y|ies))?(?: literals?)?",
           _in("in_braces"), region=True),
    Family("code", "code", r"code|source code|python code", lambda v: ~(v.in_string | v.in_comment), region=True),
)
"""Every family, most specific first (the reader takes the first whose name matches)."""

BY_KEY: dict[str, Family] = {f.key: f for f in FAMILIES}

TOKEN_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if not f.region)
REGIONS: tuple[Family, ...] = (*(f for f in FAMILIES if f.region), BY_KEY["line_start"], BY_KEY["line_end"])
"""Places a token can be in ("in comments", "at the start of a line")."""


def _compile(families: tuple[Family, ...]) -> list[tuple[re.Pattern[str], Family]]:
    return [(re.compile(rf"(?<![\w-])(?:{f.names})(?![\w-])"), f) for f in families]


TOKEN_FAMILY_NAMES = _compile(TOKEN_FAMILIES)
REGION_NAMES = _compile(REGIONS)

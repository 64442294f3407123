"""core.offline.writer: golden tests of every phrase family. Excerpts are built in code with one family planted
(the neuron fires on it); the writer must say it in the family's words, and the phrase must score high on other
excerpts with the same plant, while a wrong phrase scores low."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest

from core.baseline import BaselineSimulator
from core.offline.families import BY_KEY
from core.offline.view import TokenView, token_view
from core.offline.writer import write_phrases
from core.score import is_readable, pearson
from core.types import Excerpt, ExcerptKind, NeuronExcerpt, NeuronId, Split

SNIPPETS: list[list[str]] = [
    ["def", " load", "(", "path", ",", " mode", "=", "None", "):", "\n"],
    ["    ", "return", " len", "(", "items", ")", " +", " ", "1", "\n"],
    ["    ", "#", " keep", " the", " order", " here", "\n"],
    ["    ", "name", " =", ' "', "hello", " world", '"', "\n"],
    [" in", " ", "1", "9", "9", "9", ",", " the", " code", " changed", "."],
    [" The", " parser", " reads", " more", " and", " less", "."],
    [" read", "ing", " and", " writ", "ing", " files", "."],
    ["import", " os", "\n"],
    ["import", " sys", "\n"],
    ["print", "(", "value", ",", " end", "=", "''", ")", "\n"],
    ["if", " x", " ==", " y", " and", " z", ":", "\n"],
    ["    ", "values", " =", " [", "4", ",", " ", "2", "]", "\n"],
    [" More", " details", " are", " in", " Python", "'s", " docs", "."],
    ["class", " Reader", "(", "object", "):", "\n"],
    ["        ", "self", ".", "size", " =", " size", " *", " ", "2", "\n"],
    [" See", " also", " the", " year", " ", "2", "0", "2", "4", "."],
    [" no", " more", " than", " one", " value", "."],
    ["def", " save", "(", "self", "):", "\n"],
    ["from", " io", " import", " open", "\n"],
    [" Depend", "ency", " check", "er", " runs", "."],
]


def _excerpt_tokens(rng: random.Random, length: int = 64) -> tuple[str, ...]:
    tokens: list[str] = []
    while len(tokens) < length:
        tokens += rng.choice(SNIPPETS)
    return tuple(tokens[:length])


def _excerpts(rule: Callable[[TokenView], np.ndarray], seed: int, count: int = 10) -> list[NeuronExcerpt]:
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    made = []
    for index in range(count):
        tokens = _excerpt_tokens(rng)
        activations = rule(token_view(tokens)) + noise.normal(0.0, 0.2, len(tokens))
        made.append(NeuronExcerpt(NeuronId(0, 0), Excerpt(index, tuple(range(len(tokens))), tokens), ExcerptKind.TOP,
                                  index, Split.EXPLAIN, tuple(float(v) for v in activations)))
    return made


def _family(key: str, level: float = 8.0) -> Callable[[TokenView], np.ndarray]:
    return lambda view: level * BY_KEY[key].mask(view).astype(float)


def _tokens(*chosen: str) -> Callable[[TokenView], np.ndarray]:
    return lambda view: np.array([8.0 if t in chosen else 0.0 for t in view.tokens])


def _after(previous: str) -> Callable[[TokenView], np.ndarray]:
    return lambda view: np.array([8.0 if i and view.folded[i - 1] == previous else 0.0 for i in range(len(view))])


def _words_in_parentheses(view: TokenView) -> np.ndarray:
    return np.array([8.0 if inside and s[:1].isalpha() else 0.0 for s, inside in zip(view.stripped, view.in_parens,
                                                                                      strict=True)])


def _below_zero_on_commas(view: TokenView) -> np.ndarray:
    return np.where(BY_KEY["comma"].mask(view), -6.0, 0.5)


PLANTS: list[tuple[str, Callable[[TokenView], np.ndarray], str, str]] = [
    # (name, the neuron's rule, the phrase it must be written as, a wrong phrase)
    ("a token", _tokens(" more"), 'the word " more"', 'the word " less"'),
    ("a few tokens", _tokens(" more", " less"), '" more" and " less"', "numbers"),
    ("numbers", _family("number"), "numbers", "Python keywords"),
    ("years", _family("year"), "years", "commas"),
    ("keywords", _family("keyword"), "Python keywords", "numbers"),
    ("builtins", _family("builtin"), "built-in names", "line breaks"),
    ("operators", _family("operator"), "operators", "capitalised words"),
    ("opening brackets", _family("open_bracket"), "opening brackets", "closing brackets"),
    ("closing brackets", _family("close_bracket"), "closing brackets", "opening brackets"),
    ("punctuation", _family("punctuation"), "punctuation", "Python keywords"),
    ("line breaks", _family("newline"), "line breaks", "indentation"),
    ("indentation", _family("indentation"), "indentation", "line breaks"),
    ("capitalised words", _family("capital"), "capitalised words", "numbers"),
    ("word pieces", _family("piece"), "word pieces that continue a word", "capitalised words"),
    ("strings", _family("string"), "text inside strings", "text in comments"),
    ("comments", _family("comment"), "text in comments", "text inside strings"),
    ("after import", _after("import"), 'the name right after "import"', 'the name right after "def"'),
    ("after def", _after("def"), 'the name right after "def"', 'the name right after "import"'),
    ("words inside parentheses", _words_in_parentheses, "words inside parentheses", "punctuation"),
    ("the negative side", _below_zero_on_commas, "below zero on commas", "commas"),
]


ALSO_RIGHT = {"a few tokens": ('" less" and " more"',)}
"""Other wordings that say exactly the same."""


def _score(text: str, excerpts: list[NeuronExcerpt]) -> float:
    predicted = BaselineSimulator().simulate(text, [e.excerpt for e in excerpts])
    truth = np.concatenate([e.activations for e in excerpts])
    return pearson(truth, np.concatenate(predicted)) or 0.0


@pytest.mark.parametrize(("name", "rule", "phrase", "wrong"), PLANTS, ids=[p[0] for p in PLANTS])
def test_the_planted_family_comes_out_in_its_words_and_scores_high(name, rule, phrase, wrong):
    phrases = write_phrases(_excerpts(rule, seed=1))
    assert phrases and all(is_readable(p) for p in phrases)
    assert phrases[0] in (phrase, *ALSO_RIGHT.get(name, ())), phrases[:4]
    held_out = _excerpts(rule, seed=2, count=20)
    assert _score(phrase, held_out) >= 0.9
    assert _score(wrong, held_out) < 0.3


def test_word_forms_together():
    """A neuron that fires on " more" and " More" alike gets one word, read in any case: never a list of forms."""
    rule = _tokens(" more", " More")
    phrases = write_phrases(_excerpts(rule, seed=3))
    assert phrases[0] in ('the word " more"', 'the word " More"', '"more" in any case or spacing',
                          '"more" in any form', '"More" in any form'), phrases[:4]
    assert _score(phrases[0], _excerpts(rule, seed=4)) >= 0.9
    assert _score('"more" in any case or spacing', _excerpts(rule, seed=4)) >= 0.9


def test_a_weaker_second_part_is_said_in_words():
    def rule(view: TokenView) -> np.ndarray:
        return np.array([9.0 if t == " more" else 3.0 if s.isdigit() else 0.0
                         for t, s in zip(view.tokens, view.stripped, strict=True)])

    phrases = write_phrases(_excerpts(rule, seed=5))
    assert phrases[0] in ('mostly " more", weakly numbers', 'mostly " more", also numbers'), phrases[:4]
    assert _score(phrases[0], _excerpts(rule, seed=6)) > _score('the word " more"', _excerpts(rule, seed=6))


def test_a_silent_neuron_gets_no_phrase():
    quiet = [NeuronExcerpt(NeuronId(0, 0), Excerpt(0, (0, 1), ("a", "b")), ExcerptKind.TOP, 0, Split.EXPLAIN,
                           (0.0, 0.0))]
    assert write_phrases(quiet) == []


def test_the_writers_prediction_with_shared_clauses_is_the_readers_prediction():
    """The writer reads each clause on the excerpts once and shares it between the phrases it tries: the same
    numbers as the reader predicting each phrase on each excerpt."""
    from core.offline.reader import predict_view, read_explanation
    from core.offline.writer import _read

    excerpts = _excerpts(_tokens(" more", " less"), seed=7)
    data = _read(excerpts)
    texts = ['" more" and " less"', 'mostly " more", also " less"', 'the word " more"', "numbers",
             'the name right after "import"', "below zero on commas", 'mostly " more", weakly numbers; below zero on '
             "commas", "words inside parentheses"]
    read_once = 0
    for _round in range(2):  # the second round only from the shared clauses
        for text in texts:
            reading = read_explanation(text)
            expected = np.concatenate([predict_view(reading, token_view(tuple(e.excerpt.tokens))) for e in excerpts])
            assert np.array_equal(data.predict(reading), expected), text
        read_once = read_once or len(data.clauses)
    assert len(data.clauses) == read_once >= len(texts)

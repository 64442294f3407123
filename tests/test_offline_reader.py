"""core.offline.reader: the offline simulator reads the phrases people write. A table of differently worded
explanations, each with an excerpt built in code and the tokens it must light (and only those)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.baseline import BaselineSimulator
from core.offline.reader import ALSO, FULL, read_explanation
from core.types import Excerpt

Y = [" ", "1", "9", "9", "9"]
"""" 1999" as SmolLM2 writes it: a space token, then one token per digit."""

CASES: list[tuple[str, list[str], set[int]]] = [
    # quoted tokens, any quote style, and words named without quotes (function words too)
    ('the word "more"', [" more", "More", " less", " most"], {0, 1}),
    ("the word 'the'", [" the", "The", " them", " a"], {0, 1}),
    ("the word the", [" the", "The", " them", " a"], {0, 1}),
    ("the word in", [" in", " inside", " cat"], {0}),
    ("`self`", ["self", ".", "self_x", " myself"], {0}),
    ("“return”", [" return", "return", " returns"], {0, 1}),
    ('" more" and " less"', [" more", " less", " most"], {0, 1}),
    ("words like within, below", [" within", " below", " above"], {0, 1}),
    ("names such as 'foo' and 'bar'", ["foo", " bar", " baz"], {0, 1}),
    ("forms of the word start", [" start", " starts", " started", " starting", " stop"], {0, 1, 2, 3}),
    ("words about depending on something", [" depends", "Dependency", " on", " the"], {0, 1}),
    # families by their everyday names and plurals
    ("numbers", ["x", " =", " ", "4", "2"], {3, 4}),
    ("digits", ["a", "1", "b"], {1}),
    ("years", [" in", *Y, ",", " ", "4", "2"], {2, 3, 4, 5}),
    ("Python keywords", ["def", " f", "(", "):", " return", " x"], {0, 4}),
    ("built-in functions", [" len", "(", "x", ")", " foo"], {0}),
    ("operators", [" x", " +", " y", " ==", " z"], {1, 3}),
    ("closing brackets", ["f", "(", "x", ")", "]"], {3, 4}),
    ("opening parentheses", ["f", "(", "x", ")", " ["], {1, 4}),
    ("punctuation marks", [" a", ",", " b", ".", " c"], {1, 3}),
    ("commas", [" a", ",", " b", ".", " ,"], {1, 4}),
    ("periods at the end of sentences", [" word", ".", " next"], {1}),
    ("semicolons", [";", " ;", " :"], {0, 1}),
    ("equals signs", [" =", "==", "=====", " x"], {0, 1, 2}),
    ("line breaks", ["x", "\n", "y"], {1}),
    ("newlines and indentation", ["x", "\n", "    ", "y"], {1, 2}),
    ("capitalised words", [" The", " cat", " Python", "\n", "x"], {0, 2}),
    ("words starting with a capital letter", [" The", " cat", " Python"], {0, 2}),
    ("word pieces that continue a word", [" read", "ing", " is", " fun"], {1}),
    ("prepositions", [" in", " the", " of", " cat"], {0, 2}),
    ("pronouns", [" it", " is", " they"], {0, 2}),
    ("attribute names after a dot", ["self", ".", "name", " x"], {2}),
    ("keyword arguments", ["f", "(", "key", "=", "1", ")"], {2}),
    ("the first word of each line", ["def", " f", "\n", "    ", "return", " x"], {0, 4}),
    # places, and their negation
    ("text inside strings", ["x", " =", ' "', "hello", " world", '"'], {3, 4}),
    ("comments", ["x", " #", " note", " here", "\n", "y"], {1, 2, 3}),
    ("Python keywords, not in comments", ["if", " x", ":", " #", " if", "\n"], {0}),
    ("words inside parentheses", ["f", "(", "x", ",", " y", ")", " z"], {2, 4}),
    # neighbours
    ('the name right after "def"', ["def", " foo", "(", "x", ")"], {1}),
    ("the token after import", ["import", " os", "\n", "x"], {1}),
    ("whatever follows 'import'", ["import", " sys", "\n", "x"], {1}),
    ('"x" after "("', ["(", "x", " x", "x"], {1}),
    ("'and' between two names", [" a", " and", " b", ",", " and", "\n"], {1}),
    # symbols written without quotes
    ("the arrow ->", ["def", " f", "()", " ->", " int"], {3}),
    ("the :: token", ["a", "::", "b", ":"], {1}),
    ("[[ in wiki links", [" [[", "x", "]]", " ["], {0}),
    # exclusion
    ("numbers, but not years", [*Y, " ", "4", ",", " ", "2"], {6, 9}),
    # places the reader does not know keep what they name; lists after a colon; small words
    ("'inter' in Tkinter", ["Tk", "inter", " inter", " x"], {1, 2}),
    ("notes to the reader: Note, notice", ["Note", " notice", " cat"], {0, 1}),
    ("small function words", [" the", " cat", " of", " is", " run"], {0, 2, 3}),
    ("words meaning near: close, beside", [" close", " beside", " far"], {0, 1}),
    # a neighbour named only in words the reader cannot find by rule does not silence the target
    ("the dot after a module name", ["os", ".", "path", " x", "."], {1, 4}),
]


@pytest.mark.parametrize(("explanation", "tokens", "lit"), CASES, ids=[c[0] for c in CASES])
def test_the_reader_reads_person_style_explanations(explanation, tokens, lit):
    [predicted] = BaselineSimulator().simulate(explanation, [Excerpt(0, tuple(range(len(tokens))), tuple(tokens))])
    assert {i for i, v in enumerate(predicted) if v > 0} == lit, list(zip(tokens, predicted, strict=True))
    assert all(0.0 <= v <= 10.0 for v in predicted)


def test_the_case_table_is_large_and_differently_worded():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_strength_in_words_and_any_case():
    tokens = (" more", " less", " most", "More")
    [predicted] = BaselineSimulator().simulate("mostly 'more', also 'less'", [Excerpt(0, (0, 1, 2, 3), tokens)])
    assert predicted[0] > predicted[1] > 0 and predicted[2] == 0 and predicted[3] > predicted[1]
    clauses = read_explanation("mostly 'more', also 'less'").clauses
    assert [c.level for c in clauses] == [FULL, ALSO]
    [forms] = BaselineSimulator().simulate('"return" in any case or spacing',
                                           [Excerpt(0, (0, 1, 2, 3), ("return", " Return", "RETURN", " x"))])
    assert forms == [10.0, 10.0, 10.0, 0.0]


def test_listed_examples_count_more_than_the_rest_of_their_family():
    tokens = (" in", " by", " of", " cat")
    [predicted] = BaselineSimulator().simulate("prepositions like in and by", [Excerpt(0, (0, 1, 2, 3), tokens)])
    assert predicted[0] == predicted[1] > predicted[2] > predicted[3] == 0


def test_the_negative_side_predicts_the_named_tokens_lowest():
    tokens = (" a", ",", " b", ".", ",")
    [predicted] = BaselineSimulator().simulate("below zero on commas", [Excerpt(0, (0, 1, 2, 3, 4), tokens)])
    assert predicted[1] == predicted[4] < min(predicted[0], predicted[2], predicted[3])
    assert all(0.0 <= v <= 10.0 for v in predicted)
    [both] = BaselineSimulator().simulate('the word "a"; below zero on commas', [Excerpt(0, (0, 1, 2, 3, 4), tokens)])
    assert both[0] > both[2] > both[1]


def test_the_old_statistics_format_still_reads_with_its_levels():
    text = 'fires on " more" (9.4), "more" (9.3), " less" (4.2); " x" after "(" (7); any token after "def" (5)'
    tokens = (" more", "More", " less", "(", " x", " x", "def", " f")
    [predicted] = BaselineSimulator().simulate(text, [Excerpt(0, tuple(range(8)), tokens)])
    assert predicted == pytest.approx([9.4, 9.4 * 0.8, 4.2, 0.0, 7.0, 0.0, 0.0, 5.0])  # loose: the first listed


def test_the_simulator_reads_nothing_of_the_neuron_but_the_explanation_and_the_tokens():
    """The predictions depend on the explanation and the tokens only: the same tokens under other ids give the same
    values, and no module of the reader can reach a cache (core.store) or activations."""
    tokens = ("def", " f", "(", "x", ")")
    simulator = BaselineSimulator()
    first = simulator.simulate("closing brackets", [Excerpt(0, (1, 2, 3, 4, 5), tokens)])
    second = simulator.simulate("closing brackets", [Excerpt(99, (9, 9, 9, 9, 9), tokens)])
    assert first == second
    root = Path(__file__).resolve().parents[1] / "core"
    for module in ("offline/reader.py", "offline/view.py", "offline/families.py"):
        tree = ast.parse((root / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {"core.store", "core.explain", "core.score", "duckdb"} & imported, module
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not {"activations", "max_activation", "neuron_excerpts"} & names, module

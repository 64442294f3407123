"""core.baseline: the statistics explanations the offline explainer writes, and the reader that simulates them and
free text."""

from __future__ import annotations

import pytest

from core import prompts
from core.baseline import (
    VARIANTS,
    BaselineSimulator,
    Variant,
    format_level,
    neuron_statistics,
    parse_explanation,
    predict_tokens,
    reference_explanation,
    stem,
    write_candidates,
    write_explanation,
)
from core.types import Excerpt, ExcerptKind, NeuronExcerpt, NeuronId, Split


def _record(tokens: list[str], activations: list[float], rank: int = 0) -> NeuronExcerpt:
    return NeuronExcerpt(NeuronId(0, 0), Excerpt(rank, tuple(range(len(tokens))), tuple(tokens)), ExcerptKind.TOP,
                         rank, Split.EXPLAIN, tuple(activations))


# --- reading ----------------------------------------------------------------------------------------------


def test_baseline_reads_quoted_tokens_levels_contexts_and_after_rules():
    parsed = parse_explanation('fires on "return" (10), " yield" (6); " x" after "(" (7); any token after "def" (5)')
    assert parsed.tokens == {"return": 10.0, " yield": 6.0}
    assert parsed.contexts == {(" x", "("): 7.0}
    assert parsed.after == {"def": 5.0}
    tokens = ["return", " yield", "(", " x", " x", "def", " f", "Return"]
    assert predict_tokens(parsed, tokens) == [10.0, 6.0, 0.0, 7.0, 0.0, 0.0, 5.0, 8.0]  # "Return": loose match


def test_baseline_reads_escaped_and_single_quoted_tokens_but_not_apostrophes():
    parsed = parse_explanation("""the tokens "\\n", '(' and 'if' (4); it's the word's end""")
    assert parsed.tokens == {"\n": 10.0, "(": 10.0, "if": 4.0}
    assert "word" not in parsed.tokens and "s the word" not in parsed.tokens


def test_baseline_reads_free_text_by_stem_and_case():
    parsed = parse_explanation("words about depending on something")
    assert stem("depending") in parsed.stems
    assert "word" not in parsed.stems and "something" not in parsed.stems
    predicted = predict_tokens(parsed, [" depends", "Dependency", " on", " the", " Depend", " dep"])
    assert predicted == [10.0, 10.0, 0.0, 0.0, 10.0, 0.0]


def test_baseline_reads_symbol_and_class_words():
    parsed = parse_explanation("closing parentheses and numbers")
    assert predict_tokens(parsed, [")", " (", "x", " 42", "3.5", "a1"]) == [10.0, 10.0, 0.0, 10.0, 10.0, 0.0]


def test_baseline_reads_words_a_text_names_even_function_words():
    parsed = parse_explanation("the word that, and words meaning inside, such as within or below")
    tokens = [" that", " within", " below", " the", " with", " inside"]
    assert predict_tokens(parsed, tokens) == [10.0, 10.0, 10.0, 0.0, 0.0, 10.0]


def test_baseline_reads_symbols_named_or_written():
    parsed = parse_explanation("lines of equals signs or dashes, and the >>> prompt")
    tokens = ["========", " --", "=-", "a=", " >>>", ">>", " prompt"]
    assert predict_tokens(parsed, tokens) == [10.0, 10.0, 10.0, 0.0, 8.0, 0.0, 10.0]


def test_baseline_simulator_never_fails_and_predicts_zero_for_nothing_named():
    simulator = BaselineSimulator()
    assert simulator.simulate("the of and", [Excerpt(0, (1, 2), ("a", "b"))]) == [[0.0, 0.0]]




# --- writing ------------------------------------------------------------------------------------------------------


EXCERPTS = [
    _record(["def", " f", "(", "x", "):", "\n", "    ", "return", " x"], [0, 2, 0, 1, -1, 0, 0, 10, 4], 0),
    _record(["if", " y", ":", " return", " y", ",", " z"], [0, 0, -1, 6, 2, -2, 0], 2),
    _record(["return", "(", "x", ")", ",", " a"], [8, 0, 3, 0, -2, 0], 4),
]


def test_statistics_are_mean_levels_against_the_neuron_max():
    stats = neuron_statistics(EXCERPTS)
    by_token = {s.token: s for s in stats.unigrams}
    assert by_token["return"].mean_level == pytest.approx(9.0) and by_token["return"].count == 2
    assert by_token["return"].high == 2
    assert by_token[","].mean_level == pytest.approx(-2.0)
    assert stats.unigrams[0].token == "return"  # weight: count x |level|
    assert stats.contexts[("x", "(")] == (2, pytest.approx(2.0))


def test_written_explanations_parse_back_to_what_was_measured():
    stats = neuron_statistics(EXCERPTS)
    text = write_explanation(stats, Variant("t", 10, contexts=3))
    assert text.startswith('fires on "return" (9), " return" (6), " x" (4)')
    assert 'below zero on "," (-2)' in text
    parsed = parse_explanation(text)
    for stat in stats.unigrams[:10]:
        if abs(stat.mean_level) >= 0.05:
            assert parsed.tokens[stat.token] == pytest.approx(float(format_level(stat.mean_level)))
    assert not parsed.stems and not parsed.symbols  # nothing but the listed items is read


def test_explanations_respect_the_length_cap_and_variants_differ():
    stats = neuron_statistics(EXCERPTS * 20)
    assert len(write_explanation(stats, Variant("short", 60, contexts=8), max_chars=60)) <= 60
    texts = write_candidates(EXCERPTS)
    assert len(texts) == len(set(texts)) and 1 < len(texts) <= len(VARIANTS)
    assert write_explanation(stats, Variant("plain", 5, plain=True)).startswith('fires on "return" (10)')


def test_reference_lists_the_most_frequent_high_tokens():
    assert reference_explanation(EXCERPTS) == 'the tokens "return", " return"'
    assert parse_explanation(reference_explanation(EXCERPTS)).tokens == {"return": 10.0, " return": 10.0}
    quiet = [_record(["a", "b"], [0, 0])]
    assert reference_explanation(quiet) is None
    assert format_level(-0.04) == "0" and format_level(7.25) == "7.2" and format_level(12) == "10"
    assert prompts.BASELINE_VERSION == "baseline/1"

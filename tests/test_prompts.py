"""Golden strings of every prompt in core.prompts: a changed wording must be deliberate (and bump its version)."""

from __future__ import annotations

from core import prompts
from core.prompts import ExampleExcerpt


def test_versions_are_named_per_family():
    assert prompts.EXPLAIN_ACTIVATIONS_VERSION == "explain-activations/2"
    assert prompts.EXPLAIN_TOKENS_VERSION == "explain-tokens/2"
    assert prompts.BASELINE_VERSION == "baseline/2"
    assert prompts.SIMULATE_ALL_VERSION == "simulate-all/1"
    assert prompts.SIMULATE_CHAT_VERSION == "simulate-chat/1"


def test_activation_records_repeat_nonzero_lines_of_sparse_excerpts():
    sparse = ExampleExcerpt((*"abcdefghij", "\n"), (0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0))
    dense = ExampleExcerpt(("x", "\ty"), (3, 10))
    assert prompts.format_activation_records([sparse, dense]) == (
        "<start>\na\t0\nb\t0\nc\t0\nd\t0\ne\t0\nf\t0\ng\t0\nh\t0\ni\t0\nj\t7\n\\n\t0\n<end>\n"
        "Non-zero again:\nj\t7\n"
        "<start>\nx\t3\n\\ty\t10\n<end>"
    )


def test_activation_explainer_messages_golden():
    messages = prompts.explain_activations_messages([ExampleExcerpt(("a", " b", "\n"), (0, 10, 3))])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == (
        "You are studying a single neuron inside a language model. The neuron responds to some particular pattern in "
        "text. You will see short excerpts of text, one token per line. Each token is followed by a tab and the "
        "neuron's activation on that token, from 0 (silent) to 10 (its strongest response). An excerpt starts with "
        "<start> and ends with <end>. When only a few tokens of an excerpt are non-zero, those lines are listed once "
        "more after the excerpt. Work out what the high activations have in common, including the words just before "
        "them, and answer with one short phrase that a teacher could read aloud to a class and that would let someone "
        "predict the activations of new text, such as \"the word 'ME'\" or \"numbers in a list\": under 100 "
        'characters, no activation numbers, at most five quoted tokens. Begin your answer with "the main thing this '
        'neuron does is find".'
    )
    assert messages[1]["content"] == (
        "Neuron 1\nActivations:\n<start>\nThe\t0\n meeting\t0\n moved\t0\n to\t0\n March\t10\n 3\t2\n,\t0\n 2021\t0\n"
        ".\t0\n<end>\n<start>\nShe\t0\n was\t0\n born\t0\n in\t0\n early\t0\n July\t9\n in\t0\n Ohio\t0\n<end>\n"
        "Non-zero again:\n July\t9\nExplain what neuron 1 responds to."
    )
    assert messages[2]["content"] == "the main thing this neuron does is find names of months, mostly inside dates."
    assert messages[4]["content"] == (
        "the main thing this neuron does is find closing parentheses that end a function call in code."
    )
    assert messages[5]["content"] == (
        "Neuron 3\nActivations:\n<start>\na\t0\n b\t10\n\\n\t3\n<end>\nExplain what neuron 3 responds to."
    )


def test_token_space_prompt_golden():
    assert prompts.explain_tokens_prompt(["depend", "depends", "rely"]) == (
        "Each list below holds the words that one neuron of a language model responds to most. Name what the words "
        "have in common in a short phrase a teacher could read aloud.\n\n"
        "Words: apples, bananas, oranges, grapes, cherries\nCommon theme: fruits\n\n"
        "Words: Monday, Tuesday, Friday, Sunday, weekend\nCommon theme: days of the week\n\n"
        "Words: doctor, nurse, hospital, patient, surgery\nCommon theme: healthcare\n\n"
        "Words: happy, joyful, cheerful, glad, smiling\nCommon theme: happiness and joy\n\n"
        "Words: import, from, module, package, load\nCommon theme: importing modules\n\n"
        "Words: depend, depends, rely\nCommon theme:"
    )


def test_token_space_result_golden():
    assert prompts.EXPLAIN_TOKENS_RESULT.format(theme="days", tokens='" Monday", "Friday"') == (
        'days, like " Monday", "Friday"'
    )


def test_old_token_table_format_golden():
    """The token table of baseline/1, now a reference row of bench/quality.py (it breaks the readability rule)."""
    item = prompts.BASELINE_TOKEN.format(token=prompts.quote_token(' "x'), level=7)
    context = prompts.BASELINE_CONTEXT.format(token=prompts.quote_token("y"), previous=prompts.quote_token("\n"),
                                              level=4)
    after = prompts.BASELINE_AFTER.format(previous=prompts.quote_token("def"), level=6)
    negative = prompts.BASELINE_NEGATIVE.format(items=prompts.BASELINE_TOKEN.format(token='","', level="-1.5"))
    text = "; ".join([prompts.BASELINE_TEMPLATE.format(items=item), negative, context, after])
    assert text == 'fires on " \\"x" (7); below zero on "," (-1.5); "y" after "\\n" (4); any token after "def" (6)'


def test_all_at_once_prompt_golden_and_split_at_the_tab():
    assert prompts.simulate_all_prompt("names of months", ["In", " May"]) == (
        "We are predicting how strongly neurons in a language model respond to each token of a text. For each "
        "neuron we have a description of what it responds to. Each token of the text is on its own line, followed "
        "by a tab and the neuron's activation on it, from 0 (none) to 10 (strongest).\n\n"
        "Neuron 1\nDescription: names of months, mostly inside dates\n<start>\nThe\t0\n meeting\t0\n moved\t0\n"
        " to\t0\n March\t10\n 3\t2\n,\t0\n 2021\t0\n.\t0\n<end>\n\n"
        "Neuron 2\nDescription: closing parentheses that end a function call in code\n<start>\n    \t0\nreturn\t0\n"
        " len\t0\n(\t0\nitems\t0\n)\t8\n\\n\t1\n<end>\n\n"
        "Neuron 3\nDescription: names of months\n<start>\nIn\tunknown\n May\tunknown\n<end>"
    )
    assert prompts.simulate_all_line_parts(" May") == (" May\t", "unknown\n")
    assert prompts.simulate_all_prefix("x").endswith("Neuron 3\nDescription: x\n<start>\n")


def test_chat_simulator_prompts_golden():
    system = (
        "You predict how strongly one neuron of a language model responds to each token of a text, given a "
        "description of what the neuron responds to. Predictions are whole numbers from 0 (no response) to 10 "
        "(strongest response). Most tokens of most texts get 0."
    )
    lines = prompts.simulate_chat_messages("x", ["a", " b"], json_answer=False)
    assert lines == [
        {"role": "system", "content": system},
        {"role": "user", "content": "Neuron description: x\n\nText, one numbered token per line:\n1\ta\n2\t b\n\n"
                                    "Answer with one line per token, in the same order: its number, a tab, and your "
                                    "prediction. Example answer:\n1\t0\n2\t7\nWrite nothing else."},
    ]
    answer = prompts.simulate_chat_messages("x", ["a", " b"], json_answer=True)
    assert answer[1]["content"] == (
        "Neuron description: x\n\nText, one numbered token per line:\n1\ta\n2\t b\n\n"
        'Answer with a JSON object {"activations": [...]} holding one entry per token, in the same order, each '
        '{"token": the token text, "activation": your prediction}. The list must have exactly 2 entries.'
    )


def test_show_token_escapes_line_breaks_and_tabs():
    assert prompts.show_token("a\nb\tc\\") == "a\\nb\\tc\\\\"
    assert prompts.quote_token(' "q"') == '" \\"q\\""'

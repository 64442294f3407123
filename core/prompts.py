"""Every prompt text of the explain and simulate stages, as named constants, and the pure functions that fill them.

Nothing here calls a model. Each prompt family has a version string; the explain stage stores the version of the
prompt that produced (or scored) an explanation with it, so a changed wording never mixes with old results.
Changing any constant below means bumping its family's version (the golden-string tests in tests/test_prompts.py
fail until the expected strings are updated as well).

Families
- activation explainer (chat): tokens with their activations on a 0-10 scale, few-shot, forced prefix;
- token-space explainer (plain-text completion): name what a list of tokens and their contexts share;
- all-at-once simulator (one prompt per excerpt, read the next-token distribution over "0".."10");
- chat simulator (numbered token lines; logprobs when the server returns them, else a JSON answer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

# --- shared formatting --------------------------------------------------------------------------------------------

SCALE_MAX = 10
"""Top of the normalized scale: a neuron's strongest activation seen in the records is 10."""

SPARSE_SHARE = 0.2
"""When fewer than this share of an excerpt's tokens are non-zero, its non-zero lines are listed again."""


def show_token(token: str) -> str:
    """A token as one line of a prompt: newlines and tabs written as the escapes \\n and \\t."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def quote_token(token: str) -> str:
    """A token in double quotes, JSON-escaped, so spaces at its edges stay visible ("\\" and '"' escaped)."""
    return json.dumps(token, ensure_ascii=False)


QUOTED = re.compile(
    r'"(?:[^"\\\n]|\\.)*"'  # "double", JSON-escaped as quote_token writes it
    r"|(?<![\w'])'[^'\n]{1,40}'(?![\w'])"  # 'single' (not an apostrophe: "it's the word's end")
    r"|[“‘][^”’\n]{1,40}[”’]"  # “curly” and ‘curly’
    r"|`[^`\n]{1,40}`"  # `backticks`
)
"""A quoted token in an explanation, in any quote style people write."""


def unquote(quoted: str) -> str:
    """The token inside a match of QUOTED (double quotes are read as JSON, so "\\n" is a line break)."""
    if quoted.startswith('"'):
        try:
            return str(json.loads(quoted))
        except ValueError:
            return quoted[1:-1]
    return quoted[1:-1]


@dataclass(frozen=True)
class ExampleExcerpt:
    """A few-shot excerpt: tokens and their activations already on the 0-10 scale."""

    tokens: tuple[str, ...]
    normalized_activations: tuple[int, ...]
    """One integer 0-10 per token."""


@dataclass(frozen=True)
class ExampleNeuron:
    """A made-up neuron used as a worked example in a prompt."""

    excerpts: tuple[ExampleExcerpt, ...]
    explanation: str
    """What the neuron responds to, as the answer should read (without the forced prefix)."""


def _excerpt(text: Sequence[tuple[str, int]]) -> ExampleExcerpt:
    return ExampleExcerpt(tuple(t for t, _ in text), tuple(a for _, a in text))


# --- activation explainer (chat) ----------------------------------------------------------------------------------

EXPLAIN_ACTIVATIONS_VERSION = "explain-activations/2"

EXPLAIN_ACTIVATIONS_SYSTEM = (
    "You are studying a single neuron inside a language model. The neuron responds to some particular pattern in "
    "text. You will see short excerpts of text, one token per line. Each token is followed by a tab and the "
    "neuron's activation on that token, from 0 (silent) to 10 (its strongest response). An excerpt starts with "
    "<start> and ends with <end>. When only a few tokens of an excerpt are non-zero, those lines are listed once "
    "more after the excerpt. Work out what the high activations have in common, including the words just before "
    "them, and answer with one short phrase that a teacher could read aloud to a class and that would let someone "
    "predict the activations of new text, such as \"the word 'ME'\" or \"numbers in a list\": under 100 "
    "characters, no activation numbers, at most five quoted tokens. Begin your answer with \"{prefix}\"."
)
"""System message; `{prefix}` is EXPLAIN_ACTIVATIONS_PREFIX."""

EXPLAIN_ACTIVATIONS_PREFIX = "the main thing this neuron does is find"
"""Every answer starts with these words (as in OpenAI's explainer); they are removed before storing."""

EXPLAIN_ACTIVATIONS_USER = "Neuron {index}\nActivations:\n{records}\nExplain what neuron {index} responds to."
"""One user turn: the neuron's excerpts formatted by `format_activation_records`."""

EXPLAIN_ACTIVATIONS_FEW_SHOT: tuple[ExampleNeuron, ...] = (
    ExampleNeuron(
        excerpts=(
            _excerpt([("The", 0), (" meeting", 0), (" moved", 0), (" to", 0), (" March", 10), (" 3", 2), (",", 0),
                      (" 2021", 0), (".", 0)]),
            _excerpt([("She", 0), (" was", 0), (" born", 0), (" in", 0), (" early", 0), (" July", 9), (" in", 0),
                      (" Ohio", 0)]),
        ),
        explanation="names of months, mostly inside dates",
    ),
    ExampleNeuron(
        excerpts=(
            _excerpt([("    ", 0), ("return", 0), (" len", 0), ("(", 0), ("items", 0), (")", 8), ("\n", 1)]),
            _excerpt([("print", 0), ("(", 0), ("value", 0), (",", 0), (" end", 0), ("=''", 0), (")", 7)]),
        ),
        explanation="closing parentheses that end a function call in code",
    ),
)
"""Worked examples shown before the real neuron."""


def format_activation_records(excerpts: Sequence[ExampleExcerpt]) -> str:
    """Excerpts as <start>/token<TAB>activation/<end> blocks; sparse excerpts list their non-zero lines again."""
    blocks = []
    for excerpt in excerpts:
        lines = [f"{show_token(t)}\t{a}" for t, a in zip(excerpt.tokens, excerpt.normalized_activations, strict=True)]
        block = ["<start>", *lines, "<end>"]
        nonzero = [line for line, a in zip(lines, excerpt.normalized_activations, strict=True) if a > 0]
        if nonzero and len(nonzero) < SPARSE_SHARE * len(lines):
            block += ["Non-zero again:", *nonzero]
        blocks.append("\n".join(block))
    return "\n".join(blocks)


def explain_activations_messages(excerpts: Sequence[ExampleExcerpt]) -> list[dict[str, str]]:
    """Chat messages asking for an explanation of one neuron from its excerpts (already on the 0-10 scale)."""
    messages = [{"role": "system", "content": EXPLAIN_ACTIVATIONS_SYSTEM.format(prefix=EXPLAIN_ACTIVATIONS_PREFIX)}]
    for index, example in enumerate(EXPLAIN_ACTIVATIONS_FEW_SHOT, start=1):
        records = format_activation_records(example.excerpts)
        messages.append({"role": "user", "content": EXPLAIN_ACTIVATIONS_USER.format(index=index, records=records)})
        messages.append({"role": "assistant", "content": f"{EXPLAIN_ACTIVATIONS_PREFIX} {example.explanation}."})
    index = len(EXPLAIN_ACTIVATIONS_FEW_SHOT) + 1
    records = format_activation_records(excerpts)
    messages.append({"role": "user", "content": EXPLAIN_ACTIVATIONS_USER.format(index=index, records=records)})
    return messages


# --- token-space explainer (plain-text completion, works with small models) ----------------------------------------

EXPLAIN_TOKENS_VERSION = "explain-tokens/2"

EXPLAIN_TOKENS_HEAD = (
    "Each list below holds the words that one neuron of a language model responds to most. "
    "Name what the words have in common in a short phrase a teacher could read aloud.\n\n"
)
"""Opening line of the token-space prompt."""

EXPLAIN_TOKENS_EXAMPLE = "Words: {words}\nCommon theme:{theme}"
"""One example; the target leaves `{theme}` empty so the model completes it."""

EXPLAIN_TOKENS_FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("apples, bananas, oranges, grapes, cherries", "fruits"),
    ("Monday, Tuesday, Friday, Sunday, weekend", "days of the week"),
    ("doctor, nurse, hospital, patient, surgery", "healthcare"),
    ("happy, joyful, cheerful, glad, smiling", "happiness and joy"),
    ("import, from, module, package, load", "importing modules"),
)
"""(words, theme) pairs the small model imitates."""

EXPLAIN_TOKENS_STOP = ("\n",)
"""The answer ends at the end of its line."""

EXPLAIN_TOKENS_RESULT = "{theme}, like {tokens}"
"""The stored explanation: the theme the model named, then a few of the words it was named from, quoted (so a
reader that cannot relate a theme to words still has them)."""


def explain_tokens_prompt(words: Sequence[str]) -> str:
    """Plain-text few-shot prompt naming the theme of `words` (tokens stripped of edge spaces, most important
    first)."""
    examples = [EXPLAIN_TOKENS_EXAMPLE.format(words=w, theme=f" {t}") for w, t in EXPLAIN_TOKENS_FEW_SHOT]
    target = EXPLAIN_TOKENS_EXAMPLE.format(words=", ".join(words), theme="")
    return EXPLAIN_TOKENS_HEAD + "\n\n".join([*examples, target])


# --- offline default (no language model) ---------------------------------------------------------------------------

BASELINE_VERSION = "baseline/2"
"""Version of the offline explainer's phrases and the offline reader (core.offline). baseline/1 wrote the token
table below, which is now only a reference row of bench/quality.py (it breaks the readability rule)."""

# the old token table (baseline/1): kept so bench/quality.py can measure it, and old caches still read

BASELINE_TOKEN = "{token} ({level})"
"""A listed token: its quoted text and its typical level (activation / neuron max x 10; negative below zero)."""

BASELINE_CONTEXT = "{token} after {previous} ({level})"
"""A token that fires after a particular token (a bigram), with its level."""

BASELINE_AFTER = "any token after {previous} ({level})"
"""Every token right after a particular token, with its level."""

BASELINE_TEMPLATE = "fires on {items}"
"""The tokens with positive levels, joined by ", "; the parts of an explanation are joined by "; "."""

BASELINE_NEGATIVE = "below zero on {items}"
"""The tokens whose typical activation is negative (negative levels)."""


# --- all-at-once simulator (one prompt per excerpt) ---------------------------------------------------------------

SIMULATE_ALL_VERSION = "simulate-all/1"

SIMULATE_ALL_HEAD = (
    "We are predicting how strongly neurons in a language model respond to each token of a text. For each neuron "
    "we have a description of what it responds to. Each token of the text is on its own line, followed by a tab "
    "and the neuron's activation on it, from 0 (none) to 10 (strongest).\n\n"
)
"""Opening paragraph of the all-at-once prompt."""

SIMULATE_ALL_NEURON = "Neuron {index}\nDescription: {explanation}\n<start>\n"
"""Heading of one neuron's text; the token lines follow, then SIMULATE_ALL_END."""

SIMULATE_ALL_LINE = "{token}\t{value}\n"
"""One token line; in the target the value is SIMULATE_ALL_UNKNOWN."""

SIMULATE_ALL_UNKNOWN = "unknown"
"""Placeholder after each target token: the prediction is the distribution over the digits just before it."""

SIMULATE_ALL_END = "<end>\n\n"

SIMULATE_ALL_FEW_SHOT: tuple[ExampleNeuron, ...] = (EXPLAIN_ACTIVATIONS_FEW_SHOT[0], EXPLAIN_ACTIVATIONS_FEW_SHOT[1])
"""Worked examples shown before the target (the first excerpt of each)."""


def simulate_all_prefix(explanation: str) -> str:
    """Everything before the first target token line: head, worked examples, the target's description."""
    parts = [SIMULATE_ALL_HEAD]
    for index, example in enumerate(SIMULATE_ALL_FEW_SHOT, start=1):
        excerpt = example.excerpts[0]
        parts.append(SIMULATE_ALL_NEURON.format(index=index, explanation=example.explanation))
        parts += [SIMULATE_ALL_LINE.format(token=show_token(t), value=a)
                  for t, a in zip(excerpt.tokens, excerpt.normalized_activations, strict=True)]
        parts.append(SIMULATE_ALL_END)
    parts.append(SIMULATE_ALL_NEURON.format(index=len(SIMULATE_ALL_FEW_SHOT) + 1, explanation=explanation))
    return "".join(parts)


def simulate_all_line_parts(token: str) -> tuple[str, str]:
    """One target line split where the prediction is read: (text up to and including the tab, the rest)."""
    line = SIMULATE_ALL_LINE.format(token=show_token(token), value=SIMULATE_ALL_UNKNOWN)
    cut = line.index("\t") + 1
    return line[:cut], line[cut:]


def simulate_all_prompt(explanation: str, tokens: Sequence[str]) -> str:
    """The whole all-at-once prompt for one excerpt (for completions endpoints with echo)."""
    lines = "".join(SIMULATE_ALL_LINE.format(token=show_token(t), value=SIMULATE_ALL_UNKNOWN) for t in tokens)
    return simulate_all_prefix(explanation) + lines + SIMULATE_ALL_END.rstrip("\n")


# --- chat simulator -----------------------------------------------------------------------------------------------

SIMULATE_CHAT_VERSION = "simulate-chat/1"

SIMULATE_CHAT_SYSTEM = (
    "You predict how strongly one neuron of a language model responds to each token of a text, given a "
    "description of what the neuron responds to. Predictions are whole numbers from 0 (no response) to 10 "
    "(strongest response). Most tokens of most texts get 0."
)

SIMULATE_CHAT_LINES = (
    "Neuron description: {explanation}\n\nText, one numbered token per line:\n{lines}\n\n"
    "Answer with one line per token, in the same order: its number, a tab, and your prediction. "
    "Example answer:\n1\t0\n2\t7\nWrite nothing else."
)
"""User turn when the answer's logprobs are read (numbered lines; the number keeps tokens aligned)."""

SIMULATE_CHAT_JSON = (
    "Neuron description: {explanation}\n\nText, one numbered token per line:\n{lines}\n\n"
    'Answer with a JSON object {{"activations": [...]}} holding one entry per token, in the same order, each '
    '{{"token": the token text, "activation": your prediction}}. The list must have exactly {count} entries.'
)
"""User turn when the server returns no logprobs: a JSON answer whose tokens are checked against the text."""


def numbered_token_lines(tokens: Sequence[str]) -> str:
    """Tokens as "N<TAB>token" lines, numbered from 1."""
    return "\n".join(f"{i}\t{show_token(t)}" for i, t in enumerate(tokens, start=1))


def simulate_chat_messages(explanation: str, tokens: Sequence[str], *, json_answer: bool) -> list[dict[str, str]]:
    """Chat messages asking for one prediction per token of one excerpt."""
    template = SIMULATE_CHAT_JSON if json_answer else SIMULATE_CHAT_LINES
    user = template.format(explanation=explanation, lines=numbered_token_lines(tokens), count=len(tokens))
    return [{"role": "system", "content": SIMULATE_CHAT_SYSTEM}, {"role": "user", "content": user}]

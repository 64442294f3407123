"""What the offline reader knows about each token of an excerpt, from the tokens alone: its text, and its place
(inside a string literal, a comment or brackets; at the start or end of a line; continuing a word).

Nothing of a neuron is read here. A view is computed once per distinct excerpt and kept (`token_view`), so that
scoring many candidate explanations on the same excerpts costs one pass over their text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

_TRIPLE = ('"""', "'''")


@dataclass(frozen=True, eq=False)
class TokenView:
    """One excerpt's tokens and where each one stands. Every array has one entry per token."""

    tokens: tuple[str, ...]
    stripped: tuple[str, ...]
    """Each token without edge whitespace."""
    folded: tuple[str, ...]
    """Stripped and case-folded: the form quoted tokens are matched loosely against."""
    word_start: np.ndarray
    """The token begins a word: letters or digits after a space, a line break or a symbol."""
    continues_word: np.ndarray
    """The token is a piece that continues the previous token's word ("ing" in "read" + "ing")."""
    in_string: np.ndarray
    """Most of the token lies inside a string literal ("...", '...', or triple-quoted)."""
    in_comment: np.ndarray
    """The token lies in a "#" comment (up to the end of its line)."""
    in_parens: np.ndarray
    """Inside round brackets opened in this excerpt."""
    in_square: np.ndarray
    in_braces: np.ndarray
    line_start: np.ndarray
    """The first token with text on its line (after the indentation)."""
    line_end: np.ndarray
    """The last token before a line break."""
    by_token: dict[str, list[int]] = field(default_factory=dict, repr=False)
    """Where each token text stands."""
    by_folded: dict[str, list[int]] = field(default_factory=dict, repr=False)
    """Where each stripped, case-folded token text stands."""
    masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Masks computed for this excerpt so far (families, and the reader's own), by name."""

    def __len__(self) -> int:
        return len(self.tokens)

    def masks_for(self, name: str, test: Callable[[str], bool]) -> np.ndarray:
        """The mask of tokens whose stripped text passes `test`, kept under `name`."""
        found = self.masks.get(name)
        if found is None:
            found = np.fromiter((test(s) for s in self.stripped), dtype=bool, count=len(self.tokens))
            self.masks[name] = found
        return found


def _scan(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Per character of `text`: inside a string literal (delimiters excluded), inside a comment."""
    inside = np.zeros(len(text), dtype=bool)
    comment = np.zeros(len(text), dtype=bool)
    state: str | None = None
    at = 0
    while at < len(text):
        ch = text[at]
        if state is None:
            triple = next((q for q in _TRIPLE if text.startswith(q, at)), None)
            if triple:
                state, at = triple, at + 3
                continue
            if ch == "#":
                end = text.find("\n", at)
                end = len(text) if end < 0 else end
                comment[at:end] = True
                at = end
                continue
            apostrophe = ch == "'" and 0 < at < len(text) - 1 and text[at - 1].isalpha() and text[at + 1].isalpha()
            if ch in "\"'" and not apostrophe:
                state = ch
            at += 1
            continue
        if len(state) == 3 and text.startswith(state, at):
            state, at = None, at + 3
            continue
        if len(state) == 1 and (ch == state or ch == "\n"):  # an unclosed one-line string ends with its line
            state, at = None, at + 1
            continue
        inside[at] = True
        if ch == "\\" and at + 1 < len(text):
            inside[at + 1] = True
            at += 1
        at += 1
    return inside, comment


def _majority(flags: np.ndarray, text: str, starts: list[int], ends: list[int]) -> np.ndarray:
    """Per token: more than half of its non-space characters are flagged."""
    result = np.zeros(len(starts), dtype=bool)
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        chars = [k for k in range(start, end) if not text[k].isspace()]
        if chars:
            result[index] = int(flags[chars].sum()) * 2 > len(chars)
    return result


def _depths(tokens: tuple[str, ...], blocked: np.ndarray) -> dict[str, np.ndarray]:
    """Per token: inside (), [] or {} opened earlier in the excerpt (brackets in strings and comments ignored)."""
    pairs = {"parens": "()", "square": "[]", "braces": "{}"}
    result = {name: np.zeros(len(tokens), dtype=bool) for name in pairs}
    depth = dict.fromkeys(pairs, 0)
    for index, token in enumerate(tokens):
        for name in pairs:
            result[name][index] = depth[name] > 0
        if blocked[index]:
            continue
        for name, brackets in pairs.items():
            opening, closing = brackets[0], brackets[1]
            for ch in token:
                if ch == opening:
                    depth[name] += 1
                elif ch == closing and depth[name] > 0:
                    depth[name] -= 1
    return result


@lru_cache(maxsize=8192)
def token_view(tokens: tuple[str, ...]) -> TokenView:
    """The view of an excerpt's tokens (kept: the same excerpt is read for many candidate explanations)."""
    text = "".join(tokens)
    starts, ends, at = [], [], 0
    for token in tokens:
        starts.append(at)
        at += len(token)
        ends.append(at)
    inside, comment = _scan(text)
    in_string = _majority(inside, text, starts, ends)
    in_comment = _majority(comment, text, starts, ends)
    stripped = tuple(t.strip() for t in tokens)
    n = len(tokens)
    word_start = np.zeros(n, dtype=bool)
    continues = np.zeros(n, dtype=bool)
    line_start = np.zeros(n, dtype=bool)
    line_end = np.zeros(n, dtype=bool)
    new_line = True  # the excerpt's first token is treated as the start of its line
    for index, token in enumerate(tokens):
        previous = tokens[index - 1] if index else ""
        alnum = token[:1].isalnum()
        word_start[index] = bool(stripped[index][:1].isalnum()) and (
            not alnum or not previous or not previous[-1:].isalnum())
        continues[index] = alnum and bool(previous) and previous[-1:].isalpha() and token[:1].isalpha()
        if stripped[index] and new_line:
            line_start[index] = True
            new_line = False
        if "\n" in token:
            new_line = True
            tail = token[token.rindex("\n") + 1 :]
            if tail.strip():  # a token holding a line break and then text starts the next line itself
                new_line = False
        if index + 1 < n and tokens[index + 1].startswith("\n") and stripped[index]:
            line_end[index] = True
    blocked = in_string | in_comment
    depths = _depths(tokens, blocked)
    folded = tuple(s.casefold() for s in stripped)
    by_token: dict[str, list[int]] = {}
    by_folded: dict[str, list[int]] = {}
    for index, (token, key) in enumerate(zip(tokens, folded, strict=True)):
        by_token.setdefault(token, []).append(index)
        by_folded.setdefault(key, []).append(index)
    return TokenView(
        tokens=tokens, stripped=stripped, folded=folded, word_start=word_start,
        continues_word=continues, in_string=in_string, in_comment=in_comment, in_parens=depths["parens"],
        in_square=depths["square"], in_braces=depths["braces"], line_start=line_start, line_end=line_end,
        by_token=by_token, by_folded=by_folded,
    )

"""The dashboard's languages: one function, `_`, marks a message for the catalog and looks it up in the session's
language; numbers shown as text follow the language's separators.

Messages are English in the code and translated in gettext catalogs under dashboard/locales/ (extracted with
`pybabel extract`, compiled .mo files committed; tests/test_i18n.py checks they are complete and current, and
README "Languages" says how to add one). Placeholders are named, `_("Neuron {neuron}", neuron=n)`, so a translation
can put them in its own order. The session's language is `st.session_state["lang"]`, set by the sidebar's switch
(bound to the URL as ?lang=tr, like the neuron); before anyone chooses, the browser's language decides. Outside a
Streamlit run (the command line, pure render tests) everything is English. Data (tokens, excerpts, explanations,
names) is never passed through `_`.
"""

from __future__ import annotations

import contextlib
import functools
import gettext
import math
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

from babel import Locale
from babel.numbers import get_decimal_symbol, get_group_symbol

LANGUAGES: dict[str, str] = {"en": "English", "tr": "Türkçe"}
"""The dashboard's languages by code (the code is what ?lang= takes), each named in itself."""

DEFAULT_LANGUAGE = "en"
"""The language of the code's messages, and of a browser whose language the dashboard does not have."""

LANGUAGE_KEY = "lang"
"""session_state key and URL parameter of the session's language."""

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
"""The catalogs: locales/messages.pot (extracted) and locales/LANG/LC_MESSAGES/messages.po and .mo."""

DOMAIN = "messages"

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

_FIELD = re.compile(r"{(\w*)[^{}]*}")

_SPEAKING: ContextVar[str | None] = ContextVar("neuron_atlas_language", default=None)


def N_(message: str) -> str:
    """Mark a message for the catalog without translating it (module-level tables: translate with `_` at use)."""
    return message


@functools.cache
def catalog(language: str) -> gettext.NullTranslations:
    """The compiled catalog of a language (English and unknown languages: the messages as they are)."""
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=str(LOCALES_DIR), languages=[language], fallback=True)


def translate(message: str, language: str, **values: object) -> str:
    """`message` in `language`, its named placeholders filled with `values` (no values: returned as looked up)."""
    text = catalog(language).gettext(message)
    return text.format(**values) if values else text


def browser_language(locale: str | None) -> str:
    """The dashboard language nearest to a browser's language tag ("tr-TR" -> "tr"); English when there is none."""
    code = (locale or "").replace("_", "-").split("-")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


@contextlib.contextmanager
def speaking(language: str) -> Iterator[None]:
    """Everything looked up inside is in `language`, in a Streamlit run or not (tests, scripts that render)."""
    token = _SPEAKING.set(language)
    try:
        yield
    finally:
        _SPEAKING.reset(token)


def language() -> str:
    """This session's language: the sidebar's choice, else the browser's language; English outside a run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if (forced := _SPEAKING.get()) is not None:
        return forced
    if get_script_run_ctx(suppress_warning=True) is None:
        return DEFAULT_LANGUAGE
    import streamlit as st

    # the switch's value; before the switch is drawn in a run (the navigation's titles), the URL it is bound to
    for chosen in (st.session_state.get(LANGUAGE_KEY), st.query_params.get(LANGUAGE_KEY)):
        if chosen in LANGUAGES:
            return str(chosen)
    return browser_language(st.context.locale)


def _(message: str, **values: object) -> str:
    """Mark `message` for the catalog and return it in the session's language, placeholders filled from `values`."""
    return translate(message, language(), **values)


def placeholders(message: str) -> set[str]:
    """The named placeholders of a message ("{neuron} of {layer:d}" -> {"neuron", "layer"}); `{{` is not one."""
    return set(_FIELD.findall(message.replace("{{", "").replace("}}", "")))


# --- numbers shown as text ------------------------------------------------------------------------------------------


@functools.cache
def _symbols(language: str) -> tuple[str, str, bool]:
    """(decimal symbol, group symbol, percent sign first) of a language, from CLDR through Babel."""
    locale = Locale.parse(language)
    pattern = locale.percent_formats[None].pattern
    return get_decimal_symbol(locale), get_group_symbol(locale), pattern.lstrip("-").startswith("%")


def number_symbols(language: str) -> tuple[str, str]:
    """(decimal symbol, group symbol) of a language: (".", ",") in English, (",", ".") in Turkish."""
    decimal, group, _first = _symbols(language)
    return decimal, group


def localize_number(text: str, language: str) -> str:
    """A number formatted the Python (English) way, with the language's decimal and group symbols."""
    table = number_table(language)
    return text if table is None else text.translate(table)


@functools.cache
def number_table(language: str) -> dict[int, str] | None:
    """For str.translate: numbers formatted the Python (English) way to `language`'s symbols; None where they are
    the same. Text of numbers only: a token or a word keeps its dots and commas."""
    decimal, group, _first = _symbols(language)
    return None if (decimal, group) == (".", ",") else str.maketrans({".": decimal, ",": group})


def number_in(value: float | int, spec: str, language: str) -> str:
    """format(value, spec) with `language`'s separators; a spec ending in % puts the sign where the language does
    ("42.0%" in English, "%42,0" in Turkish)."""
    if spec.endswith("%") and isinstance(value, (int, float)) and math.isfinite(value):
        digits = format(value * 100, spec[:-1] + "f")
        body = localize_number(digits, language)
        sign, body = ("-", body[1:]) if body.startswith("-") else ("", body)
        return f"{sign}%{body}" if _symbols(language)[2] else f"{sign}{body}%"
    return localize_number(format(value, spec), language)


def number(value: float | int, spec: str = "") -> str:
    """A number as text in the session's language: `number(0.423, ".2f")` is "0.42" or "0,42"."""
    return number_in(value, spec, language())


def score(value: float | None, digits: int = 2) -> str:
    """A score as text in the session's language (core.score.format_score's digits, so scores compare across
    languages); "undefined" (translated) when there is none."""
    if value is None:
        return _("undefined")
    return number(value, f".{digits}f")


def number_columns(frame: pd.DataFrame, **digits: int) -> Styler:
    """`frame` for st.dataframe with the named number columns shown with that many decimals in the session's
    language (0,42 in Turkish); the cells stay numbers, so the columns still sort as numbers. Empty cells stay empty."""
    decimal, group = number_symbols(language())
    styler = frame.style
    for column, places in digits.items():
        if column in frame.columns:
            styler = styler.format(precision=places, decimal=decimal, thousands=group, na_rep="", subset=[column])
    return styler

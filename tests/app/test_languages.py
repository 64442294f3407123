"""The dashboard in English and Turkish (dashboard/i18n.py), run by AppTest on the small real cache: every page in
both languages shows only its language's interface text, and the language (sidebar switch, ?lang=, the browser's
language) carries across pages like the neuron.

"No English on a Turkish page" is checked word by word: the interface text of the run (titles, text, alerts, HTML
with the tokens of excerpts and the first column of token tables taken out, labels, help, placeholders, options of
the interface's own choices, table headers, chart titles) may hold no word that only the English messages use. Words
of the data (explanations, model, corpus, explainer and simulator names) and commands in `code` are data."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from functools import cache

import pytest
from babel.messages.pofile import read_po

from core import views
from core.types import NeuronId
from dashboard import i18n
from tests.app.test_pages import PAGES, figures, no_errors, opened

ALL_PAGES = ["pages/home.py", *PAGES]
NEURON = {"layer": 0, "neuron": 1}
"""Explained, scored and related in the prepared cache, so every panel of every page has something to show."""

INTERFACE_OPTIONS = {"lang", "llm_backend", "scoring_mode", "review_rating", "picker_layer", "picker_order"}
"""Widgets whose options are the interface's own words (other options are data: explanations, tokens, files)."""

WORD = re.compile(r"[A-Za-zÇĞİÖŞÜçğıöşüâîû]+")
CODE = re.compile(r"`[^`]*`")
PLACEHOLDER = re.compile(r"{[^{}]*}")
PATH = re.compile(r"\S*/\S*")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
TOKEN_SPAN = re.compile(r"<span[^>]*title=[^>]*>.*?</span>", re.S)
TOKEN_CELL = re.compile(r'<td class="k"[^>]*>.*?</td>', re.S)
TOKEN_DOT = re.compile(r"<circle[^>]*><title>.*?</title>", re.S)
"""A dot of the scatter: its hover text starts with a token."""


def words(text: str) -> set[str]:
    """Lower-case words of three letters or more of a text; code spans, placeholders, paths and the targets of
    Markdown links taken out."""
    text = PATH.sub(" ", PLACEHOLDER.sub(" ", CODE.sub(" ", LINK_TARGET.sub("] ", text))))
    return {word.casefold() for word in WORD.findall(text) if len(word) >= 3}


@cache
def vocabulary() -> tuple[frozenset[str], frozenset[str]]:
    """(words only the English messages use, words only the Turkish messages use), from the Turkish catalog."""
    with open(i18n.LOCALES_DIR / "tr" / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = read_po(handle)
    english, turkish = set(), set()
    for message in catalog:
        if message.id:
            english |= words(str(message.id))
            turkish |= words(str(message.string))
    return frozenset(english - turkish), frozenset(turkish - english)


def data_words(cache_path) -> set[str]:
    """Words of what the cache holds and pages show as it is: explanations (of the explained neurons, and those made
    on view for the neurons related to NEURON), names. Call it after the page ran (on-view ones are made then)."""
    from core.live import ON_VIEW_SOURCE

    cache = opened(cache_path)
    reader = cache.reader
    related = views.related(reader, NeuronId(NEURON["layer"], NEURON["neuron"]), 10)
    shown = [r.neuron for _kind, group in related.neurons for r in group]
    made = cache.notes.suggestions_from(ON_VIEW_SOURCE, shown).values() if shown else []
    info = views.info(reader)
    rows = views.neuron_list(reader, None, "", "score", True, 100_000).rows
    found = words(f"{info.model} {info.corpus}")
    for suggestion in made:
        found |= words(suggestion.text)
    for row in rows:
        if row.explanation is None:
            continue
        found |= words(row.explanation)
        for explanation in reader.explanations(row.neuron):
            found |= words(f"{explanation.text or ''} {explanation.explainer} {explanation.simulator} "
                           f"{explanation.model or ''} {explanation.prompt_version or ''}")
    return found


def _nodes(node) -> Iterator[object]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def interface_text(at) -> list[str]:
    """Every piece of interface text of the run, as a person would read it (see the module's docstring)."""
    found: list[str] = []
    for node in (*_nodes(at.main), *_nodes(at.sidebar)):
        kind = type(node).__name__
        if getattr(node, "key", None) == i18n.LANGUAGE_KEY:
            continue  # the switch names both languages on purpose
        for name in ("label", "help", "placeholder"):
            value = getattr(node, name, None)
            if isinstance(value, str):
                found.append(value)
        if kind == "Markdown" and str(node.value).startswith(("<svg", "<div")):
            kind = "Html"  # a chart (widgets.chart draws SVG through Markdown): read as the HTML it is
        if kind in {"Title", "Header", "Subheader", "Markdown", "Caption", "Error", "Warning", "Info", "Success"}:
            found.append(str(node.value))
        elif kind == "Html":
            markup = TOKEN_DOT.sub(" ", TOKEN_CELL.sub(" ", TOKEN_SPAN.sub(" ", str(node.value))))
            found.append(html.unescape(re.sub(r"<[^>]+>", " ", markup)))
        elif kind in {"Radio", "Selectbox", "ButtonGroup"} and getattr(node, "key", None) in INTERFACE_OPTIONS:
            found += list(node.options)
        elif kind == "Dataframe":
            config = json.loads(node.proto.columns or "{}")
            labels = {name: (value or {}).get("label") for name, value in config.items()}
            found += [labels.get(str(column)) or str(column) for column in node.value.columns]
        elif kind == "UnknownElement" and node.type in {"arrow_vega_lite_chart", "vega_lite_chart"}:
            found += list(_titles(json.loads(node.proto.spec)))
    return found


def _titles(spec: object) -> Iterator[str]:
    """The "title" values anywhere in a Vega-Lite spec (axes, legends, tooltips)."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "title" and isinstance(value, str):
                yield value
            else:
                yield from _titles(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _titles(value)


def open_page(app, page: str, **query: object):
    at = app(**NEURON, **query)
    at.run()
    if page != "pages/home.py":
        at.switch_page(page).run()
    no_errors(at)
    return at


@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_page_in_turkish_then_english_shows_only_that_language(app, app_cache, page):
    english_only, turkish_only = vocabulary()
    at = open_page(app, page, lang="tr")
    data = data_words(app_cache)
    shown = interface_text(at)
    assert len(shown) > 5
    stray = sorted({word for text in shown for word in words(text) & english_only} - data)
    assert not stray, f"English on the Turkish {page}: {stray}\n" + "\n".join(
        text for text in shown if words(text) & set(stray))
    assert any(words(text) & turkish_only for text in shown)

    at.radio(key="lang").set_value("en").run()  # the sidebar switch, on the same page
    no_errors(at)
    shown = interface_text(at)
    stray = sorted({word for text in shown for word in words(text) & turkish_only} - data)
    assert not stray, f"Turkish on the English {page}: {stray}"
    assert any(words(text) & english_only for text in shown)


def test_the_classroom_in_turkish_for_a_student_and_the_teacher(app, app_cache, monkeypatch):
    from core import classroom
    from tests.app.test_classroom_pages import PASSCODE

    monkeypatch.setenv(classroom.CLASS_URL_ENV, "http://192.0.2.10:8501")  # classroom mode, as make classroom sets it
    monkeypatch.setenv(classroom.PASSCODE_ENV, PASSCODE)
    english_only, _turkish_only = vocabulary()

    def english_in(at) -> list[str]:
        shown = interface_text(at)
        return sorted({word for text in shown for word in words(text) & english_only} - data_words(app_cache))

    at = open_page(app, "pages/classroom.py", lang="tr")
    assert at.title[0].value == "Nöron 0:1 — birlikte açıklayalım"
    assert not english_in(at), english_in(at)
    at.text_input(key="class_passcode").input(PASSCODE)
    next(b for b in at.button if b.label == "Giriş yap").click().run()
    no_errors(at)
    assert "class_share" in {b.key for b in at.button}  # the teacher's controls, in Turkish too
    assert not english_in(at), english_in(at)
    at.switch_page("pages/home.py").run()
    assert "Sınıfa katıl" in [h.value for h in at.subheader]
    assert not english_in(at), english_in(at)


def test_turkish_numbers_shown_as_text_have_a_decimal_comma(app, app_cache):
    at = open_page(app, "pages/home.py", lang="tr")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Token sayısı"] == "4.096" and metrics["Nöronlar"] == "46.080"
    at.switch_page("pages/insights.py").run()
    shown = figures(at)
    assert shown["yoğunluk"].startswith("%") and "," in shown["yoğunluk"]
    assert "," in shown["çarpıklık"] and "." not in shown["çarpıklık"]
    at.switch_page("pages/scoring.py").run()
    score = figures(at)["Puan: en güçlü ve rastgele"]
    assert re.fullmatch(r"-?\d,\d\d", score) or score == "tanımsız", score


def test_lang_in_the_url_carries_across_pages_like_the_neuron(app, app_cache):
    at = app(layer=3, neuron=42, lang="tr").run()
    assert at.radio(key="lang").value == "tr"
    for page, title in (("pages/insights.py", "Nöron 3:42 — içgörüler"),
                        ("pages/scoring.py", "Nöron 3:42 — puanlama ayrıntıları"),
                        ("pages/picker.py", "Nöron bul")):
        at.switch_page(page).run()
        no_errors(at)
        assert at.title[0].value == title
        assert at.query_params["lang"] == "tr" and at.query_params["neuron"] == "42"


def test_the_sidebar_switch_carries_across_pages_and_into_the_url(app, app_cache):
    at = app(**NEURON).run()
    assert at.radio(key="lang").value == "en" and "lang" not in at.query_params  # English is this browser's default
    # (the browser writes a switched value into the URL; AppTest does not: tests/browser/test_language.py checks it)
    at.radio(key="lang").set_value("tr").run()
    assert at.subheader[0].value == "Her katman ne kadar iyi açıklanıyor?"
    at.switch_page("pages/related.py").run()
    no_errors(at)
    assert at.title[0].value == "Nöron 0:1 — ilişkili nöronlar"
    at.radio(key="lang").set_value("en").run()
    assert at.title[0].value == "Neuron 0:1 — related neurons"
    at.switch_page("pages/insights.py").run()
    assert at.title[0].value == "Neuron 0:1 — insights"


def test_the_browser_language_is_the_first_choice(app, app_cache):
    at = app(**NEURON)
    at.context["locale"] = "tr-TR"
    at.run()
    assert at.radio(key="lang").value == "tr" and "lang" not in at.query_params  # the default stays out of the URL
    assert at.subheader[0].value == "Her katman ne kadar iyi açıklanıyor?"
    at.radio(key="lang").set_value("en").run()  # a choice other than the browser's: kept from page to page
    at.switch_page("pages/insights.py").run()
    assert at.title[0].value == "Neuron 0:1 — insights"


# --- the pure drawing functions in Turkish (no Streamlit run: i18n.speaking) ----------------------------------------


def test_heatmap_hover_and_legend_are_in_the_language_with_its_numbers():
    from dashboard import render

    row = render.HeatmapRow(["return"], [1.5], simulated=[7.25])
    with i18n.speaking("tr"):
        markup = render.heatmap_html([row], positive_scale=2.0, mode="side by side")
        legend = render.legend_html(2.5, 0.75, simulated=True)
    assert ">gerçek<" in markup and ">tahmin<" in markup
    assert "1,500 (7,5/10), tahmin 7,2/10" in html.unescape(markup)
    assert "2,5 değerine kadar aktivasyon" in legend and "-0,75 değerine kadar negatif" in legend
    assert "tokenin üzerine" in legend and "hover" not in legend
    english = render.legend_html(2.5, 0.75, simulated=True)  # outside: English again
    assert "activation up to 2.5" in english


def test_charts_have_turkish_titles_legends_and_a_decimal_comma():
    from core.types import LayerScores
    from dashboard import charts

    rows = [LayerScores(layer=0, mean_score=0.41, median_score=0.38, scored=12),
            LayerScores(layer=1, mean_score=0.22, median_score=0.2, scored=9)]
    with i18n.speaking("tr"):
        spec = charts.scores_by_layer_chart(rows).to_dict()
    text = json.dumps(spec, ensure_ascii=False)
    assert "nöron başına en iyi puan" in text and "katman" in text
    assert "ortalama" in text and "ortanca" in text and '"mean"' not in text  # the legend's values
    assert spec["config"]["locale"]["number"]["decimal"] == ","
    assert charts.scores_by_layer_chart(rows).to_dict()["config"]["locale"]["number"]["decimal"] == "."

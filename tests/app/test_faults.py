"""The dashboard when its files go wrong under an open page (tests/app/test_pages.py has the cache rebuilt, a notes
file held by another process, an old layout and a missing cache): a cache deleted, results or recording damaged, a
notes file damaged. Each is one message with what to do, never a traceback, and nothing people wrote is lost.

The tiny explained cache (tests/conftest.py) keeps these cheap; files are damaged as copies renamed into place, as a
build or a bad disk would leave them (the source caches stay intact)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from core.live import ON_VIEW_SOURCE
from core.paths import copy_cache, notes_path, results_path
from core.store import DashboardCache
from core.types import NeuronId
from dashboard.render import shown


@pytest.fixture
def tiny_app_cache(tiny_explained_cache, atlas_home, tmp_path, monkeypatch) -> Path:
    """A copy of the tiny explained cache with a suggestion people wrote in its notes, set as NEURON_ATLAS_CACHE."""
    path = tmp_path / "cache.duckdb"
    copy_cache(tiny_explained_cache, path)
    notes = DashboardCache(path)
    notes.notes.add_suggestion(NeuronId(0, 1), "cats on mats", "Ada", "person")
    notes.close()
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(path))
    return path


def messages(at) -> str:
    return "\n".join(shown(str(e.value)) for e in (*at.error, *at.warning, *at.info))


def no_traceback(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_with(path: Path, data: bytes) -> None:
    """Put new bytes at `path` the way a writer does (a new file renamed into place)."""
    tmp = path.with_name(path.name + ".swap")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_cache_deleted_under_an_open_page_says_how_to_build_it_and_comes_back(app, tiny_app_cache, tmp_path):
    at = app().run()
    no_traceback(at)
    assert {m.label for m in at.metric} >= {"Model", "Tokens"}
    saved = tmp_path / "saved"
    saved.mkdir()
    for path in (tiny_app_cache, results_path(tiny_app_cache)):
        shutil.move(path, saved / path.name)
    at.run()
    no_traceback(at)
    assert f"no cache at {tiny_app_cache}; build one with `python -m core" in messages(at)
    for path in (tiny_app_cache, results_path(tiny_app_cache)):
        shutil.move(saved / path.name, path)  # the cache comes back (a rebuild finished)
    at.run()
    no_traceback(at)
    assert not at.error and {m.label for m in at.metric} >= {"Model", "Tokens"}


@pytest.mark.parametrize("damage", ["random bytes", "cut short"])
@pytest.mark.parametrize("file", ["results", "recording"])
def test_a_damaged_file_under_an_open_page_is_one_message_with_a_way_forward(app, tiny_app_cache, file, damage):
    at = app().run()
    at.switch_page("pages/insights.py").run()
    no_traceback(at)
    notes = digest(notes_path(tiny_app_cache))
    target = results_path(tiny_app_cache) if file == "results" else tiny_app_cache
    good = target.read_bytes()
    replace_with(target, os.urandom(len(good)) if damage == "random bytes" else good[: len(good) // 3])
    at.run()
    no_traceback(at)
    said = messages(at)
    assert "cannot" in said and ("build it again" in said or "Try again" in said or "another cache" in said), said
    assert digest(notes_path(tiny_app_cache)) == notes  # nothing people wrote is touched
    replace_with(target, good)  # the file is restored (or rebuilt): the page works again
    at.run()
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.startswith("Neuron 0:0")


def test_a_damaged_notes_file_is_set_aside_kept_and_new_notes_start(app, tiny_app_cache):
    notes = notes_path(tiny_app_cache)
    damaged = b"DUCK" + os.urandom(50_000)
    replace_with(notes, damaged)
    at = app().run()
    no_traceback(at)
    said = messages(at)
    assert "notes file" in said and "cannot be read" in said and "set it aside" in said, said
    at.sidebar.button(key="notes_aside").click().run()
    no_traceback(at)
    aside = [p for p in notes.parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, byte for byte
    at.run()
    no_traceback(at)
    assert not at.error and {m.label for m in at.metric} >= {"Model", "Tokens"}
    at.switch_page("pages/scoring.py").run()
    at.text_area(key="suggest_text").input("the word 'the'")
    next(b for b in at.button if b.label == "Score it").click().run()
    no_traceback(at)
    from dashboard.state import open_cache  # the app's own handle (same process)

    kept = people_suggestions(open_cache(tiny_app_cache))
    assert [s.text for s in kept] == ["the word 'the'"]  # the new notes file holds the new suggestion


def people_suggestions(cache: DashboardCache) -> list:
    """Neuron 0:0's suggestions written by people (the explanation the offline default makes when a page first shows
    the neuron is kept in the notes too)."""
    return [s for s in cache.notes.suggestions(NeuronId(0, 0)) if s.source != ON_VIEW_SOURCE]


# --- bad input in the dashboard: one message that says what to do, and nothing kept that should not be ------------

def run_page(at, page: str, **query: str):
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    return at


@pytest.mark.parametrize(
    "query",
    [{"layer": "abc", "neuron": "xyz"}, {"layer": "1", "neuron": "99999"}, {"layer": "-1", "neuron": "3"},
     {"layer": "1;DROP TABLE x", "neuron": "<script>"}],
    ids=["not numbers", "neuron out of range", "negative layer", "sql and html"],
)
def test_a_bad_url_opens_a_valid_neuron(app, tiny_app_cache, query):
    """The tiny cache has layers 0-1 and neurons 0-47: what the URL gets wrong falls back to 0, the rest is kept."""
    at = run_page(app(), "pages/insights.py", **query)
    no_traceback(at)
    assert not at.error
    layer, neuron = at.number_input(key="layer").value, at.number_input(key="neuron").value
    assert 0 <= layer <= 1 and 0 <= neuron <= 47
    assert at.title[0].value.startswith(f"Neuron {layer}:{neuron}")


@pytest.mark.parametrize(
    ("typed", "said"),
    [("0:10-5", "not a neuron"), ("-1:3", "not a neuron"), ("2:0", "out of range"), ("1:48", "out of range")],
)
def test_a_bad_neuron_typed_in_the_picker_is_one_message(app, tiny_app_cache, typed, said):
    at = run_page(app(), "pages/picker.py")
    at.text_input(key="picker_go").input(typed)
    next(b for b in at.button if b.label == "Go").click().run()
    no_traceback(at)
    assert len(at.error) == 1 and said in at.error[0].value
    assert (at.number_input(key="layer").value, at.number_input(key="neuron").value) == (0, 0)


@pytest.mark.parametrize(
    ("text", "author", "said"),
    [("", "Ada", "Type an explanation first."), ("   \n ", "Ada", "Type an explanation first."),
     ("x" * 10_000, "Ada", "Type an explanation first.")],
    ids=["empty", "blank", "10,000 characters"],
)
def test_a_bad_suggestion_is_one_message_and_nothing_is_kept(app, tiny_app_cache, text, author, said):
    """A text past the box's 500 characters (only a client other than the browser can send one) is dropped by
    Streamlit's own check of max_chars, so the page sees nothing typed."""
    from dashboard.state import open_cache

    at = run_page(app(), "pages/scoring.py")
    at.text_area(key="suggest_text").input(text)
    at.text_input(key="suggest_author").input(author)
    next(b for b in at.button if b.label == "Score it").click().run()
    no_traceback(at)
    assert [e.value for e in at.error] == [said]
    assert people_suggestions(open_cache(tiny_app_cache)) == []


def test_a_suggestion_of_html_markdown_and_sql_is_kept_as_it_is_and_shown_as_text(app, tiny_app_cache):
    from dashboard.state import open_cache

    text = "<img src=x onerror=alert(document.cookie)> ![t](http://a.example/t.png) ;DROP TABLE suggestions--"
    at = run_page(app(), "pages/scoring.py")
    at.text_area(key="suggest_text").input(text)
    at.text_input(key="suggest_author").input("**Ada**")
    next(b for b in at.button if b.label == "Score it").click().run()
    no_traceback(at)
    assert not at.error, [e.value for e in at.error]
    kept = people_suggestions(open_cache(tiny_app_cache))
    assert [(s.text, s.author) for s in kept] == [(text, "**Ada**")]
    cards = "".join(h.value for h in at.get("html") if "na-card" in h.value)
    assert "<img" not in cards and "&lt;img src=x onerror=alert(document.cookie)&gt;" in cards


def test_a_long_text_is_cut_with_a_message(app, tiny_app_cache):
    """A pasted megabyte is cut to the box's 4,000 characters by the browser (Streamlit drops a longer value from
    any other client); those 4,000 are still about a thousand tokens, and the page reads the first 256."""
    at = run_page(app(), "pages/try_text.py")
    at.text_area(key="try_text").input(("the cat sat on the mat. " * 200)[:4000])
    next(b for b in at.button if b.label == "Run the model").click().run()
    no_traceback(at)
    assert not at.error
    assert any("longer than 256 tokens" in i.value and "Shorten it" in i.value for i in at.info)
    heatmap = next(h.value for h in at.get("html") if "na-heatmap" in h.value)
    assert "256 tokens" in heatmap

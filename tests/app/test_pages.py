"""Every dashboard page run by streamlit.testing.v1.AppTest on the small real cache of the default model."""

from __future__ import annotations

import html
import os
import re
import shutil
import threading
import time

import duckdb
import pytest

from core import paths
from core.live import ON_VIEW_SOURCE
from core.paths import notes_path
from core.score import is_readable
from core.store import DashboardCache
from core.types import NeuronId
from dashboard.render import shown

PAGES = ["pages/picker.py", "pages/scoring.py", "pages/insights.py", "pages/related.py", "pages/try_text.py"]


def texts(at) -> str:
    """Everything the run wrote as text, markdown, captions, alerts and html, for assertions (Markdown as the
    browser shows it: untrusted text in it is escaped by dashboard.render.plain)."""
    parts = [shown(str(e.value)) for e in (*at.title, *at.subheader, *at.markdown, *at.caption, *at.info,
                                           *at.warning, *at.error, *at.success)]
    parts += [str(h.value) for h in at.get("html")]
    return "\n".join(str(p) for p in parts)


def visible_text(markup: str) -> str:
    """The text a browser shows for heatmap markup: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


FIGURE = re.compile(r'<div class="na-sl"[^>]*>(.*?)</div><div class="na-sv"[^>]*>(.*?)</div>', re.S)


def figures(at) -> dict[str, str]:
    """The figures of a page's rows of them (render.stats_html): {label: value} as shown."""
    blocks = [e.value for e in at.get("html")] + [e.value for e in at.markdown]
    return {html.unescape(label): html.unescape(value) for block in blocks if "na-stats" in block
            for label, value in FIGURE.findall(block)}


def no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def opened(path) -> DashboardCache:
    """The cache as the app opened it (same process: the app's st.cache_resource handle)."""
    from dashboard.state import open_cache

    return open_cache(path)


def test_home_describes_the_cache_and_starts_at_neuron_0_0(app, app_cache):
    at = app().run()
    no_errors(at)
    metrics = {m.label: shown(m.value) for m in at.metric}
    assert metrics["Model"] == "smollm2-135m" and metrics["Corpus"] == "stdlib"
    assert metrics["Tokens"] == "4,096" and metrics["Neurons"] == "46,080"
    assert "Explain" in texts(at) and "Simulate" in texts(at) and "Score" in texts(at)
    at.button(key="start").click().run()
    no_errors(at)
    assert at.title[0].value.startswith("Neuron 0:0 — insights")
    assert (at.number_input(key="layer").value, at.number_input(key="neuron").value) == (0, 0)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_the_neuron_in_the_url(app, app_cache, page):
    at = app(layer=3, neuron=42).run()
    at.switch_page(page).run()
    no_errors(at)
    assert (at.number_input(key="layer").value, at.number_input(key="neuron").value) == (3, 42)
    if page != "pages/picker.py":
        assert at.title[0].value.startswith("Neuron 3:42")


def test_the_neuron_survives_page_switches_and_moves_with_the_buttons(app, app_cache):
    at = app(layer=5, neuron=1535).run()
    at.switch_page("pages/insights.py").run()
    assert at.title[0].value.startswith("Neuron 5:1535")
    at.button(key="nav_next").click().run()  # wraps to the next layer
    assert at.title[0].value.startswith("Neuron 6:0")
    assert at.query_params["layer"] == "6" and "neuron" not in at.query_params  # 0 is the default
    at.switch_page("pages/scoring.py").run()
    assert at.title[0].value.startswith("Neuron 6:0")
    at.button(key="nav_prev").click().run()
    at.switch_page("pages/related.py").run()
    assert at.title[0].value.startswith("Neuron 5:1535")
    assert at.query_params["neuron"] == "1535"


def test_an_out_of_range_url_falls_back_to_a_valid_neuron(app, app_cache):
    at = app(layer=99, neuron=-4).run()
    at.switch_page("pages/insights.py").run()
    no_errors(at)
    assert at.title[0].value.startswith("Neuron 0:0")


def test_picker_goes_to_a_typed_neuron_and_lists_neurons(app, app_cache):
    at = app().run()
    at.switch_page("pages/picker.py").run()
    no_errors(at)
    at.text_input(key="picker_go").input("12:345")
    next(b for b in at.button if b.label == "Go").click().run()
    assert (at.number_input(key="layer").value, at.number_input(key="neuron").value) == (12, 345)
    at.text_input(key="picker_go").input("nonsense")
    next(b for b in at.button if b.label == "Go").click().run()
    assert "not a neuron" in at.error[0].value
    at.text_input(key="picker_go").input("30:0")
    next(b for b in at.button if b.label == "Go").click().run()
    assert "out of range" in at.error[0].value
    at.selectbox(key="picker_layer").select(2).run()
    table = at.dataframe[0].value
    assert len(table) == 500 and set(table["layer"]) == {2}
    assert "1,536 neurons match" in texts(at)
    at.selectbox(key="picker_order").select("max").run()
    table = at.dataframe[0].value
    assert list(table["max"]) == sorted(table["max"], reverse=True)


def test_picker_search_finds_explanations(app, app_cache):
    at = app().run()
    word = opened(app_cache).reader.explanations(NeuronId(0, 0))[0].text.split()[-1].strip("'\".,")
    at.switch_page("pages/picker.py").run()
    at.text_input(key="picker_search").input(word).run()
    no_errors(at)
    table = at.dataframe[0].value
    assert len(table) >= 1 and all(word.lower() in text.lower() for text in table["explanation"])


def test_insights_shows_activations_by_quantile_histogram_and_tokens(app, app_cache):
    at = app(layer=0, neuron=0).run()
    at.switch_page("pages/insights.py").run()
    no_errors(at)
    written = texts(at)
    for heading in ("Top excerpts", "Quantile bin", "Random sample", "Bottom excerpts", "Related tokens"):
        assert heading in written
    heatmaps = "".join(h.value for h in at.get("html") if "na-heatmap" in h.value)
    assert heatmaps.count('class="na-heatmap"') >= 4 and heatmaps.count("<span") > 100
    assert set(figures(at)) >= {"max", "min", "mean", "density"}
    histogram = next(m.value for m in at.markdown if "na-chart" in m.value)
    assert "<svg" in histogram and histogram.count("<rect") > 5  # the histogram, drawn here as SVG
    assert html.escape(opened(app_cache).reader.explanations(NeuronId(0, 0))[0].text, quote=True) in written


def test_scoring_page_shows_real_and_simulated_activations(app, app_cache):
    at = app(layer=0, neuron=1).run()
    at.switch_page("pages/scoring.py").run()
    no_errors(at)
    assert set(figures(at)) >= {"Score: top and random", "Top excerpts only", "Random excerpts only"}
    heatmaps = "".join(h.value for h in at.get("html") if "na-heatmap" in h.value)
    assert "simulated" in heatmaps and ">real<" in heatmaps
    at.radio(key="scoring_mode").set_value("overlaid").run()
    heatmaps = "".join(h.value for h in at.get("html") if "na-heatmap" in h.value)
    assert "border-bottom:3px solid rgba(22,163,74" in heatmaps


def test_a_suggestion_is_scored_live_and_kept(app, app_cache):
    at = app(layer=0, neuron=2).run()
    at.switch_page("pages/scoring.py").run()
    at.text_area(key="suggest_text").input("the tokens ' the', ' a' and '.'")
    at.text_input(key="suggest_author").input("Ada")
    next(b for b in at.button if b.label == "Score it").click().run()
    no_errors(at)
    notes = opened(app_cache).notes
    kept = notes.suggestions(NeuronId(0, 2))
    assert [(s.text, s.author, s.source) for s in kept] == [("the tokens ' the', ' a' and '.'", "Ada", "person")]
    assert kept[0].score is not None and kept[0].score.simulator == "baseline"
    live = notes.live_score_by_id(kept[0].score.score_id)
    assert live is not None and len(live.simulations) > 0
    assert "**Yours**" in texts(at) and "the tokens" in texts(at)
    assert any(s == "the tokens ' the', ' a' and '.'" for s in at.dataframe[-1].value["suggestion"])
    # the same text again is kept as a second suggestion with the first one's live score, not simulated again
    at.text_area(key="suggest_text").input("the tokens ' the', ' a' and '.'")
    next(b for b in at.button if b.label == "Score it").click().run()
    again = notes.suggestions(NeuronId(0, 2))
    assert len(again) == 2 and {s.score.score_id for s in again if s.score} == {kept[0].score.score_id}


def test_a_rating_is_stored_and_shown(app, app_cache):
    at = app(layer=0, neuron=3).run()
    at.switch_page("pages/scoring.py").run()
    cache = opened(app_cache)
    if not cache.reader.explanations(NeuronId(0, 3)):
        cache.notes.add_suggestion(NeuronId(0, 3), "a person's guess", "Ada")
        at.run()
    at.radio(key="review_rating").set_value("wrong")
    at.text_input(key="review_note").input("fires on digits, not words")
    at.text_input(key="review_author").input("Grace")
    next(b for b in at.button if b.label == "Save rating").click().run()
    no_errors(at)
    ratings = cache.notes.ratings(NeuronId(0, 3))
    assert [(r.rating.value, r.note, r.author) for r in ratings] == [("wrong", "fires on digits, not words", "Grace")]
    assert "Rating saved." in texts(at)
    shown = at.dataframe[-1].value
    assert list(shown["note"]) == ["fires on digits, not words"]


def test_home_lists_where_people_and_score_disagree(app, app_cache):
    at = app().run()
    opened(app_cache).notes.add_rating(NeuronId(4, 4), "numbers", "wrong", score=0.9, note="x")
    at.run()
    labels = [shown(b.label) for b in at.button]
    assert any(label.startswith("4:4 · score 0.90 but people say wrong") for label in labels)
    next(b for b in at.button if shown(b.label).startswith("4:4 · score")).click().run()
    assert (at.number_input(key="layer").value, at.number_input(key="neuron").value) == (4, 4)


def test_related_page_moves_to_a_related_neuron(app, app_cache):
    at = app(layer=1, neuron=9).run()
    at.switch_page("pages/related.py").run()
    no_errors(at)
    upstream = opened(app_cache).reader.related_neurons(NeuronId(1, 9), "upstream_positive", 5)
    assert upstream and all(r.neuron.layer == 0 for r in upstream)
    assert "not computed yet" not in texts(at)
    target = upstream[0].neuron
    at.pills(key="related_upstream_positive_1:9").select(f"→ {target}").run()
    assert at.title[0].value.startswith(f"Neuron {target}")
    assert at.query_params.get("layer", "0") == str(target.layer)  # a default value leaves the URL
    assert at.query_params.get("neuron", "0") == str(target.neuron)


def test_try_your_own_text_runs_the_model_once_per_click(app, app_cache):
    at = app(layer=1, neuron=7).run()
    at.switch_page("pages/try_text.py").run()
    at.text_area(key="try_text").input("x = '<b>bold</b>' # <script>alert(1)</script>")
    next(b for b in at.button if b.label == "Run the model").click().run()
    no_errors(at)
    heatmap = next(h.value for h in at.get("html") if "na-heatmap" in h.value)
    assert "<script" not in heatmap and "<b>" not in heatmap and "&lt;" in heatmap
    assert "<script>alert(1)</script>" in visible_text(heatmap)  # shown as text, token by token
    table = at.dataframe[0].value
    assert len(table) == 10 and all(name.startswith("1:") for name in table["neuron"])
    assert list(table["activation"]) == sorted(table["activation"], reverse=True)


def test_live_work_waits_in_line(app, app_cache):
    """Hold the only live slot: a forward pass waits in line, and runs once the slot is free."""
    from dashboard.state import live_gate

    gate = live_gate()
    at = app(layer=0, neuron=0).run()
    at.switch_page("pages/try_text.py").run()
    at.text_area(key="try_text").input("hello world")
    button = next(b for b in at.button if b.label == "Run the model")
    assert gate.semaphore.acquire(timeout=5)
    try:
        worker = threading.Thread(target=lambda: button.click().run())
        worker.start()
        deadline = time.monotonic() + 60
        while gate.waiting == 0 and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # until the click's run reaches the queue
        assert gate.waiting == 1 and worker.is_alive()  # it waits behind the held slot
        worker.join(timeout=0.5)
        assert worker.is_alive() and gate.waiting == 1  # and keeps waiting while the slot is held
    finally:
        gate.semaphore.release()
    worker.join(timeout=120)
    assert not worker.is_alive() and gate.waiting == 0
    no_errors(at)
    assert any("na-heatmap" in h.value for h in at.get("html"))


def test_the_store_is_reattached_when_the_cache_file_is_replaced(app, small_cache, atlas_home, tmp_path, monkeypatch):
    path = tmp_path / "swap.duckdb"
    shutil.copy(small_cache, path)
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(path))
    at = app().run()
    assert {m.label: m.value for m in at.metric}["Corpus"] == "stdlib"
    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copy(small_cache, rebuilt)
    with duckdb.connect(str(rebuilt)) as con:  # a build of another corpus, as far as the app can tell
        con.execute("UPDATE meta SET value = to_json('rebuilt corpus') WHERE key = 'corpus'")
    os.replace(rebuilt, path)  # as a finished build publishes its file
    at.run()
    no_errors(at)
    assert {m.label: m.value for m in at.metric}["Corpus"] == "rebuilt corpus"
    assert notes_path(path).exists()


def test_without_a_cache_the_app_says_which_command_builds_one(app, atlas_home, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(tmp_path / "missing.duckdb"))
    at = app().run()
    assert not at.exception
    message = "\n".join(e.value for e in (*at.warning, *at.error))
    assert paths.build_command() in message
    at.switch_page("pages/scoring.py").run()
    assert not at.exception and paths.build_command() in at.warning[0].value


def test_a_cache_of_the_old_layout_says_which_command_migrates_it(app, atlas_home, tmp_path, monkeypatch):
    import tarfile

    with tarfile.open(paths.REPO_DIR / "tests" / "data" / "v1-cache.tgz") as archive:
        archive.extractall(tmp_path, filter="data")
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(tmp_path / "v1.duckdb"))
    at = app().run()
    assert not at.exception
    message = "\n".join(shown(e.value) for e in at.warning)
    assert f"python -m core migrate {tmp_path / 'v1.duckdb'}" in message and "cannot be opened" in message
    assert not paths.results_path(tmp_path / "v1.duckdb").exists()  # the dashboard never writes the cache


def test_a_cache_in_use_elsewhere_is_reported_as_such(app, app_cache, tmp_path, monkeypatch):
    """Another process holding the notes file (a second dashboard on the same cache) is named, not "build one"."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; held = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(notes_path(app_cache))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        at = app().run()
        message = "\n".join(shown(e.value) for e in at.warning)
        assert "cannot be opened" in message and "in use by another process" in message
    finally:
        holder.kill()
        holder.wait()


def test_the_last_cache_is_remembered(app, app_cache, atlas_home, monkeypatch):
    app().run()
    assert paths.remembered_cache() == app_cache.resolve()
    monkeypatch.delenv("NEURON_ATLAS_CACHE")
    assert paths.default_cache() == app_cache.resolve()


def test_generating_an_explanation_keeps_it_as_a_scored_suggestion(app, app_cache):
    at = app(layer=0, neuron=9).run()
    at.switch_page("pages/insights.py").run()
    assert "free" in texts(at)
    at.button(key="generate").click().run()
    no_errors(at)
    kept = [s for s in opened(app_cache).notes.suggestions(NeuronId(0, 9)) if s.source != ON_VIEW_SOURCE]
    assert len(kept) == 1 and kept[0].source == "baseline" and is_readable(kept[0].text)
    assert kept[0].score is not None and kept[0].score.simulator == "baseline"
    assert "New explanation kept as a suggestion" in at.success[0].value
    at.run()
    table = next(h.value for h in at.get("html") if "<th" in h.value and ">explainer<" in h.value)
    assert html.escape(kept[0].text, quote=True) in table  # listed among the neuron's explanations


def test_openai_settings_show_the_cost_and_never_the_key(app, app_cache):
    secret = "sk-test-NEVER-SHOWN-4242"
    at = app(layer=0, neuron=1).run()
    at.switch_page("pages/insights.py").run()
    at.radio(key="llm_backend").set_value("openai").run()
    at.text_input(key="llm_api_key").input(secret).run()
    no_errors(at)
    assert at.text_input(key="llm_api_key").proto.type == at.text_input(key="llm_api_key").proto.PASSWORD
    cost = next(c.value for c in at.caption if "will cost" in c.value)
    assert re.search(r"about \*\*\$0\.\d{4}\*\* \(cap \$0\.50\)", cost)
    shown = [str(e.value) for e in at.main if hasattr(e, "value")] + [texts(at)]
    shown += [str(e.value) for e in at.sidebar if hasattr(e, "value") and e.key != "llm_api_key"]
    assert not any(secret in s for s in shown)
    at.switch_page("pages/scoring.py").run()
    assert "openai:gpt-4o-mini" in texts(at) and secret not in texts(at)
    assert secret.encode() not in notes_path(app_cache).read_bytes()

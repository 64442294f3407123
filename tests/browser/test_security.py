"""Hostile text in every list that shows it, and an API key typed into the sidebar, in a real browser: every
payload is shown as the characters it is, no dialog opens, the browser asks no host but the app's, and the key is
in no page text and no file the dashboard writes."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import run_app, wait_ready

from core.paths import copy_cache, notes_path
from core.store import DashboardCache, open_results_writer
from core.types import ExplanationStatus, NeuronId, Rating, Scores

pytestmark = pytest.mark.browser

BEST = "![t](http://evil.example/t.png) <script>alert('a')</script>"
WORST = "<img src=http://evil.example/i.png onerror=alert('b')>"
RATED = "[go](javascript:alert('c')) <iframe src=http://evil.example/f>"
NAME = "<style>*{background:url(http://evil.example/s.png)}</style>"
PAYLOADS = (BEST, WORST, RATED, NAME)
"""Markdown image and link, script, event handler, javascript: link, iframe, CSS: each fetches or runs something
if rendered as markup; all under the 60 characters a home-page button shows."""
KEY = "sk-test-NEVER-IN-THE-PAGE-7731"


@pytest.fixture(scope="module")
def hostile_dashboard(unsafe_cache, atlas_home, artifacts, tmp_path_factory):
    """The unsafe cache (its corpus already holds markup) with hostile explanations as the best and the worst one
    and a hostile suggestion that people rate wrong against a high score (the disagreements list), served."""
    cache = tmp_path_factory.mktemp("hostile") / "hostile.duckdb"
    copy_cache(unsafe_cache, cache)
    with open_results_writer(cache) as writer:
        for neuron, text, score in ((NeuronId(0, 0), BEST, 0.95), (NeuronId(0, 1), WORST, 0.01)):
            writer.add_explanation(neuron, text=text, explainer="openai:gpt-4o-mini", model="gpt-4o-mini",
                                   prompt_version="t", simulator="baseline", status=ExplanationStatus.OK,
                                   calibration_score=score, scores=Scores(score, score, score, 64))
    dashboard = DashboardCache(cache)
    dashboard.notes.add_suggestion(NeuronId(0, 2), RATED, NAME, "person")
    dashboard.notes.add_rating(NeuronId(0, 2), RATED, Rating.WRONG, score=0.9, note=BEST, author=NAME)
    dashboard.close()
    with run_app(cache, atlas_home, artifacts / "server-hostile.log") as server:
        yield server, cache


def test_hostile_text_is_text_and_the_browser_asks_no_other_host(hostile_dashboard, page):
    server, cache = hostile_dashboard
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    shown: dict[str, str] = {}
    for name in ("", "insights?layer=0&neuron=0", "scoring?layer=0&neuron=2", "picker", "related?layer=1&neuron=0"):
        page.goto(f"{server.url}/{name}")
        wait_ready(page)
        page.wait_for_timeout(500)  # time for anything a payload would fetch or run
        shown[name or "home"] = page.inner_text("body").replace("\u2060", "")  # the joiner that stops autolinks
    assert BEST[:60] in shown["home"] and WORST in shown["home"] and RATED[:40] in shown["home"]
    assert WORST in shown["insights?layer=0&neuron=0"] or BEST in shown["insights?layer=0&neuron=0"]
    assert page.locator("iframe[src*='evil'], img[src*='evil'], a[href^='javascript']").count() == 0
    assert dialogs == []
    app_host = urlsplit(server.url).netloc
    foreign = [url for url in requests if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc != app_host]
    assert foreign == [], foreign[:5]
    assert len(requests) > 10  # the recorder saw the app's own traffic
    icons = page.locator("link[rel*='icon']").evaluate_all("links => links.map(l => l.href)")
    assert icons and all(urlsplit(href).netloc in ("", app_host) for href in icons), icons  # browsers fetch it

    # the API key: typed into the sidebar, then every page visited; in no text, no attribute but its own box's
    page.goto(f"{server.url}/insights?layer=0&neuron=0")
    wait_ready(page)
    page.get_by_text("Live work (scoring, generating)").click()
    page.get_by_text("OpenAI-compatible API").click()
    wait_ready(page)
    page.get_by_role("textbox", name="API key").fill(KEY)
    page.get_by_role("textbox", name="API key").press("Enter")
    wait_ready(page)
    for name in ("insights?layer=0&neuron=0", "scoring?layer=0&neuron=0", ""):
        page.get_by_role("link", name=re.compile({"": "Home", "scoring?layer=0&neuron=0": "Scoring"}.get(
            name, "Insights"))).first.click()
        wait_ready(page)
        assert KEY not in page.inner_text("body")
        html = page.content()
        boxes = page.locator("input[type='password']")
        in_boxes = sum(boxes.nth(i).evaluate("e => e.outerHTML").count(KEY) for i in range(boxes.count()))
        assert html.count(KEY) == in_boxes, "the key is in the page outside its password box"
        assert KEY not in page.url
    assert not any(KEY in url for url in requests)
    assert KEY.encode() not in notes_path(cache).read_bytes()
    assert KEY not in server.log.read_text()
    assert not any(KEY.encode() in p.read_bytes() for p in Path(cache).parent.iterdir() if p.is_file())

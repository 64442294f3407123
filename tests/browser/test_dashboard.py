"""The dashboard in a real browser: Debian's chromium, driven by playwright, against `streamlit run app.py`."""

from __future__ import annotations

import re

import pytest
from harness import wait_ready

from core.store import open_reader
from core.types import NeuronId

pytestmark = pytest.mark.browser


def open_page(page, url: str) -> None:
    page.goto(url)
    wait_ready(page)


def heading(page) -> str:
    return page.locator("h1").first.inner_text().strip()


def shoot(page, artifacts, name: str, height: int = 2200) -> None:
    """A screenshot of the whole app (Streamlit scrolls inside the page, so the viewport is made tall)."""
    page.set_viewport_size({"width": 1400, "height": height})
    wait_ready(page)
    page.screenshot(path=str(artifacts / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def sidebar_neuron(page) -> tuple[int, int]:
    inputs = page.locator("[data-testid='stSidebar'] [data-testid='stNumberInput'] input")
    return int(inputs.nth(0).input_value()), int(inputs.nth(1).input_value())


def test_a_shared_link_opens_its_page_on_a_fresh_server(dashboard, page):
    """The first visit after the server starts is a deep link (what students do with a teacher's link): Streamlit
    runs pages/scoring.py on its own then, and the page must run the frame (dashboard/state.py, current_frame)."""
    open_page(page, f"{dashboard.url}/scoring?layer=0&neuron=5")
    assert heading(page) == "Neuron 0:5 — scoring details"
    assert sidebar_neuron(page) == (0, 5)
    navigation = page.locator("[data-testid='stSidebarNav']").inner_text()
    for title in ("Home", "Find a neuron", "Scoring details", "Insights", "Related neurons", "Try your own text"):
        assert title in navigation  # the frame's navigation, not Streamlit's list of files in pages/
    assert page.locator("[data-testid='stSidebarNav'] a", has_text="try_text").count() == 0


def test_first_screen_leads_to_neuron_0_0_and_related_links_move(dashboard, dashboard_cache, page, artifacts):
    open_page(page, dashboard.url)
    assert heading(page) == "Neuron Atlas"
    shoot(page, artifacts, "home")
    page.get_by_role("button", name="Start at layer 0, neuron 0").click()
    page.wait_for_url(re.compile(r"/insights"))
    wait_ready(page)
    assert heading(page) == "Neuron 0:0 — insights"
    with open_reader(dashboard_cache) as store:
        explanation = store.explanations(NeuronId(0, 0))
        related = store.related_neurons(NeuronId(0, 0), "downstream_positive", 5)
    assert explanation and related
    assert explanation[0].text in page.locator(".na-card").first.inner_text()
    assert page.locator(".na-heatmap span").count() > 200  # top, quantile, random and bottom excerpts
    assert page.locator("svg.na-chart rect").count() > 5  # the histogram reaches the browser (st.html drops SVG)
    shoot(page, artifacts, "insights", 3000)

    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Related neurons").click()
    wait_ready(page)
    assert heading(page) == "Neuron 0:0 — related neurons"
    target = related[0].neuron
    button = page.get_by_role("radio", name=f"→ {target}").first
    button.scroll_into_view_if_needed()
    shoot(page, artifacts, "related")
    button.click()
    wait_ready(page)
    assert heading(page) == f"Neuron {target} — related neurons"
    assert sidebar_neuron(page) == (target.layer, target.neuron)
    assert f"neuron={target.neuron}" in page.url


def test_real_and_simulated_heatmaps_and_a_live_suggestion(dashboard, dashboard_cache, page, artifacts):
    open_page(page, f"{dashboard.url}/scoring?layer=0&neuron=1")
    assert heading(page) == "Neuron 0:1 — scoring details"
    with open_reader(dashboard_cache) as store:
        assert store.explanations(NeuronId(0, 1))
    heatmaps = page.locator(".na-heatmap")
    assert heatmaps.count() >= 1 and "simulated" in heatmaps.first.inner_text()
    page.get_by_label("Your explanation").fill("the word 'return' and numbers")
    page.get_by_label("Your name").first.fill("Ada")
    page.get_by_role("button", name="Score it").click()
    wait_ready(page)
    card = page.locator(".na-card", has_text="the word 'return' and numbers").first
    card.wait_for(timeout=60_000)
    assert re.search(r"score -?\d\.\d\d|no score", card.inner_text())
    assert "by Ada" in card.inner_text() and "live score with baseline" in card.inner_text()
    shoot(page, artifacts, "scoring", 3200)


def test_picker_and_try_your_own_text(dashboard, page, artifacts):
    open_page(page, f"{dashboard.url}/picker?layer=2&neuron=3")
    assert heading(page) == "Find a neuron"
    page.get_by_label("Go to a neuron (layer:neuron)").fill("4:17")
    page.get_by_role("button", name="Go").click()
    wait_ready(page)
    assert sidebar_neuron(page) == (4, 17)
    assert "neurons match" in page.locator("[data-testid='stCaptionContainer']", has_text="match").first.inner_text()
    shoot(page, artifacts, "picker")
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="Try your own text").click()
    wait_ready(page)
    assert heading(page) == "Neuron 4:17 — try your own text"
    page.get_by_role("button", name="Run the model").click()
    page.locator(".na-heatmap").first.wait_for(timeout=120_000)
    wait_ready(page)
    assert "return a + b" in page.locator(".na-heatmap").first.inner_text()
    shoot(page, artifacts, "try")


def test_untrusted_text_is_shown_as_text_and_never_runs(unsafe_dashboard, page, artifacts):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_page(page, f"{unsafe_dashboard.url}/insights?layer=0&neuron=0")
    shown = " ".join(page.locator(".na-heatmap").all_inner_texts()).replace("\n", "")
    assert "<img src=x onerror=alert(1)>" in shown and "<script>alert(2)</script>" in shown
    assert page.locator(".na-heatmap img, .na-heatmap script, img[src='x']").count() == 0
    shoot(page, artifacts, "unsafe-insights")

    # no "(1)": a number in brackets reads as an activation level and the readability rule refuses it
    payload = "<img src=x onerror=alert(document.domain)> fires on <b>bold</b>"
    open_page(page, f"{unsafe_dashboard.url}/scoring?layer=0&neuron=0")
    page.get_by_label("Your explanation").fill(payload)
    page.get_by_label("Your name").first.fill("<script>alert(3)</script>")
    page.get_by_role("button", name="Score it").click()
    wait_ready(page)
    card = page.locator(".na-card", has_text="fires on").first
    card.wait_for(timeout=60_000)
    assert payload in card.inner_text() and "<script>alert(3)</script>" in card.inner_text()
    assert page.locator("img[src='x'], .na-card b, .na-card script").count() == 0

    open_page(page, f"{unsafe_dashboard.url}/try_text?layer=0&neuron=0")
    page.get_by_role("textbox", name="Text").fill("<img src=x onerror=alert(4)><script>alert(5)</script>")
    page.get_by_role("button", name="Run the model").click()
    page.locator(".na-heatmap").first.wait_for(timeout=120_000)
    wait_ready(page)
    assert "<script>alert(5)</script>" in page.locator(".na-heatmap").first.inner_text().replace("\n", "")
    page.wait_for_timeout(1000)  # give any handler that slipped through the time to fire
    assert page.locator("img[src='x']").count() == 0
    shoot(page, artifacts, "unsafe-try")
    assert dialogs == []

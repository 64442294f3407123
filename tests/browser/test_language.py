"""The dashboard in Turkish in a real browser: a link with ?lang=tr, and a browser whose language is Turkish."""

from __future__ import annotations

import pytest
from harness import wait_ready

pytestmark = pytest.mark.browser


def test_a_turkish_link_and_a_turkish_browser_open_the_dashboard_in_turkish(dashboard, browser, artifacts):
    english = browser.new_context(viewport={"width": 1400, "height": 1900}, locale="en-US")
    try:
        page = english.new_page()
        page.goto(f"{dashboard.url}/?layer=0&neuron=0&lang=tr")
        wait_ready(page)
        assert page.locator("h1").first.inner_text().strip() == "Neuron Atlas"
        text = page.locator("[data-testid='stMain']").inner_text()
        assert "1. Açıkla" in text and "2. Tahmin et" in text and "3. Puanla" in text
        navigation = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "İçgörüler" in navigation and "Insights" not in navigation
        # the README's Turkish screenshot (tests/browser/screenshots.py --lang tr writes the one in docs/screenshots)
        page.screenshot(path=str(artifacts / "home-tr.png"))

        page.locator("[data-testid='stSidebarNav']").get_by_role("link", name="İçgörüler").click()
        wait_ready(page)
        assert page.locator("h1").first.inner_text().strip() == "Nöron 0:0 — içgörüler"
        assert "lang=tr" in page.url
    finally:
        english.close()

    turkish = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="tr-TR")
    try:
        page = turkish.new_page()
        page.goto(f"{dashboard.url}/insights?layer=0&neuron=0")
        wait_ready(page)
        assert page.locator("h1").first.inner_text().strip() == "Nöron 0:0 — içgörüler"
        assert "lang=" not in page.url  # the browser's own language is the default, kept out of the URL
    finally:
        turkish.close()

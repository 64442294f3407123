"""Fixtures for the browser tests: Debian's chromium through playwright, the dashboard served for real by
`streamlit run app.py` on 127.0.0.1, and a tiny cache whose corpus holds HTML and script."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CHROMIUM, ROOT, Server, launch, run_app

from core.paths import copy_cache

UNSAFE_CORPUS = [
    "The parser reads <img src=x onerror=alert(1)> and keeps going.",
    "A list of numbers: 1, 2, 3, 4 and 5.",
    "def f(x):\n    return x + 1",
    "Never run <script>alert(2)</script> from a corpus.",
]
"""Paragraphs of the unsafe cache's corpus, repeated; the first two carry markup that must stay text."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--artifacts", default=str(ROOT / "test-artifacts"),
                     help="folder for the browser tests' screenshots and server logs (default test-artifacts/)")


@pytest.fixture(scope="session")
def artifacts(request) -> Path:
    folder = Path(request.config.getoption("--artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `make chromium` (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request, artifacts):
    """A fresh browser page (its own Streamlit session), 1400 px wide; a screenshot is saved if the test fails."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    yield opened
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        opened.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"))
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def dashboard(dashboard_cache, atlas_home, tmp_path_factory, artifacts) -> Iterator[Server]:
    """The dashboard served on the prepared small cache (hard links: the server's notes file is its own)."""
    link = tmp_path_factory.mktemp("browser-cache") / "browser.duckdb"
    copy_cache(dashboard_cache, link, link=True)
    with run_app(link, atlas_home, artifacts / "server-dashboard.log") as server:
        yield server


@pytest.fixture(scope="session")
def unsafe_cache(atlas_home, tmp_path_factory) -> Path:
    """A tiny cache of the default model over a corpus full of HTML and script, built by the command line."""
    folder = tmp_path_factory.mktemp("unsafe")
    corpus = folder / "unsafe.txt"
    corpus.write_text("\n\n".join(UNSAFE_CORPUS[i % len(UNSAFE_CORPUS)] for i in range(60)))
    cache = folder / "unsafe.duckdb"
    done = subprocess.run([sys.executable, "-m", "core", "build", "--corpus", str(corpus), "--tokens", "256",
                           "--cache", str(cache), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return cache


@pytest.fixture(scope="module")
def unsafe_dashboard(unsafe_cache, atlas_home, artifacts) -> Iterator[Server]:
    with run_app(unsafe_cache, atlas_home, artifacts / "server-unsafe.log") as server:
        yield server

"""Fixtures for the dashboard's AppTest runs. The prepared cache (tests/conftest.py: dashboard_cache) is hard-linked
per test (recording and results) so each test has its own notes file; the app is pointed at it with
NEURON_ATLAS_CACHE (the documented hook), and NEURON_ATLAS_HOME is the session's own (atlas_home)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.paths import copy_cache

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_cache(dashboard_cache, atlas_home, tmp_path, monkeypatch) -> Path:
    """The prepared cache as hard links in this test's folder (the app only reads them; the notes file beside them
    is this test's own), set as NEURON_ATLAS_CACHE."""
    link = tmp_path / "cache.duckdb"
    copy_cache(dashboard_cache, link, link=True)
    monkeypatch.setenv("NEURON_ATLAS_CACHE", str(link))
    return link


@pytest.fixture
def app() -> Callable[..., object]:
    """Factory: app(layer=..., neuron=...) -> an AppTest of app.py with those query parameters, not yet run."""
    from streamlit.testing.v1 import AppTest

    def make(**query: int) -> AppTest:
        test = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        for key, value in query.items():
            test.query_params[key] = str(value)
        return test

    return make

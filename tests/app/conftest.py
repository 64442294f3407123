"""Fixtures for the dashboard's AppTest runs. The prepared cache (tests/conftest.py: dashboard_cache) is hard-linked
per test so each test has its own notes file; the app is pointed at it with NEURON_ATLAS_CACHE (the documented
hook), and NEURON_ATLAS_HOME is the session's own (atlas_home)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_cache(dashboard_cache, atlas_home, tmp_path, monkeypatch) -> Path:
    """The prepared cache as a hard link in this test's folder (the app only reads it; the notes file beside it is
    this test's own), set as NEURON_ATLAS_CACHE."""
    link = tmp_path / "cache.duckdb"
    os.link(dashboard_cache, link)
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

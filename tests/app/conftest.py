"""Fixtures for the dashboard's AppTest runs: the small real cache of the default model, prepared once (baseline
explanations for part of layer 0, related tokens and neurons when core computes them), then hard-linked per test so
each test has its own notes file. The app is pointed at it with NEURON_ATLAS_CACHE (the documented hook)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPLAINED = "0:0-7"
"""Neurons the prepared cache explains with the baseline explainer (when `python -m core explain` exists)."""


def core_has(command: str) -> bool:
    """Whether `python -m core` offers this subcommand in this checkout."""
    sys.path.insert(0, str(ROOT))
    import components

    return components._cli_has(command)


def run_core(*args: str) -> None:
    """Run `python -m core ARGS` from the repository root; fail the fixture with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m core {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def atlas_home(tmp_path_factory) -> Iterator[Path]:
    """NEURON_ATLAS_HOME for the whole session: its own last-cache file, the converted default model linked in."""
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    from harness import atlas_home as make_home

    home = make_home(tmp_path_factory.mktemp("atlas-home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEURON_ATLAS_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def prepared_cache(request, atlas_home, tmp_path_factory) -> Path:
    """A copy of the small cache with what the pipeline adds to it, made once per session."""
    if os.environ.get("NA_DEV_PREPARED"):  # DEV-ONLY: remove
        return Path(os.environ["NA_DEV_PREPARED"])
    small_cache = request.getfixturevalue("small_cache")
    path = tmp_path_factory.mktemp("app-cache") / "app.duckdb"
    shutil.copy(small_cache, path)
    if core_has("explain"):
        run_core("explain", str(path), "--neurons", EXPLAINED, "--explainer", "baseline", "--simulator", "baseline")
    if core_has("related"):
        run_core("related", str(path), "--quiet")
    return path


@pytest.fixture
def app_cache(prepared_cache, tmp_path, monkeypatch) -> Path:
    """The prepared cache as a hard link in this test's folder (the app only reads it; the notes file beside it is
    this test's own), set as NEURON_ATLAS_CACHE."""
    link = tmp_path / "cache.duckdb"
    os.link(prepared_cache, link)
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

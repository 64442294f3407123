"""bench/load.py in CI (issue 13): its websocket client drives `streamlit run app.py` on the small dashboard cache
with 5 sessions, new and kept, every student on another neuron, and the trivial floor app beside it. It asserts
that every run finished and showed the neuron asked for, never how long anything took."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_five_sessions_run_every_page_without_errors(dashboard_cache, atlas_home, tmp_path):
    load = _load_bench()
    cache = tmp_path / "cache.duckdb"
    os.link(dashboard_cache, cache)  # the app writes its notes file beside the cache: this test's own
    args = load.parse_args(["--cache", str(cache), "--sessions", "5", "--patterns", "different",
                            "--pages", "insights", "--steps", "2", "--timeout", "120"])

    found = load.benchmark(args, tmp_path, report=False)

    assert [(m.sessions, m.pattern, m.mode, m.page) for m in found] == [
        (5, "different", "new", "insights"), (5, "different", "kept", "insights")]
    for measurement in found:
        for result in (measurement.app, measurement.floor):
            assert result.errors == []
            assert len(result.runs) == 5 * 2
            assert result.cpu_s > 0  # the server's CPU time was read

"""bench/load.py in CI (issue 13): its websocket client drives `streamlit run app.py` on the small dashboard cache
with 5 sessions, new and kept, every student on another neuron, and the trivial floor app beside it. It asserts
that every run finished and showed the neuron asked for, never how long anything took."""

from __future__ import annotations

import os


def test_five_sessions_run_every_page_without_errors(dashboard_cache, atlas_home, tmp_path, bench_module):
    load = bench_module("load")
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

"""bench/content_floor.py in CI (issue 13): the replay app draws what the dashboard drew, element for element, and
the three servers take a small class (2 sessions, new and kept) without errors. It never asserts a time."""

from __future__ import annotations

import os


def test_the_replay_draws_the_dashboards_page_and_serves_a_class(dashboard_cache, atlas_home, tmp_path,
                                                                   bench_module):
    content_floor = bench_module("content_floor")
    cache = tmp_path / "cache.duckdb"
    os.link(dashboard_cache, cache)  # the app writes its notes file beside the cache: this test's own
    args = content_floor.parse_args(["--cache", str(cache), "--sessions", "2", "--pages", "insights",
                                     "--steps", "1", "--timeout", "120"])

    neurons, messages, captured = content_floor.prepare(args, tmp_path, report=False)
    with content_floor.three_servers(args, tmp_path, messages) as servers:
        found = content_floor.classes(args, servers, neurons, report=False)
        # the replay's page, drawn for a new session, is the dashboard's page of the captured neuron
        dashboard = content_floor.load.run_loop(
            content_floor.drawn(servers["dashboard"], "insights", captured, 120))
        replay = content_floor.load.run_loop(content_floor.drawn(servers["replay"], "insights", captured, 120))

    assert [(m.sessions, m.mode, m.page) for m in found] == [(2, "new", "insights"), (2, "kept", "insights")]
    for measured in found:
        assert set(measured.results) == {"dashboard", "replay", "trivial"}
        for result in measured.results.values():
            assert result.errors == []
            assert len(result.runs) == 2
            assert result.cpu_s > 0
    assert len(dashboard) > 20
    assert replay == dashboard

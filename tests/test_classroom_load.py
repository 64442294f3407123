"""bench/classroom_load.py in CI (issue 13): a teacher and 5 students in classroom mode on a real server over the small
dashboard cache follow the teacher to a neuron and each put an explanation on the class board. It asserts that
every student followed, no run failed and every explanation was stored and is on the board; never a time."""

from __future__ import annotations

import os


def test_five_students_follow_the_teacher_and_every_explanation_is_kept(dashboard_cache, atlas_home, tmp_path,
                                                                       bench_module):
    lesson = bench_module("classroom_load")
    cache = tmp_path / "cache.duckdb"
    os.link(dashboard_cache, cache)  # the app writes its notes file beside the cache: this test's own
    results = dashboard_cache.with_name(dashboard_cache.stem + ".results.duckdb")
    os.link(results, tmp_path / "cache.results.duckdb")

    problems = lesson.lesson_report(cache, students=5, lesson=1, timeout_s=120, report=False)

    assert problems == []

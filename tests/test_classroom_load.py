"""bench/classroom_load.py in CI (issue 13): a teacher and 5 students in classroom mode on a real server over the small
dashboard cache follow the teacher to a neuron and each put an explanation on the class board. It asserts that
every student followed, no run failed and every explanation was stored and is on the board; never a time."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_classroom_load", ROOT / "bench" / "classroom_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_five_students_follow_the_teacher_and_every_explanation_is_kept(dashboard_cache, atlas_home, tmp_path):
    lesson = _load_bench()
    cache = tmp_path / "cache.duckdb"
    os.link(dashboard_cache, cache)  # the app writes its notes file beside the cache: this test's own
    results = dashboard_cache.with_name(dashboard_cache.stem + ".results.duckdb")
    os.link(results, tmp_path / "cache.results.duckdb")

    problems = lesson.lesson_report(cache, students=5, lesson=1, timeout_s=120, report=False)

    assert problems == []

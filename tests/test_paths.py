"""Where a cache's files are, and which cache the dashboard opens first (core/paths.py)."""

from __future__ import annotations

from pathlib import Path

from core import paths
from core.cli import build_parser


def test_a_cache_is_three_files_named_after_one_path(tmp_path):
    cache = tmp_path / "model-corpus.duckdb"
    assert paths.results_path(cache) == tmp_path / "model-corpus.results.duckdb"
    assert paths.notes_path(cache) == tmp_path / "model-corpus.notes.duckdb"
    assert paths.temp_path(cache) == tmp_path / "model-corpus.duckdb.tmp"
    cache.write_bytes(b"r")
    assert paths.pipeline_files(cache) == (cache,)
    paths.results_path(cache).write_bytes(b"s")
    paths.notes_path(cache).write_bytes(b"n")
    copy = tmp_path / "copy.duckdb"
    paths.copy_cache(cache, copy)
    assert copy.read_bytes() == b"r" and paths.results_path(copy).read_bytes() == b"s"
    assert not paths.notes_path(copy).exists()  # the notes belong to whoever runs the dashboard


def test_default_cache_order(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    monkeypatch.setattr(paths, "REPO_DIR", tmp_path / "app")
    monkeypatch.setattr(paths, "DEMO_CACHE", tmp_path / "app" / "caches" / "demo.duckdb")
    assert paths.default_cache() is None
    (tmp_path / "app" / "caches").mkdir(parents=True)
    other = tmp_path / "app" / "caches" / "other.duckdb"
    other.write_bytes(b"")
    for part in ("other.notes.duckdb", "other.results.duckdb"):
        (tmp_path / "app" / "caches" / part).write_bytes(b"")
    assert paths.known_caches() == [other.resolve()]  # parts of a cache are not caches
    assert paths.default_cache() == other.resolve()
    paths.DEMO_CACHE.write_bytes(b"")
    assert paths.default_cache() == paths.DEMO_CACHE.resolve()
    last = tmp_path / "last.duckdb"
    last.write_bytes(b"")
    paths.remember_cache(last)
    assert paths.remembered_cache() == last and paths.default_cache() == last.resolve()
    paths.remember_cache(other)  # another cache chosen, then the first again: each choice is written
    assert paths.remembered_cache() == other
    paths.remember_cache(last)
    paths.remember_cache(last)  # asked again by every new session: still the one chosen
    assert paths.remembered_cache() == last
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "env.duckdb"))
    assert paths.default_cache() == (tmp_path / "env.duckdb").resolve()  # the env wins, even before it exists
    last.unlink()
    assert paths.remembered_cache() is None


def test_build_command_names_a_real_command():
    command = paths.build_command()
    assert command == f"python -m core demo --cache {Path('caches') / paths.DEMO_CACHE_NAME}"
    args = build_parser().parse_args(command.split()[3:])
    assert args.command == "demo" and args.cache == Path("caches") / paths.DEMO_CACHE_NAME

"""Where things are on disk: the files of one cache, the home folder, and which cache the dashboard opens.

A cache is addressed by one path, NAME.duckdb, and is made of up to three files (docs/DEVELOPING.md):
- NAME.duckdb: the recording (written only by `build`, as NAME.duckdb.tmp renamed into place);
- NAME.results.duckdb: what later stages add (explanations, scores, simulations, related tables, the LLM cache),
  written only by the command line;
- NAME.notes.duckdb: what people write in the dashboard, written only by the dashboard.

Nothing here imports torch or streamlit, so the dashboard can ask where caches are without loading a model.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[1]
"""The checkout (where app.py is); caches/ in it is where `make demo` writes the demo cache."""

CACHE_DIR_NAME = "caches"
"""Folder of caches: relative to the working directory for the command line, to REPO_DIR for the dashboard."""

DEMO_CACHE_NAME = "smollm2-135m-stdlib.duckdb"
"""File name of the demo cache (`python -m core demo`, the Makefile's CACHE)."""

DEMO_CACHE = REPO_DIR / CACHE_DIR_NAME / DEMO_CACHE_NAME
"""Where `make demo` builds the demo cache, as the dashboard looks for it."""

CACHE_ENV = "NEURON_ATLAS_CACHE"
"""Environment variable naming the cache the dashboard opens (wins over the one remembered from last time)."""

HOME_ENV = "NEURON_ATLAS_HOME"
"""Environment variable naming the home folder (converted models, the remembered cache); default
~/.cache/neuron-atlas."""

RESULTS_SUFFIX = ".results.duckdb"
NOTES_SUFFIX = ".notes.duckdb"


# --- the files of one cache -----------------------------------------------------------------------------------


def _stem(cache_path: str | Path) -> Path:
    path = Path(cache_path)
    return path.with_name(path.name.removesuffix(".duckdb"))


def results_path(cache_path: str | Path) -> Path:
    """NAME.results.duckdb: the explanations, scores, simulations, related tables and LLM answers of a cache."""
    stem = _stem(cache_path)
    return stem.with_name(stem.name + RESULTS_SUFFIX)


def notes_path(cache_path: str | Path) -> Path:
    """NAME.notes.duckdb: what people write in the dashboard for this cache."""
    stem = _stem(cache_path)
    return stem.with_name(stem.name + NOTES_SUFFIX)


def temp_path(path: str | Path) -> Path:
    """Where a file is written before it is renamed into place (PATH.tmp)."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def partial_dir(cache_path: str | Path) -> Path:
    """Where an unfinished build keeps its resumable progress."""
    return Path(str(cache_path) + ".partial")


def build_lock_path(cache_path: str | Path) -> Path:
    """The lock file a build of the cache holds while it runs (two builds of one cache would share its progress)."""
    return Path(str(cache_path) + ".build.lock")


def pipeline_files(cache_path: str | Path) -> tuple[Path, ...]:
    """The files the command line writes for a cache (recording, then results if there are any): what a copy of
    a cache must take along. The notes file belongs to whoever runs the dashboard, so it is not listed."""
    path = Path(cache_path)
    results = results_path(path)
    return (path, results) if results.exists() else (path,)


def copy_cache(source: Path, target: Path, *, link: bool = False) -> None:
    """Copy (or hard-link) a cache's recording and results to `target` (NAME.duckdb); the notes stay behind."""
    for part, to in zip(pipeline_files(source), (target, results_path(target)), strict=False):
        if link:
            os.link(part, to)
        else:
            shutil.copyfile(part, to)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns), None when the file is missing: changes when a new file is renamed into place."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


# --- the home folder and the cache the dashboard opens -----------------------------------------------------------


def model_home() -> Path:
    """The home folder: $NEURON_ATLAS_HOME, default ~/.cache/neuron-atlas (converted models live here)."""
    return Path(os.environ.get(HOME_ENV) or "~/.cache/neuron-atlas").expanduser()


def last_cache_file() -> Path:
    """The small file remembering the cache the dashboard opened last."""
    return model_home() / "last-cache.txt"


_REMEMBERED: dict[Path, str] = {}
"""What this process last wrote to each last-cache file: a dashboard asks on every new session."""


def remember_cache(path: Path) -> None:
    """Remember `path` so that `streamlit run app.py` alone opens it next time."""
    target = last_cache_file()
    if _REMEMBERED.get(target) == str(path):
        return
    try:
        if not (target.is_file() and target.read_text().strip() == str(path)):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{path}\n")
        _REMEMBERED[target] = str(path)
    except OSError as error:  # a read-only home must not break the app
        log.warning("cannot remember the cache in %s: %s", target, error)


def remembered_cache() -> Path | None:
    """The cache opened last, if that file still exists."""
    try:
        text = last_cache_file().read_text().strip()
    except OSError:
        return None
    return Path(text) if text and Path(text).is_file() else None


def _env_cache() -> Path | None:
    text = os.environ.get(CACHE_ENV, "").strip()
    return Path(text).expanduser() if text else None


def default_cache() -> Path | None:
    """The cache a new dashboard session opens: $NEURON_ATLAS_CACHE (even before it exists), then the last one
    used, then the demo cache, then any cache in caches/."""
    env = _env_cache()
    if env is not None:
        return env.resolve()
    for candidate in (remembered_cache(), DEMO_CACHE):
        if candidate is not None and candidate.is_file():
            return candidate.resolve()
    found = known_caches()
    return found[0] if found else None


def known_caches() -> list[Path]:
    """Finished caches: the env and remembered ones, then those in REPO_DIR/caches. Results and notes files are
    parts of a cache, not caches."""
    extra = [p for p in (_env_cache(), remembered_cache()) if p is not None]
    folder = REPO_DIR / CACHE_DIR_NAME
    listed = sorted(folder.glob("*.duckdb")) if folder.is_dir() else []
    found: list[Path] = []
    for path in [*extra, *listed]:
        resolved = path.resolve()
        if resolved.name.endswith((NOTES_SUFFIX, RESULTS_SUFFIX)) or not resolved.is_file() or resolved in found:
            continue
        found.append(resolved)
    return found


def build_command(path: Path | None = None) -> str:
    """The command that builds the demo cache (or the given one) from this checkout."""
    target = path or DEMO_CACHE
    try:
        shown = target.relative_to(REPO_DIR)
    except ValueError:
        shown = target
    return f"python -m core demo --cache {shown}"


NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A write that found no room: a full disk, a full quota, a file size limit."""
_NO_ROOM_TEXTS = tuple(os.strerror(code) for code in NO_ROOM_ERRNOS)
"""The same as the system words them (DuckDB reports them inside its own errors)."""
_DUCKDB_FILE = re.compile(r'(?:write|open|create) file "([^"]+)"')


def no_room(error: BaseException) -> str | None:
    """What could not be written (a path, else the system's words) when `error`, or an error it came from, is a
    write that found no room on the disk; None for any other error."""
    seen: BaseException | None = error
    for _ in range(20):  # the chain of causes is short; a bound keeps a strange one from looping
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in NO_ROOM_ERRNOS:
            return str(seen.filename) if seen.filename else f"a file ({seen.strerror})"
        text = str(seen)
        if any(words in text for words in _NO_ROOM_TEXTS):
            found = _DUCKDB_FILE.search(text)
            return found.group(1) if found else f"a file ({next(w for w in _NO_ROOM_TEXTS if w in text)})"
        seen = seen.__cause__ or seen.__context__
    return None

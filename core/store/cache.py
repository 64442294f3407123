"""A cache opened for one purpose: who may read and write which of its files.

| opener | recording | results | notes | used by |
|---|---|---|---|---|
| `RecordingWriter.create(tmp)` (recording.py) | writes | - | - | `build` |
| `open_results_writer(path)` | reads | writes | - | `explain`, `score`, `related`, `migrate` |
| `open_reader(path)` | reads | reads | - | `info`, `show`, `related --show`, benchmarks |
| `DashboardCache(path)` | reads | reads | reads and writes | the dashboard |

A results or notes file that does not exist yet reads as empty (schema.py's stand-in); results computed from an
earlier build of the same path (their recording_id is not the recording's build_id) read as empty too, and the
next writer moves them aside. Every write of the command line goes through the one ResultsWriter it opened, on a
working copy published by rename (core/store/publish.py), so readers never wait for it nor see half of a write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from core.paths import file_signature, notes_path, partial_dir, results_path, temp_path
from core.store.database import Database, StoreError, reading
from core.store.explanations import ExplanationQueries, ExplanationWrites
from core.store.migrate import OldLayoutError, migrate_cache, old_layout_message, upgrade_notes
from core.store.notes import NotesStore
from core.store.publish import ResultsFiles, WorkingCopy, WriterLock
from core.store.related import RelatedQueries, RelatedWrites
from core.store.responses import ResponseCache
from core.store.schema import (
    NOTES,
    OLDEST_READABLE_VERSION,
    RECORDING,
    RESULTS,
    SCHEMA_VERSION,
    has_table,
    read_meta,
)
from core.store.tables import NeuronTableQueries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheInfo:
    """A cache's summary (what `python -m core info` prints)."""

    path: str
    model: str
    architecture: str
    corpus: str
    layers: int
    neurons_per_layer: int
    tokens: int
    excerpts: int
    excerpt_len: int
    neurons_recorded: int
    explanations: int
    scores: int
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class CacheReader(ExplanationQueries, RelatedQueries, NeuronTableQueries):
    """Reads of the recording and the results (RelatedQueries brings the recording's own reads)."""

    def info(self) -> CacheInfo:
        """The cache's model, corpus, sizes and counts."""
        meta = self.meta()
        explanations, scores = self.explanation_counts()
        return CacheInfo(
            path=str(self.path), model=meta.get("model", "?"), architecture=meta.get("architecture", "?"),
            corpus=meta.get("corpus", "?"), layers=int(meta.get("layers", 0)),
            neurons_per_layer=int(meta.get("neurons_per_layer", 0)), tokens=int(meta.get("tokens", 0)),
            excerpts=int(meta.get("excerpts", 0)), excerpt_len=int(meta.get("excerpt_len", 0)),
            neurons_recorded=self.recorded_neurons(), explanations=explanations, scores=scores,
            settings=meta.get("settings", {}),
        )


class ResultsWriter(CacheReader, ExplanationWrites, RelatedWrites):
    """The command line's one way to write a cache's results (it reads everything a reader reads). It writes a
    private working copy and publishes it for readers as it goes and on close (core/store/publish.py)."""

    def __init__(self, db: Database, working: WorkingCopy, lock: WriterLock) -> None:
        super().__init__(db)
        self.responses = ResponseCache(db, RESULTS)
        """LLM answers of the command line's runs (core/llm.py)."""
        self.working = working
        self._lock = lock
        db.after_commit = working.committed

    def checkpoint(self) -> None:
        """Publish the results now (readers see everything committed so far)."""
        self.working.publish()

    def close(self) -> None:
        """Publish what is not published yet, close, and let the next writer in."""
        if self._lock is None:
            return
        try:
            self.working.finish(close=self._db.close)
        finally:
            self._lock.release()
            self._lock = None  # type: ignore[assignment]


def open_reader(path: str | Path) -> CacheReader:
    """The cache at `path` for reading (StoreError with what to do when it cannot be read)."""
    return CacheReader(_connect(Path(path), lambda db: attach_pipeline_files(db)))


def open_results_writer(path: str | Path) -> ResultsWriter:
    """The cache at `path` for writing results (the recording stays read-only), one writer at a time (StoreError
    naming the other one). A cache of schema version 1 is split first (a version-2 recording is used as it is);
    results of an earlier build of this path are moved aside; a working copy a killed writer left is resumed."""
    path = Path(path)
    try:
        db = _connect(path, attach_recording)
    except OldLayoutError:
        migrate_cache(path)
        log.warning("%s was in the one-file layout of schema version 1; it is now NAME.duckdb plus %s (schema "
                    "version %d)", path, results_path(path).name, SCHEMA_VERSION)
        db = _connect(path, attach_recording)
    try:
        lock = WriterLock(ResultsFiles.of(path), path)
    except BaseException:
        db.close()
        raise
    try:
        working = WorkingCopy(db, path, str(read_meta(db.cursor(), RECORDING).get("build_id", "")))
        working.open()
    except BaseException:
        db.close()
        lock.release()
        raise
    return ResultsWriter(db, working, lock)


def _connect(path: Path, attach: Callable[[Database], object]) -> Database:
    """A Database of `path` with `attach(db)` done, or closed again when that fails."""
    db = Database(path)
    try:
        attach(db)
    except BaseException:
        db.close()
        raise
    return db


class NotesError(StoreError):
    """The notes file cannot be opened: in use by another process, or `damaged` (it is never changed then)."""

    def __init__(self, message: str, *, damaged: bool) -> None:
        super().__init__(message)
        self.damaged = damaged


def _attach_dashboard(db: Database) -> None:
    attach_pipeline_files(db)
    notes = notes_path(db.path)
    try:
        db.attach(NOTES, notes, read_only=False)
        upgrade_notes(db.cursor())
    except (StoreError, duckdb.Error) as error:
        detail = " ".join(str(error).split())
        if "in use by another process" in detail or "lock" in detail.lower():
            raise NotesError(f"the notes file {notes} (people's suggestions and ratings) is in use by another process "
                             "(a second dashboard on this cache?): stop that one, then try again", damaged=False
                             ) from error
        raise NotesError(f"the notes file {notes} (people's suggestions and ratings) cannot be read ({detail}); it is "
                         "left as it is: restore it from a copy, or set it aside and start new notes", damaged=True
                         ) from error


def set_notes_aside(cache_path: str | Path) -> Path:
    """Rename a damaged notes file (and its log) to NAME.notes.damaged-DATE.duckdb, kept beside the cache; the
    dashboard then starts new notes. Returns where it went."""
    notes = notes_path(cache_path)
    aside = notes.with_name(f"{notes.name.removesuffix('.duckdb')}.damaged-{time.strftime('%Y%m%d-%H%M%S')}.duckdb")
    os.replace(notes, aside)
    with contextlib.suppress(FileNotFoundError):
        os.replace(f"{notes}.wal", f"{aside}.wal")
    log.warning("set the damaged notes file %s aside as %s", notes, aside)
    return aside


class DashboardCache:
    """The dashboard's view of one cache: a reader of recording and results and the notes store, sharing one
    connection, re-attached when a build or a command line run replaces the recording or results file."""

    def __init__(self, path: str | Path) -> None:
        self.signature = signatures(Path(path))
        """The attached recording and results files on disk (changes when either is replaced)."""
        db = _connect(Path(path), _attach_dashboard)
        self._db = db
        self._lock = threading.Lock()
        self.reader = CacheReader(db)
        self.notes = NotesStore(db)
        """The notes file (created, or upgraded, on first use): the dashboard's one write surface."""

    def refresh(self) -> None:
        """Attach the recording and results again if either file changed on disk (the notes stay attached);
        StoreError when the new files cannot be read (the next call tries again)."""
        now = signatures(self._db.path)
        if now == self.signature or now[0] is None:  # unchanged, or the recording is being replaced right now
            return
        with self._lock:
            if now == self.signature:
                return
            log.info("%s changed on disk; attaching it again", self._db.path)
            for name in (RECORDING, RESULTS):
                if name in self._db.files:
                    self._db.detach(name)
            attach_pipeline_files(self._db)
            self.signature = now

    def close(self) -> None:
        self._db.close()


def attach_pipeline_files(db: Database) -> None:
    """Attach the recording and the published results of `db.path`, both read-only (readers)."""
    _attach_results(db, attach_recording(db))


def attach_recording(db: Database) -> str:
    """Attach the recording of `db.path` read-only after checking what it is; returns its build id."""
    path = db.path
    if not path.exists():
        hint = " (a build of it was interrupted: run the same build command again)" if _has_partial(path) else ""
        raise StoreError(f"no cache at {path}{hint}; build one with `python -m core build --cache {path}`")
    db.attach(RECORDING, path, read_only=True)
    cur = db.cursor()
    with reading(path):
        if not has_table(cur, RECORDING, "meta"):
            raise StoreError(f"{path} is not a Neuron Atlas cache (no meta table)")
        meta = read_meta(cur, RECORDING)
    version = int(meta.get("schema_version", 1))
    if version < OLDEST_READABLE_VERSION:
        raise OldLayoutError(old_layout_message(path, version))
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer Neuron Atlas (schema version {version}; this checkout reads "
                         f"{SCHEMA_VERSION}): update the checkout")
    return str(meta.get("build_id", ""))


def _attach_results(db: Database, build_id: str) -> None:
    """Attach the published NAME.results.duckdb read-only, or an empty stand-in when there is none (or none of
    this build: the next writer moves those aside)."""
    file = results_path(db.path)
    if file.exists():
        db.attach(RESULTS, file, read_only=True)
        with reading(file):
            recording_id = read_meta(db.cursor(), RESULTS).get("recording_id")
        if recording_id == build_id:
            return
        db.detach(RESULTS)
        log.warning("%s holds results of an earlier build of %s; they are not shown (run explain or related "
                    "again)", file, db.path)
    db.attach(RESULTS, None, read_only=True)


def signatures(path: Path) -> tuple[object, ...]:
    """What identifies the recording and results files on disk now (changes when either is replaced)."""
    return (file_signature(path), file_signature(results_path(path)))


def _has_partial(path: Path) -> bool:
    return temp_path(path).exists() or partial_dir(path).exists()

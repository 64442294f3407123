"""A cache opened for one purpose: who may read and write which of its files.

| opener | recording | results | notes | used by |
|---|---|---|---|---|
| `RecordingWriter.create(tmp)` (recording.py) | writes | - | - | `build` |
| `open_results_writer(path)` | reads | writes | - | `explain`, `score`, `related`, `migrate` |
| `open_reader(path)` | reads | reads | - | `info`, `show`, `related --show`, benchmarks |
| `DashboardCache(path)` | reads | reads | reads and writes | the dashboard |

A results or notes file that does not exist yet reads as empty (schema.py's stand-in); results computed from an
earlier build of the same path (their recording_id is not the recording's build_id) read as empty too, and the
next writer moves them aside. Every write of the command line goes through the one ResultsWriter it opened:
phase 2 of the plan turns it into a working copy published by rename on close (docs/DEVELOPING.md).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.paths import file_signature, notes_path, partial_dir, results_path, temp_path
from core.store.database import Database, StoreError
from core.store.explanations import ExplanationQueries, ExplanationWrites
from core.store.migrate import OldLayoutError, migrate_cache, old_layout_message, upgrade_notes
from core.store.notes import NotesStore
from core.store.related import RelatedQueries, RelatedWrites
from core.store.responses import ResponseCache
from core.store.schema import (
    NOTES,
    OLDEST_READABLE_VERSION,
    RECORDING,
    RESULTS,
    SCHEMA_VERSION,
    create_tables,
    has_table,
    read_meta,
    write_meta,
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
    """The command line's one way to write a cache's results (it reads everything a reader reads)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.responses = ResponseCache(db, RESULTS)
        """LLM answers of the command line's runs (core/llm.py)."""

    def checkpoint(self) -> None:
        """Write the results into their file now."""
        self._db.checkpoint(RESULTS)


def open_reader(path: str | Path) -> CacheReader:
    """The cache at `path` for reading (StoreError with what to do when it cannot be read)."""
    return CacheReader(_connect(Path(path), lambda db: attach_pipeline_files(db, writable=False)))


def open_results_writer(path: str | Path) -> ResultsWriter:
    """The cache at `path` for writing results (the recording stays read-only). A cache of schema version 1 is
    split first (a version-2 recording is used as it is); results of an earlier build of this path are moved
    aside."""
    path = Path(path)
    try:
        return ResultsWriter(_connect(path, lambda db: attach_pipeline_files(db, writable=True)))
    except OldLayoutError:
        migrate_cache(path)
        log.warning("%s was in the one-file layout of schema version 1; it is now NAME.duckdb plus %s (schema "
                    "version %d)", path, results_path(path).name, SCHEMA_VERSION)
    return ResultsWriter(_connect(path, lambda db: attach_pipeline_files(db, writable=True)))


def _connect(path: Path, attach: Callable[[Database], None]) -> Database:
    """A Database of `path` with `attach(db)` done, or closed again when that fails."""
    db = Database(path)
    try:
        attach(db)
    except BaseException:
        db.close()
        raise
    return db


def _attach_dashboard(db: Database) -> None:
    attach_pipeline_files(db, writable=False)
    db.attach(NOTES, notes_path(db.path), read_only=False)
    upgrade_notes(db.cursor())


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
            attach_pipeline_files(self._db, writable=False)
            self.signature = now

    def close(self) -> None:
        self._db.close()


def attach_pipeline_files(db: Database, *, writable: bool) -> None:
    """Attach the recording (read-only) and the results (read-write when `writable`) of `db.path`."""
    path = db.path
    if not path.exists():
        hint = " (a build of it was interrupted: run the same build command again)" if _has_partial(path) else ""
        raise StoreError(f"no cache at {path}{hint}; build one with `python -m core build --cache {path}`")
    db.attach(RECORDING, path, read_only=True)
    cur = db.cursor()
    if not has_table(cur, RECORDING, "meta"):
        raise StoreError(f"{path} is not a Neuron Atlas cache (no meta table)")
    meta = read_meta(cur, RECORDING)
    version = int(meta.get("schema_version", 1))
    if version < OLDEST_READABLE_VERSION:
        raise OldLayoutError(old_layout_message(path, version))
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer Neuron Atlas (schema version {version}; this checkout reads "
                         f"{SCHEMA_VERSION}): update the checkout")
    _attach_results(db, str(meta.get("build_id", "")), writable)


def _attach_results(db: Database, build_id: str, writable: bool) -> None:
    """Attach NAME.results.duckdb, or a stand-in when there is none (or none of this build) and nothing writes."""
    file = results_path(db.path)
    if file.exists():
        db.attach(RESULTS, file, read_only=not writable)
        if read_meta(db.cursor(), RESULTS).get("recording_id") == build_id:
            if writable:
                create_tables(db.cursor(), RESULTS)
            return
        db.detach(RESULTS)
        if not writable:
            log.warning("%s holds results of an earlier build of %s; they are not shown (run explain or related "
                        "again)", file, db.path)
            db.attach(RESULTS, None, read_only=True)
            return
        stale = file.with_name(f"{file.name.removesuffix('.duckdb')}.stale-{time.strftime('%Y%m%d-%H%M%S')}.duckdb")
        os.replace(file, stale)
        log.warning("%s held results of an earlier build; moved to %s", file, stale)
    if not writable:
        db.attach(RESULTS, None, read_only=True)
        return
    db.attach(RESULTS, file, read_only=False)
    cur = db.cursor()
    create_tables(cur, RESULTS)
    write_meta(cur, RESULTS, {"recording_id": build_id})


def signatures(path: Path) -> tuple[object, ...]:
    """What identifies the recording and results files on disk now (changes when either is replaced)."""
    return (file_signature(path), file_signature(results_path(path)))


def _has_partial(path: Path) -> bool:
    return temp_path(path).exists() or partial_dir(path).exists()

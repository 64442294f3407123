"""One DuckDB connection with a cache's files attached: the ground every query module stands on.

The connection itself is in memory; NAME.duckdb, NAME.results.duckdb and NAME.notes.duckdb are ATTACHed under the
names in core/store/schema.py, each read-only or read-write as the opener decides. A file that is absent is
replaced by an empty in-memory stand-in with the same tables, so a query never meets a missing table: it finds
nothing. Each call runs on its own cursor (one shared connection fails under threads, NOTES.md), and writes take
one lock, so sessions and worker threads can share a Database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import duckdb

from core.store.schema import DATABASES, create_tables


class StoreError(Exception):
    """A cache that cannot be opened, read or written; the message is one line saying what to do."""


def lock_message(path: Path, error: Exception) -> str:
    """One line for a file DuckDB would not open: in use elsewhere (its lock), or anything else as it is."""
    if "lock" in str(error).lower():
        return (f"{path} is in use by another process (a dashboard or another command); stop it, or work on a copy "
                "of the cache")
    return (f"cannot open {path} ({' '.join(str(error).split())}): it is damaged or not a DuckDB file; choose the "
            "right file, restore it from a copy, or build it again")


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Around the first reads of a file just attached: DuckDB reads blocks lazily, so a file cut short or
    overwritten fails here, not at ATTACH; that becomes the StoreError of a file that cannot be opened."""
    try:
        yield
    except duckdb.Error as error:
        raise StoreError(lock_message(path, error)) from error


def sql_path(path: Path) -> str:
    """A path for ATTACH, which takes no bound parameters: a quote is doubled as in SQL."""
    return str(path).replace("'", "''")


class Database:
    """An in-memory DuckDB connection with the files of the cache at `path` attached by name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The cache's address (NAME.duckdb), for messages."""
        self._con = duckdb.connect()
        self._write_lock = threading.Lock()
        self.files: dict[str, Path | None] = {}
        """Attached name -> its file, or None for an empty stand-in."""
        self.after_commit: Callable[[], None] | None = None
        """Called after each committed transaction, outside the write lock (the results writer publishes there)."""
        self.kept: dict[str, Any] = {}
        """Facts of the attached files that never change while they stay attached (a recording's shape), emptied
        whenever a file is attached or detached."""

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one call (threads must not share one)."""
        return self._con.cursor()

    def attach(self, name: str, file: Path | None, *, read_only: bool) -> None:
        """Attach `file` as `name` (a file opened read-write gets any missing tables); None attaches an empty
        stand-in with the tables of `name`. StoreError when DuckDB refuses the file."""
        if name not in DATABASES:
            raise ValueError(f"unknown database {name!r}")
        cur = self.cursor()
        if file is None:
            cur.execute(f"ATTACH ':memory:' AS {name}")
            create_tables(cur, name)
        else:
            mode = " (READ_ONLY)" if read_only else ""
            try:
                cur.execute(f"ATTACH '{sql_path(file)}' AS {name}{mode}")
            except duckdb.Error as error:
                raise StoreError(lock_message(file, error)) from error
        self.files[name] = file
        self.kept.clear()

    def detach(self, name: str) -> None:
        """Detach `name` (to attach a newer file in its place)."""
        with self._write_lock:
            self.cursor().execute(f"DETACH {name}")
        self.files.pop(name, None)
        self.kept.clear()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside BEGIN/COMMIT (rolled back on error), one writer at a time."""
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        if self.after_commit is not None:
            self.after_commit()

    @contextmanager
    def exclusive(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor while no transaction can start (to checkpoint a file and copy it with nothing in between)."""
        with self._write_lock:
            yield self.cursor()

    def checkpoint(self, name: str) -> None:
        """Write `name`'s changes into its file (so a copy or a rename carries them)."""
        with self._write_lock:
            self.cursor().execute(f"CHECKPOINT {name}")

    def close(self) -> None:
        self._con.close()


class Queries:
    """Base of the query groups (recording, explanations, related, tables, notes): they share one Database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.path = db.path
        """The cache's address (NAME.duckdb)."""

    def close(self) -> None:
        """Close the connection (every file attached to it)."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

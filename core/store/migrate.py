"""Bringing older caches to the current schema version (core/store/schema.py lists the versions).

- A version-1 cache (one file with the recording and every result) is split: its results go to a new
  NAME.results.duckdb, its recording (activations packed) to a new NAME.duckdb, each written as PATH.tmp and renamed
  into place, results first, so a stop at any point leaves a cache that the next run migrates again from the start.
  The command line does this when it opens a cache for writing, or `python -m core migrate CACHE`; a read-only open
  of such a cache raises OldLayoutError, whose message says what to run.
- A version-2 recording (FLOAT[] activations) reads as it is; `python -m core migrate CACHE` rewrites it with the
  activations packed (core/packing.py), as PATH.tmp renamed into place, with the same build id, so its results stay
  its results. Nothing does this on its own: it rewrites the whole recording (minutes for the default model).
- Older notes files are upgraded in place by their only writer (the dashboard, or `migrate`): later columns are
  added and missing tables (the classroom's) created.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa

from core.packing import DESCRIPTION, DESCRIPTION_EXACT
from core.paths import results_path, temp_path
from core.store.database import StoreError, lock_message, sql_path
from core.store.recording import insert_arrow, pack_activations
from core.store.schema import (
    NOTES,
    RECORDING,
    RESULTS,
    SCHEMA_VERSION,
    TABLES,
    create_tables,
    has_table,
    read_meta,
    read_version,
    write_meta,
)

log = logging.getLogger(__name__)

_OLD = "old"
"""Where the version-1 file is attached while it is split."""


class OldLayoutError(StoreError):
    """A cache in an older layout, opened where it cannot be migrated (read-only); the message says what to run."""


PACK_BATCH_ROWS = 65_536
"""neuron_excerpts rows packed at a time by a migration (about 17 MB of float lists for excerpts of 64 tokens)."""


def old_layout_message(path: Path, version: int) -> str:
    """The one line a reader of a cache that must be migrated first gets."""
    return (f"{path} is a cache of schema version {version} (one file for everything); run `python -m core migrate "
            f"{path}` once to split it into the current layout (version {SCHEMA_VERSION})")


def cache_version(path: Path) -> int:
    """The schema version of the recording file at `path` (StoreError when it is not a cache)."""
    con = duckdb.connect()
    try:
        _attach_old(con, path)
        if not has_table(con, _OLD, "meta"):
            raise StoreError(f"{path} is not a Neuron Atlas cache (no meta table)")
        return read_version(con, _OLD)
    finally:
        con.close()


def _attach_old(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the cache to migrate read-only as _OLD; a lock held by another process is one clear StoreError."""
    try:
        con.execute(f"ATTACH '{sql_path(path)}' AS {_OLD} (READ_ONLY)")
    except duckdb.Error as error:
        raise StoreError(lock_message(path, error)) from error


def migrate_cache(path: Path) -> bool:
    """Bring the cache at `path` to SCHEMA_VERSION: split a version-1 cache into recording and results files, pack
    the activations of a version-2 recording. False when there was nothing to do."""
    version = cache_version(path)
    if version >= SCHEMA_VERSION:
        return False
    if version >= 2:
        _pack_recording(path)
        return True
    started = time.perf_counter()
    recording_tmp, results_tmp = temp_path(path), temp_path(results_path(path))
    for tmp in (recording_tmp, results_tmp):
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".wal").unlink(missing_ok=True)
    build_id = uuid.uuid4().hex
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{sql_path(path)}' AS {_OLD} (READ_ONLY)")
        old_meta = read_meta(con, _OLD)
        con.execute(f"ATTACH '{sql_path(results_tmp)}' AS {RESULTS}")
        _copy_tables(con, RESULTS)
        related = {"related": old_meta["related"]} if "related" in old_meta else {}
        write_meta(con, RESULTS, {"recording_id": build_id, **related})
        con.execute(f"CHECKPOINT {RESULTS}")
        con.execute(f"DETACH {RESULTS}")
        con.execute(f"ATTACH '{sql_path(recording_tmp)}' AS {RECORDING}")
        _copy_tables(con, RECORDING, exact=False)  # version 1 had no imports
        kept = {k: v for k, v in old_meta.items() if k not in ("related", "schema_version")}
        write_meta(con, RECORDING, {**kept, "build_id": build_id, "activation_encoding": DESCRIPTION})
        con.execute(f"CHECKPOINT {RECORDING}")
        con.execute(f"DETACH {RECORDING}")
    finally:
        con.close()
    # results first: until the recording is renamed the old file is still the cache, and a rerun starts over
    os.replace(results_tmp, results_path(path))
    os.replace(recording_tmp, path)
    log.info("migrated %s to schema version %d in %.0f s", path, SCHEMA_VERSION, time.perf_counter() - started)
    return True


def _pack_recording(path: Path) -> None:
    """Rewrite a version-2 recording with its activations packed, keeping every meta key (the build id with it)."""
    started = time.perf_counter()
    recording_tmp = temp_path(path)
    recording_tmp.unlink(missing_ok=True)
    Path(str(recording_tmp) + ".wal").unlink(missing_ok=True)
    con = duckdb.connect()
    try:
        _attach_old(con, path)
        old_meta = read_meta(con, _OLD)
        con.execute(f"ATTACH '{sql_path(recording_tmp)}' AS {RECORDING}")
        exact = "imported" in old_meta  # an import keeps published values exactly, as a new import does
        _copy_tables(con, RECORDING, exact=exact)
        kept = {k: v for k, v in old_meta.items() if k != "schema_version"}
        write_meta(con, RECORDING, {**kept, "activation_encoding": DESCRIPTION_EXACT if exact else DESCRIPTION})
        con.execute(f"CHECKPOINT {RECORDING}")
        con.execute(f"DETACH {RECORDING}")
    finally:
        con.close()
    os.replace(recording_tmp, path)
    log.info("packed the activations of %s (schema version %d) in %.0f s", path, SCHEMA_VERSION,
             time.perf_counter() - started)


def _copy_tables(con: duckdb.DuckDBPyConnection, database: str, *, exact: bool = False) -> None:
    """Create `database`'s tables and copy in the rows of each one the old file has (meta is written apart);
    activations of neuron_excerpts are packed on the way (as float32 when `exact`)."""
    create_tables(con, database)
    for name in TABLES[database]:
        if name == "neuron_excerpts" and has_table(con, _OLD, name):
            _copy_packed(con, database, exact)
        elif name != "meta" and has_table(con, _OLD, name):
            con.execute(f"INSERT INTO {database}.{name} BY NAME SELECT * FROM {_OLD}.{name}")


def _copy_packed(con: duckdb.DuckDBPyConnection, database: str, exact: bool) -> None:
    """Copy neuron_excerpts in batches, packing float-list activations (packed ones are kept). The scan keeps the
    old file's row order (DuckDB preserves insertion order), which is sorted by neuron for the zone maps."""
    columns = ", ".join(_NEURON_EXCERPT_COLUMNS)
    reader = con.cursor().sql(f"SELECT {columns} FROM {_OLD}.neuron_excerpts").to_arrow_reader(PACK_BATCH_ROWS)
    writer = con.cursor()
    for batch in reader:
        insert_arrow(writer, database, "neuron_excerpts", pack_activations(pa.Table.from_batches([batch]), exact=exact))


_NEURON_EXCERPT_COLUMNS = ("layer", "neuron", "excerpt_id", "kind", "rank", "quantile_bin", "split", "max_activation",
                           "activations")
"""neuron_excerpts' columns in schema order (a version-1 file may hold them in another)."""


def upgrade_notes(cur: duckdb.DuckDBPyConnection) -> None:
    """Bring the attached, writable notes file to the current version, in place (its writer calls this)."""
    if read_version(cur, NOTES) < 2 and _has_column(cur, NOTES, "live_simulations", "normalized_activations"):
        # version 1 called the simulator's predictions normalized_activations; they are normalized_predictions
        cur.execute(f"ALTER TABLE {NOTES}.live_simulations RENAME COLUMN normalized_activations "
                    "TO normalized_predictions")
    create_tables(cur, NOTES)
    # notes files written before live scores recorded whether their author saw the scoring excerpts (the column is
    # added whatever the version: version-2 notes files exist with and without it)
    cur.execute(f"ALTER TABLE {NOTES}.live_scores ADD COLUMN IF NOT EXISTS author_saw_score_excerpts BOOLEAN")
    write_meta(cur, NOTES, {"schema_version": SCHEMA_VERSION})


def _has_column(cur: duckdb.DuckDBPyConnection, database: str, table: str, column: str) -> bool:
    row = cur.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = ? AND table_name = ? AND column_name = ?",
        [database, table, column],
    ).fetchone()
    return bool(row and row[0])

"""The cache's storage: the only package that knows the DuckDB schema and writes SQL.

Where to look
- schema.py: the tables of the three files (recording, results, notes) and the schema version.
- cache.py: who opens what (`open_reader`, `open_results_writer`, `DashboardCache`) and CacheInfo.
- recording.py, explanations.py, related.py, tables.py, notes.py: the queries, one module per stage; each holds
  the reads of its tables and the writes its stage may make.
- migrate.py: older caches brought to the current version.
- database.py: the connection the query modules share, StoreError.
File names of a cache are in core/paths.py.
"""

from core.store.cache import (
    CacheInfo,
    CacheReader,
    DashboardCache,
    NotesError,
    ResultsWriter,
    open_reader,
    open_results_writer,
    set_notes_aside,
    signatures,
)
from core.store.database import StoreError
from core.store.migrate import OldLayoutError, cache_version, migrate_cache
from core.store.notes import NotesQueries, NotesStore
from core.store.recording import RecordingWriter
from core.store.responses import ResponseCache
from core.store.schema import SCHEMA_VERSION
from core.store.tables import NEURON_ORDERS, like_pattern, neuron_table_filter

__all__ = [
    "NEURON_ORDERS",
    "SCHEMA_VERSION",
    "CacheInfo",
    "CacheReader",
    "DashboardCache",
    "NotesError",
    "NotesQueries",
    "NotesStore",
    "OldLayoutError",
    "RecordingWriter",
    "ResponseCache",
    "ResultsWriter",
    "StoreError",
    "cache_version",
    "like_pattern",
    "migrate_cache",
    "neuron_table_filter",
    "open_reader",
    "open_results_writer",
    "set_notes_aside",
    "signatures",
]

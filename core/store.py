"""The cache: one DuckDB file per (model, corpus) build, plus a notes file the dashboard writes.

This module owns the schema and every SQL statement; the rest of core goes through `Store`.

Files
- ``NAME.duckdb``: written by the command line only (build, explain, score, related). A build writes
  ``NAME.duckdb.tmp`` and renames it over ``NAME.duckdb`` when finished, so a reader never sees a
  half-written cache and a dashboard can keep reading the old file meanwhile.
- ``NAME.notes.duckdb``: what people write in the dashboard (suggestions, ratings, live scores). The
  dashboard process is its only writer, so it never fights the command line for a lock.

A reader opens an in-memory connection and attaches the cache read-only as ``cache`` (and the notes
file read-write as ``notes``); each call runs on its own cursor, so many threads can share a Store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from core.packing import decode_tuple
from core.types import (
    Disagreement,
    Excerpt,
    ExcerptKind,
    ExcerptSimulation,
    ExplanationRecord,
    ExplanationStatus,
    HumanRating,
    LayerScores,
    LiveScore,
    LiveSimulation,
    NeuronBestScore,
    NeuronExcerpt,
    NeuronId,
    NeuronRow,
    NeuronStats,
    Rating,
    RelatedNeuron,
    RelatedNeuronKind,
    RelatedToken,
    RelatedTokenKind,
    Scores,
    Split,
    Suggestion,
    TokenMean,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class StoreError(Exception):
    """A cache that cannot be opened or read; the message says what to do."""


# --- schema -----------------------------------------------------------------------------------------
# Each entry is created with CREATE ... IF NOT EXISTS when a cache is opened for writing, so a cache
# built by an older version gains later tables (explanations, related, ...) on its next write.

CACHE_TABLES: dict[str, str] = {
    "meta": """
        key VARCHAR PRIMARY KEY,
        value JSON NOT NULL""",
    "excerpts": """
        excerpt_id INTEGER PRIMARY KEY,
        token_ids INTEGER[] NOT NULL,
        tokens VARCHAR[] NOT NULL,
        source VARCHAR""",
    "vocab": """
        token_id INTEGER PRIMARY KEY,
        token VARCHAR NOT NULL,
        count BIGINT NOT NULL""",
    "neuron_stats": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        max_activation FLOAT NOT NULL,
        min_activation FLOAT NOT NULL,
        mean DOUBLE NOT NULL,
        variance DOUBLE NOT NULL,
        skewness DOUBLE NOT NULL,
        kurtosis DOUBLE NOT NULL,
        density DOUBLE NOT NULL,
        hist_edges FLOAT[] NOT NULL,
        hist_counts BIGINT[] NOT NULL,
        quantile_edges FLOAT[] NOT NULL,
        PRIMARY KEY (layer, neuron)""",
    # one row per (neuron, excerpt) and reason; rows are inserted sorted by (layer, neuron) so the
    # zone maps make a per-neuron read touch a few row groups without an index; activations are packed by
    # core.packing (12 bits each; FLOAT[] in caches built before it, which decode_tuple also reads)
    "neuron_excerpts": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        excerpt_id INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        rank SMALLINT NOT NULL,
        quantile_bin TINYINT,
        split VARCHAR NOT NULL,
        max_activation FLOAT NOT NULL,
        activations BLOB NOT NULL""",
    "token_means": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        token_id INTEGER NOT NULL,
        count BIGINT NOT NULL,
        mean_activation FLOAT NOT NULL""",
    # LLM answers by sha256 of the full request (core/llm.py); also created in the notes file for the dashboard
    "llm_cache": """
        key VARCHAR PRIMARY KEY,
        endpoint VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        response JSON NOT NULL,
        created_at TIMESTAMP DEFAULT current_timestamp""",
    # one row per explain run of a neuron (core/explain.py); failed runs keep their reason and are replaced by
    # the next run's result; ids are max + 1 under the Store's write lock
    "explanations": """
        explanation_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        text VARCHAR,
        explainer VARCHAR NOT NULL,
        model VARCHAR,
        prompt_version VARCHAR,
        simulator VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        failure VARCHAR,
        candidates SMALLINT NOT NULL,
        calibration_score DOUBLE,
        created_at TIMESTAMP NOT NULL""",
    # scores of an explanation on the SCORE-split excerpts, per simulator (NULL = undefined)
    "scores": """
        explanation_id BIGINT NOT NULL,
        simulator VARCHAR NOT NULL,
        score_all DOUBLE,
        score_top DOUBLE,
        score_random DOUBLE,
        tokens INTEGER NOT NULL,
        PRIMARY KEY (explanation_id, simulator)""",
    # the simulated activations (0-10 scale) of every token of every scored excerpt
    "simulations": """
        explanation_id BIGINT NOT NULL,
        simulator VARCHAR NOT NULL,
        excerpt_id INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        split VARCHAR NOT NULL,
        normalized_predictions FLOAT[] NOT NULL,
        score DOUBLE""",
    # related tokens and neurons (core/related.py, formulas in docs/related.md); rows are written one layer at
    # a time sorted by (neuron, kind, rank), together with that layer's row in related_layers
    "related_tokens": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        rank SMALLINT NOT NULL,
        token_id INTEGER NOT NULL,
        value FLOAT NOT NULL""",
    "related_neurons": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        rank SMALLINT NOT NULL,
        other_layer SMALLINT NOT NULL,
        other_neuron INTEGER NOT NULL,
        strength FLOAT NOT NULL""",
    "related_layers": """
        layer SMALLINT NOT NULL,
        finished_at TIMESTAMP NOT NULL""",
    # every token of the model's vocabulary with its display text (vocab holds only the corpus's tokens)
    "model_vocab": """
        token_id INTEGER PRIMARY KEY,
        token VARCHAR NOT NULL""",
}


# The dashboard's notes file (CACHE.notes.duckdb), created when a Store attaches it; the app is its only writer.
# Ids are max + 1 under the Store's write lock. Scores are NULL when undefined (a constant prediction).
NOTES_TABLES: dict[str, str] = {
    # an explanation text simulated and scored live (a suggestion, a generated explanation, or a stored
    # explanation re-scored with the dashboard's simulator), reused when the same text is scored again
    "live_scores": """
        score_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        simulator VARCHAR NOT NULL,
        score_all DOUBLE,
        score_top DOUBLE,
        score_random DOUBLE,
        created_at TIMESTAMP NOT NULL""",
    # the simulator's predictions (0-10 scale) per scoring excerpt of a live score
    "live_simulations": """
        score_id BIGINT NOT NULL,
        excerpt_id INTEGER NOT NULL,
        normalized_activations FLOAT[] NOT NULL,
        score DOUBLE""",
    "suggestions": """
        suggestion_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        author VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        score_id BIGINT,
        created_at TIMESTAMP NOT NULL""",
    "ratings": """
        rating_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        explanation_text VARCHAR NOT NULL,
        explanation_ref VARCHAR NOT NULL,
        score DOUBLE,
        rating VARCHAR NOT NULL,
        note VARCHAR NOT NULL,
        author VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL""",
}


@dataclass(frozen=True)
class CacheInfo:
    """What `python -m core info` prints."""

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
        return {
            "path": self.path,
            "model": self.model,
            "architecture": self.architecture,
            "corpus": self.corpus,
            "layers": self.layers,
            "neurons_per_layer": self.neurons_per_layer,
            "tokens": self.tokens,
            "excerpts": self.excerpts,
            "excerpt_len": self.excerpt_len,
            "neurons_recorded": self.neurons_recorded,
            "explanations": self.explanations,
            "scores": self.scores,
            "settings": self.settings,
        }


def notes_path(cache_path: str | Path) -> Path:
    """Where the dashboard keeps what people write for this cache."""
    path = Path(cache_path)
    return path.with_name(path.name.removesuffix(".duckdb") + ".notes.duckdb")


def partial_dir(cache_path: str | Path) -> Path:
    """Where an unfinished build keeps its resumable progress."""
    return Path(str(cache_path) + ".partial")


def temp_path(cache_path: str | Path) -> Path:
    """Where a build writes before it renames the finished file into place."""
    path = Path(cache_path)
    return path.with_name(path.name + ".tmp")


def _lock_message(path: Path, error: Exception) -> str:
    if "lock" in str(error).lower():
        return (
            f"{path} is in use by another process (a dashboard or another command); "
            "stop it, or work on a copy of the file"
        )
    return f"cannot open {path}: {error}"


class Store:
    """Every read and write of a cache goes through one of these."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, writable: bool) -> None:
        self._con = con
        self.path = path
        self.writable = writable
        self._write_lock = threading.Lock()

    # --- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False, with_notes: bool = False) -> Store:
        """Open a finished cache; read-only unless `writable` (only the command line writes)."""
        path = Path(path)
        if not path.exists():
            hint = " (a build of it was interrupted: run the same build command again)" if _has_partial(path) else ""
            raise StoreError(f"no cache at {path}{hint}; build one with `python -m core build --cache {path}`")
        con = duckdb.connect()
        try:
            mode = "" if writable else " (READ_ONLY)"
            con.execute(f"ATTACH '{_sql_path(path)}' AS cache{mode}")
        except duckdb.Error as error:
            con.close()
            raise StoreError(_lock_message(path, error)) from error
        store = cls(con, path, writable)
        if writable:
            store.ensure_schema()
        elif not store._has_table("meta"):
            con.close()
            raise StoreError(f"{path} is not a Neuron Atlas cache (no meta table)")
        if with_notes:
            store.attach_notes()
        return store

    @classmethod
    def create(cls, path: str | Path) -> Store:
        """Create an empty cache file at `path` (which must not exist) and its schema."""
        path = Path(path)
        if path.exists():
            path.unlink()
        con = duckdb.connect()
        con.execute(f"ATTACH '{_sql_path(path)}' AS cache")
        store = cls(con, path, True)
        store.ensure_schema()
        return store

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor()

    def _has_table(self, name: str, database: str = "cache") -> bool:
        row = (
            self._cursor()
            .execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [database, name]
            )
            .fetchone()
        )
        return bool(row and row[0])

    def ensure_schema(self) -> None:
        """Create missing tables of the cache (idempotent)."""
        cur = self._cursor()
        for name, columns in CACHE_TABLES.items():
            cur.execute(f"CREATE TABLE IF NOT EXISTS cache.{name} ({columns})")
        cur.execute(
            "INSERT OR IGNORE INTO cache.meta VALUES ('schema_version', ?)", [json.dumps(SCHEMA_VERSION)]
        )

    def attach_notes(self) -> None:
        """Attach the dashboard's notes file read-write (created on first use)."""
        notes = notes_path(self.path)
        try:
            self._con.execute(f"ATTACH '{_sql_path(notes)}' AS notes")
        except duckdb.Error as error:
            raise StoreError(_lock_message(notes, error)) from error
        cur = self._cursor()
        for name, columns in NOTES_TABLES.items():
            cur.execute(f"CREATE TABLE IF NOT EXISTS notes.{name} ({columns})")

    def checkpoint(self) -> None:
        self._cursor().execute("CHECKPOINT cache")

    # --- meta ----------------------------------------------------------------------------------------

    def set_meta(self, values: dict[str, Any]) -> None:
        cur = self._cursor()
        for key, value in values.items():
            cur.execute("INSERT OR REPLACE INTO cache.meta VALUES (?, ?)", [key, json.dumps(value)])

    def meta(self) -> dict[str, Any]:
        rows = self._cursor().execute("SELECT key, value FROM cache.meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def _insert_arrow(self, table_name: str, rows: pa.Table, database: str = "cache") -> None:
        """Append an Arrow table whose columns are in the target table's order."""
        cur = self._cursor()
        cur.register("arrow_rows", rows)
        try:
            cur.execute(f"INSERT INTO {database}.{table_name} SELECT * FROM arrow_rows")
        finally:
            cur.unregister("arrow_rows")

    # --- writing a build -----------------------------------------------------------------------------

    def insert_excerpts(
        self, token_ids: np.ndarray, tokens: Sequence[Sequence[str]], sources: Sequence[str]
    ) -> None:
        """Store every excerpt once: ids are the row numbers 0..n-1 of `token_ids` [n, excerpt_len]."""
        n, length = token_ids.shape
        table = pa.table(
            {
                "excerpt_id": pa.array(np.arange(n, dtype=np.int32)),
                "token_ids": pa.array(list(token_ids.astype(np.int32)), type=pa.list_(pa.int32())),
                "tokens": pa.array([list(row) for row in tokens], type=pa.list_(pa.string())),
                "source": pa.array(list(sources), type=pa.string()),
            }
        )
        self._insert_arrow("excerpts", table)
        log.debug("stored %d excerpts of %d tokens", n, length)

    def insert_vocab(self, token_ids: np.ndarray, tokens: Sequence[str], counts: np.ndarray) -> None:
        table = pa.table(
            {
                "token_id": pa.array(token_ids.astype(np.int32)),
                "token": pa.array(list(tokens), type=pa.string()),
                "count": pa.array(counts.astype(np.int64)),
            }
        )
        self._insert_arrow("vocab", table)

    def insert_neuron_stats(self, table: pa.Table) -> None:
        """Rows of neuron_stats for one layer, columns in schema order."""
        self._insert_arrow("neuron_stats", table)

    def insert_neuron_excerpts(self, table: pa.Table) -> None:
        """Rows of neuron_excerpts for one layer, sorted by neuron, columns in schema order."""
        self._insert_arrow("neuron_excerpts", table)

    def insert_token_means(self, table: pa.Table) -> None:
        self._insert_arrow("token_means", table)

    # --- reading what the recorder wrote -------------------------------------------------------------

    def info(self) -> CacheInfo:
        meta = self.meta()
        cur = self._cursor()
        recorded = cur.execute("SELECT count(*) FROM cache.neuron_stats").fetchone()
        explanations = scores = 0
        if self._has_table("explanations"):
            explanations = int(cur.execute("SELECT count(*) FROM cache.explanations").fetchone()[0])  # type: ignore[index]
        if self._has_table("scores"):
            scores = int(cur.execute("SELECT count(*) FROM cache.scores").fetchone()[0])  # type: ignore[index]
        return CacheInfo(
            path=str(self.path),
            model=meta.get("model", "?"),
            architecture=meta.get("architecture", "?"),
            corpus=meta.get("corpus", "?"),
            layers=int(meta.get("layers", 0)),
            neurons_per_layer=int(meta.get("neurons_per_layer", 0)),
            tokens=int(meta.get("tokens", 0)),
            excerpts=int(meta.get("excerpts", 0)),
            excerpt_len=int(meta.get("excerpt_len", 0)),
            neurons_recorded=int(recorded[0]) if recorded else 0,
            explanations=explanations,
            scores=scores,
            settings=meta.get("settings", {}),
        )

    def check_neuron(self, neuron: NeuronId) -> None:
        """Raise StoreError with the valid range when `neuron` is not in this cache."""
        meta = self.meta()
        layers, width = int(meta.get("layers", 0)), int(meta.get("neurons_per_layer", 0))
        if not (0 <= neuron.layer < layers and 0 <= neuron.neuron < width):
            raise StoreError(
                f"neuron {neuron} is out of range: this cache has layers 0-{layers - 1} "
                f"and neurons 0-{width - 1} in each layer"
            )

    def excerpts(self, excerpt_ids: Sequence[int]) -> dict[int, Excerpt]:
        rows = (
            self._cursor()
            .execute(
                "SELECT excerpt_id, token_ids, tokens FROM cache.excerpts WHERE excerpt_id IN (SELECT unnest(?))",
                [list(excerpt_ids)],
            )
            .fetchall()
        )
        return {row[0]: Excerpt(row[0], tuple(row[1]), tuple(row[2])) for row in rows}

    def excerpt_token_ids(self, start: int, stop: int) -> np.ndarray:
        """Token ids of excerpts start..stop-1 as int64 [n, excerpt_len]."""
        rows = (
            self._cursor()
            .execute(
                "SELECT token_ids FROM cache.excerpts WHERE excerpt_id >= ? AND excerpt_id < ? ORDER BY excerpt_id",
                [start, stop],
            )
            .fetchall()
        )
        return np.array([row[0] for row in rows], dtype=np.int64)

    def neuron_excerpts(
        self,
        neuron: NeuronId,
        kinds: Sequence[ExcerptKind] | None = None,
        splits: Sequence[Split] | None = None,
    ) -> list[NeuronExcerpt]:
        """A neuron's stored excerpts with activations, ordered by kind then rank."""
        where, params = neuron_excerpt_filter(neuron, kinds, splits)
        rows = (
            self._cursor()
            .execute(
                "SELECT e.excerpt_id, e.token_ids, e.tokens, n.kind, n.rank, n.split, n.activations, n.quantile_bin "
                "FROM cache.neuron_excerpts n JOIN cache.excerpts e USING (excerpt_id) "
                f"WHERE {where} ORDER BY n.kind, n.quantile_bin NULLS FIRST, n.rank",
                params,
            )
            .fetchall()
        )
        return [
            NeuronExcerpt(
                neuron=neuron,
                excerpt=Excerpt(row[0], tuple(row[1]), tuple(row[2])),
                kind=ExcerptKind(row[3]),
                rank=int(row[4]),
                split=Split(row[5]),
                activations=decode_tuple(row[6]),
                quantile_bin=None if row[7] is None else int(row[7]),
            )
            for row in rows
        ]

    def neuron_stats(self, neuron: NeuronId) -> NeuronStats | None:
        row = (
            self._cursor()
            .execute(
                "SELECT max_activation, min_activation, mean, variance, skewness, kurtosis, density, "
                "hist_edges, hist_counts, quantile_edges FROM cache.neuron_stats WHERE layer = ? AND neuron = ?",
                [neuron.layer, neuron.neuron],
            )
            .fetchone()
        )
        if row is None:
            return None
        return NeuronStats(
            neuron=neuron,
            max_activation=float(row[0]),
            min_activation=float(row[1]),
            mean=float(row[2]),
            variance=float(row[3]),
            skewness=float(row[4]),
            kurtosis=float(row[5]),
            density=float(row[6]),
            hist_edges=tuple(float(v) for v in row[7]),
            hist_counts=tuple(int(v) for v in row[8]),
            quantile_edges=tuple(float(v) for v in row[9]),
        )

    def token_means(self, neuron: NeuronId, limit: int = 20, highest: bool = True) -> list[TokenMean]:
        """Tokens with the highest (or lowest) mean activation for this neuron, with their counts."""
        order = "DESC" if highest else "ASC"
        rows = (
            self._cursor()
            .execute(
                "SELECT t.token_id, v.token, t.count, t.mean_activation FROM cache.token_means t "
                "JOIN cache.vocab v USING (token_id) WHERE t.layer = ? AND t.neuron = ? "
                f"ORDER BY t.mean_activation {order}, t.token_id LIMIT ?",
                [neuron.layer, neuron.neuron, limit],
            )
            .fetchall()
        )
        return [TokenMean(int(r[0]), r[1], int(r[2]), float(r[3])) for r in rows]

    # === explanations, simulations, scores, LLM response cache (core/explain.py, simulate.py, score.py) ===

    # Explanations, their scores and simulations (core/explain.py, core/score.py). Reads return nothing when the
    # tables are missing (a cache built before explanations existed, opened read-only).

    def add_explanation(
        self,
        neuron: NeuronId,
        *,
        text: str | None,
        explainer: str,
        model: str | None,
        prompt_version: str | None,
        simulator: str,
        status: ExplanationStatus,
        failure: str | None = None,
        candidates: int = 1,
        calibration_score: float | None = None,
        scores: Scores | None = None,
        simulations: Sequence[ExcerptSimulation] = (),
    ) -> int:
        """Store one explain run of a neuron, its scores and every simulated token, in one transaction.

        Earlier FAILED runs of the same (neuron, explainer, simulator) are deleted: this run replaces them. A
        human explanation (explainer "human") replaces an earlier one with the same text. Returns the new id.
        """
        with self.transaction() as cur:
            stale = (
                "SELECT explanation_id FROM cache.explanations WHERE layer = ? AND neuron = ? AND explainer = ? "
                "AND simulator = ? AND (status = ? OR (explainer = 'human' AND text = ?))"
            )
            params = [neuron.layer, neuron.neuron, explainer, simulator, str(ExplanationStatus.FAILED), text]
            for table in ("simulations", "scores", "explanations"):  # explanations last: the others select through it
                cur.execute(f"DELETE FROM cache.{table} WHERE explanation_id IN ({stale})", params)
            row = cur.execute("SELECT coalesce(max(explanation_id), 0) + 1 FROM cache.explanations").fetchone()
            explanation_id = int(row[0]) if row else 1
            cur.execute(
                "INSERT INTO cache.explanations "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC'))",
                [explanation_id, neuron.layer, neuron.neuron, text, explainer, model, prompt_version, simulator,
                 str(status), failure, candidates, _finite(calibration_score)],
            )
            if scores is not None:
                cur.execute(
                    "INSERT INTO cache.scores VALUES (?, ?, ?, ?, ?, ?)",
                    [explanation_id, simulator, _finite(scores.all), _finite(scores.top), _finite(scores.random),
                     scores.tokens],
                )
            if simulations:
                cur.executemany(
                    "INSERT INTO cache.simulations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [[explanation_id, simulator, s.excerpt_id, str(s.kind), str(s.split),
                      list(s.normalized_predictions), _finite(s.score)] for s in simulations],
                )
        return explanation_id

    _EXPLANATION_COLUMNS = (
        "e.explanation_id, e.layer, e.neuron, e.text, e.explainer, e.model, e.prompt_version, e.simulator, e.status, "
        "e.failure, e.candidates, e.calibration_score, strftime(e.created_at, '%Y-%m-%d %H:%M:%S'), "
        "s.score_all, s.score_top, s.score_random"
    )
    _EXPLANATION_FROM = (
        "cache.explanations e LEFT JOIN cache.scores s "
        "ON s.explanation_id = e.explanation_id AND s.simulator = e.simulator"
    )

    def explanations(self, neuron: NeuronId) -> list[ExplanationRecord]:
        """A neuron's explanations with their scores: best top-and-random score first, unscored and failed last."""
        if not self._has_table("explanations"):
            return []
        rows = (
            self._cursor()
            .execute(
                f"SELECT {self._EXPLANATION_COLUMNS} FROM {self._EXPLANATION_FROM} "
                "WHERE e.layer = ? AND e.neuron = ? "
                "ORDER BY e.status = 'ok' DESC, s.score_all DESC NULLS LAST, e.explanation_id DESC",
                [neuron.layer, neuron.neuron],
            )
            .fetchall()
        )
        return [_explanation_from_row(row) for row in rows]

    def explanation(self, explanation_id: int) -> ExplanationRecord | None:
        """One explanation by id, with its scores."""
        if not self._has_table("explanations"):
            return None
        row = (
            self._cursor()
            .execute(f"SELECT {self._EXPLANATION_COLUMNS} FROM {self._EXPLANATION_FROM} WHERE e.explanation_id = ?",
                     [explanation_id])
            .fetchone()
        )
        return None if row is None else _explanation_from_row(row)

    def run_explanations(
        self, neurons: Sequence[NeuronId], explainer: str, simulator: str
    ) -> dict[NeuronId, ExplanationRecord]:
        """For resuming and summing up a run: each listed neuron's latest explanation by this explainer and
        simulator (a finished one wins over a failed one)."""
        if not neurons or not self._has_table("explanations"):
            return {}
        rows = (
            self._cursor()
            .execute(
                f"SELECT {self._EXPLANATION_COLUMNS} FROM {self._EXPLANATION_FROM} "
                "JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w ON w.layer = e.layer AND w.neuron = e.neuron "
                "WHERE e.explainer = ? AND e.simulator = ? "
                "QUALIFY row_number() OVER (PARTITION BY e.layer, e.neuron "
                "ORDER BY e.status = 'ok' DESC, e.explanation_id DESC) = 1",
                [[n.layer for n in neurons], [n.neuron for n in neurons], explainer, simulator],
            )
            .fetchall()
        )
        records = [_explanation_from_row(row) for row in rows]
        return {record.neuron: record for record in records}

    def simulations(self, explanation_id: int, simulator: str | None = None) -> list[ExcerptSimulation]:
        """The simulated activations of an explanation beside the real ones, per scored excerpt (top first, then
        random, by rank). `simulator` defaults to the one that scored it when it was made."""
        if not self._has_table("simulations"):
            return []
        rows = (
            self._cursor()
            .execute(
                "SELECT m.excerpt_id, m.kind, m.split, x.tokens, n.activations, m.normalized_predictions, m.score "
                "FROM cache.simulations m JOIN cache.explanations e USING (explanation_id) "
                "JOIN cache.neuron_excerpts n ON n.layer = e.layer AND n.neuron = e.neuron "
                "AND n.excerpt_id = m.excerpt_id AND n.kind = m.kind "
                "JOIN cache.excerpts x ON x.excerpt_id = m.excerpt_id "
                "WHERE m.explanation_id = ? AND m.simulator = coalesce(?, e.simulator) "
                "ORDER BY m.kind = 'top' DESC, n.rank",
                [explanation_id, simulator],
            )
            .fetchall()
        )
        return [
            ExcerptSimulation(
                excerpt_id=int(r[0]), kind=ExcerptKind(r[1]), split=Split(r[2]), tokens=tuple(r[3]),
                activations=decode_tuple(r[4]), normalized_predictions=tuple(float(v) for v in r[5]),
                score=None if r[6] is None else float(r[6]),
            )
            for r in rows
        ]

    def best_explanations_sql(self) -> str:
        """A relation (layer, neuron, explanation_id, explanation, explainer, simulator, score, score_top,
        score_random): each neuron's best finished explanation by top-and-random score (unscored ones last), for
        joining into tables. An empty relation of the same shape when the cache has no explanations table."""
        if not self._has_table("explanations"):
            return (
                "SELECT NULL::SMALLINT AS layer, NULL::INTEGER AS neuron, NULL::BIGINT AS explanation_id, "
                "NULL::VARCHAR AS explanation, NULL::VARCHAR AS explainer, NULL::VARCHAR AS simulator, "
                "NULL::DOUBLE AS score, NULL::DOUBLE AS score_top, NULL::DOUBLE AS score_random WHERE false"
            )
        return (
            "SELECT e.layer, e.neuron, e.explanation_id, e.text AS explanation, e.explainer, e.simulator, "
            "s.score_all AS score, s.score_top, s.score_random "
            f"FROM {self._EXPLANATION_FROM} WHERE e.status = 'ok' "
            "QUALIFY row_number() OVER (PARTITION BY e.layer, e.neuron "
            "ORDER BY s.score_all DESC NULLS LAST, e.explanation_id DESC) = 1"
        )

    def best_scores(self, layers: Sequence[int] | None = None) -> list[NeuronBestScore]:
        """Each explained neuron's best explanation and its scores, by layer and neuron (optionally some layers)."""
        where, params = ("", []) if layers is None else ("WHERE b.layer IN (SELECT unnest(?))", [list(layers)])
        rows = (
            self._cursor()
            .execute(
                "SELECT b.layer, b.neuron, b.explanation_id, b.explanation, b.explainer, b.simulator, b.score, "
                f"b.score_top, b.score_random FROM ({self.best_explanations_sql()}) b {where} "
                "ORDER BY b.layer, b.neuron",
                params,
            )
            .fetchall()
        )
        return [
            NeuronBestScore(NeuronId(int(r[0]), int(r[1])), int(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    # LLM response cache (core/llm.py): the command line keeps it in the cache file, the dashboard in notes.

    def ensure_llm_cache(self, database: str = "cache") -> None:
        """Make sure `database` ("cache" or "notes", attached on demand) has the llm_cache table."""
        _check_llm_database(database)
        if database == "notes":
            if not self._has_database("notes"):
                self.attach_notes()
        elif not self.writable:
            raise StoreError(f"{self.path} is open read-only: keep LLM answers in the notes file (cache_db='notes')")
        self._cursor().execute(f"CREATE TABLE IF NOT EXISTS {database}.llm_cache ({CACHE_TABLES['llm_cache']})")

    def llm_cache_get(self, key: str, database: str = "cache") -> str | None:
        """The stored response JSON of the request with this key, or None."""
        _check_llm_database(database)
        row = self._cursor().execute(f"SELECT response FROM {database}.llm_cache WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def llm_cache_put(self, key: str, endpoint: str, model: str, response: str, database: str = "cache") -> None:
        """Store one response JSON under its request key (a repeated key keeps the first answer)."""
        _check_llm_database(database)
        with self._write_lock:
            self._cursor().execute(
                f"INSERT OR IGNORE INTO {database}.llm_cache (key, endpoint, model, response) VALUES (?, ?, ?, ?)",
                [key, endpoint, model, response],
            )

    def _has_database(self, name: str) -> bool:
        cur = self._cursor()
        row = cur.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?", [name]).fetchone()
        return bool(row and row[0])

    # === related tokens and related neurons (core/related.py) ===

    def related_tokens(self, neuron: NeuronId, kind: RelatedTokenKind | str, limit: int = 20) -> list[RelatedToken]:
        """A neuron's related tokens of one kind, best first; activation_* come from token_means (with counts)."""
        kind = RelatedTokenKind(kind)
        if kind in (RelatedTokenKind.ACTIVATION_TOP, RelatedTokenKind.ACTIVATION_BOTTOM):
            means = self.token_means(neuron, limit, highest=kind == RelatedTokenKind.ACTIVATION_TOP)
            return [RelatedToken(m.token_id, m.token, m.mean_activation, m.count) for m in means]
        try:
            rows = (
                self._cursor()
                .execute(
                    "SELECT r.token_id, coalesce(v.token, ''), r.value FROM cache.related_tokens r "
                    "LEFT JOIN cache.model_vocab v USING (token_id) "
                    "WHERE r.layer = ? AND r.neuron = ? AND r.kind = ? ORDER BY r.rank LIMIT ?",
                    [neuron.layer, neuron.neuron, str(kind), limit],
                )
                .fetchall()
            )
        except duckdb.CatalogException:  # a cache written before related existed
            return []
        return [RelatedToken(int(r[0]), r[1], float(r[2])) for r in rows]

    def related_neurons(
        self, neuron: NeuronId, kind: RelatedNeuronKind | str, limit: int = 10
    ) -> list[RelatedNeuron]:
        """A neuron's related neurons of one kind, strongest first ([] until `python -m core related` ran)."""
        kind = RelatedNeuronKind(kind)
        try:
            rows = (
                self._cursor()
                .execute(
                    "SELECT other_layer, other_neuron, strength FROM cache.related_neurons "
                    "WHERE layer = ? AND neuron = ? AND kind = ? ORDER BY rank LIMIT ?",
                    [neuron.layer, neuron.neuron, str(kind), limit],
                )
                .fetchall()
            )
        except duckdb.CatalogException:  # a cache written before related existed
            return []
        return [RelatedNeuron(NeuronId(int(r[0]), int(r[1])), float(r[2])) for r in rows]

    def related_layer_rows(self, layer: int) -> tuple[pa.Table, pa.Table]:
        """All related_tokens and related_neurons rows of one layer, sorted by neuron, kind and rank."""
        cur = self._cursor()
        order = "WHERE layer = ? ORDER BY neuron, kind, rank"
        tokens = cur.sql(f"SELECT * FROM cache.related_tokens {order}", params=[layer]).to_arrow_table()
        neurons = cur.sql(f"SELECT * FROM cache.related_neurons {order}", params=[layer]).to_arrow_table()
        return tokens, neurons

    def related_settings(self) -> dict[str, Any] | None:
        """{"settings": ..., "finished": bool} of the last related run, None when there was none."""
        return self.meta().get("related")

    def related_layers_done(self) -> set[int]:
        """Layers whose related rows are complete."""
        try:
            rows = self._cursor().execute("SELECT DISTINCT layer FROM cache.related_layers").fetchall()
        except duckdb.CatalogException:
            return set()
        return {int(r[0]) for r in rows}

    def start_related(self, settings: dict[str, Any], token_ids: np.ndarray, tokens: Sequence[str]) -> None:
        """Drop every related row, store the model's vocabulary and the new settings (one transaction)."""
        vocab = pa.table(
            {"token_id": pa.array(np.asarray(token_ids, dtype=np.int32)), "token": pa.array(list(tokens), pa.string())}
        )
        with self.transaction() as cur:
            for name in ("related_tokens", "related_neurons", "related_layers", "model_vocab"):
                cur.execute(f"DELETE FROM cache.{name}")
            cur.register("vocab_rows", vocab)
            try:
                cur.execute("INSERT INTO cache.model_vocab SELECT * FROM vocab_rows")
            finally:
                cur.unregister("vocab_rows")
            cur.execute(
                "INSERT OR REPLACE INTO cache.meta VALUES ('related', ?)",
                [json.dumps({"settings": settings, "finished": False})],
            )

    def insert_related_layer(self, layer: int, tokens: pa.Table, neurons: pa.Table) -> None:
        """One layer's related_tokens and related_neurons rows and its progress row, all or nothing."""
        with self.transaction() as cur:
            for name in ("related_tokens", "related_neurons", "related_layers"):
                cur.execute(f"DELETE FROM cache.{name} WHERE layer = ?", [layer])
            for name, rows in (("related_tokens", tokens), ("related_neurons", neurons)):
                cur.register("related_rows", rows)
                try:
                    cur.execute(f"INSERT INTO cache.{name} SELECT * FROM related_rows")
                finally:
                    cur.unregister("related_rows")
            cur.execute("INSERT INTO cache.related_layers VALUES (?, current_timestamp)", [layer])

    def finish_related(self, settings: dict[str, Any]) -> None:
        """Mark the related tables complete for these settings and write them to disk."""
        self.set_meta({"related": {"settings": settings, "finished": True}})
        self.checkpoint()

    # === dashboard: notes file (suggestions, ratings), neuron tables and search (app.py, pages/) ===

    def reload_cache(self) -> None:
        """Attach the cache file again (a build replaced it); the notes stay attached. Read-only stores only."""
        with self._write_lock:
            cur = self._cursor()
            cur.execute("DETACH cache")
            cur.execute(f"ATTACH '{_sql_path(self.path)}' AS cache (READ_ONLY)")

    def _next_id(self, cur: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
        # table and column are this module's constants, never user text; callers hold the write lock
        row = cur.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM notes.{table}").fetchone()
        return int(row[0]) if row else 1

    def add_live_score(
        self,
        neuron: NeuronId,
        text: str,
        simulator: str,
        scores: tuple[float | None, float | None, float | None],
        simulations: Sequence[LiveSimulation],
    ) -> LiveScore:
        """Keep a live scoring: `scores` is (all, top, random), `simulations` one per scoring excerpt."""
        with self.transaction() as cur:
            score_id = self._next_id(cur, "live_scores", "score_id")
            cur.execute(
                "INSERT INTO notes.live_scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC'))",
                [score_id, neuron.layer, neuron.neuron, text, simulator, *(_finite(s) for s in scores)],
            )
            if simulations:
                cur.executemany(
                    "INSERT INTO notes.live_simulations VALUES (?, ?, ?, ?)",
                    [[score_id, s.excerpt_id, list(s.normalized_activations), _finite(s.score)] for s in simulations],
                )
        return LiveScore(score_id, neuron, text, simulator, *(_finite(s) for s in scores), tuple(simulations))

    def live_score(
        self, neuron: NeuronId, text: str, simulator: str, *, with_simulations: bool = True
    ) -> LiveScore | None:
        """The latest live score of exactly this text for this neuron by this simulator, if any."""
        row = (
            self._cursor()
            .execute(
                "SELECT score_id FROM notes.live_scores WHERE layer = ? AND neuron = ? AND text = ? AND simulator = ? "
                "ORDER BY score_id DESC LIMIT 1",
                [neuron.layer, neuron.neuron, text, simulator],
            )
            .fetchone()
        )
        return None if row is None else self.live_score_by_id(int(row[0]), with_simulations=with_simulations)

    def live_score_by_id(self, score_id: int, *, with_simulations: bool = True) -> LiveScore | None:
        cur = self._cursor()
        row = cur.execute(
            "SELECT layer, neuron, text, simulator, score_all, score_top, score_random "
            "FROM notes.live_scores WHERE score_id = ?",
            [score_id],
        ).fetchone()
        if row is None:
            return None
        simulations: tuple[LiveSimulation, ...] = ()
        if with_simulations:
            rows = cur.execute(
                "SELECT excerpt_id, normalized_activations, score FROM notes.live_simulations "
                "WHERE score_id = ? ORDER BY excerpt_id",
                [score_id],
            ).fetchall()
            simulations = tuple(LiveSimulation(int(r[0]), tuple(float(v) for v in r[1]), r[2]) for r in rows)
        return LiveScore(score_id, NeuronId(int(row[0]), int(row[1])), row[2], row[3], row[4], row[5], row[6],
                         simulations)

    def add_suggestion(
        self, neuron: NeuronId, text: str, author: str, source: str = "person", score_id: int | None = None
    ) -> Suggestion:
        """Keep an explanation someone suggested (or generated) in the dashboard, with its live score's id."""
        with self.transaction() as cur:
            suggestion_id = self._next_id(cur, "suggestions", "suggestion_id")
            row = cur.execute(
                "INSERT INTO notes.suggestions VALUES (?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC')) "
                "RETURNING strftime(created_at, '%Y-%m-%d %H:%M:%S')",
                [suggestion_id, neuron.layer, neuron.neuron, text, author or "anonymous", source, score_id],
            ).fetchone()
        score = None if score_id is None else self.live_score_by_id(score_id, with_simulations=False)
        return Suggestion(suggestion_id, neuron, text, author or "anonymous", source, row[0] if row else "", score)

    def suggestions(self, neuron: NeuronId) -> list[Suggestion]:
        """A neuron's suggestions, best live score first (unscored last), without their simulations."""
        rows = (
            self._cursor()
            .execute(
                "SELECT s.suggestion_id, s.text, s.author, s.source, strftime(s.created_at, '%Y-%m-%d %H:%M:%S'), "
                "l.score_id, l.simulator, l.score_all, l.score_top, l.score_random "
                "FROM notes.suggestions s LEFT JOIN notes.live_scores l USING (score_id) "
                "WHERE s.layer = ? AND s.neuron = ? "
                "ORDER BY l.score_all DESC NULLS LAST, s.suggestion_id DESC",
                [neuron.layer, neuron.neuron],
            )
            .fetchall()
        )
        return [
            Suggestion(
                int(r[0]), neuron, r[1], r[2], r[3], r[4],
                None if r[5] is None else LiveScore(int(r[5]), neuron, r[1], r[6], r[7], r[8], r[9]),
            )
            for r in rows
        ]

    def add_rating(
        self,
        neuron: NeuronId,
        explanation_text: str,
        rating: Rating,
        *,
        note: str = "",
        author: str = "",
        explanation_ref: str = "",
        score: float | None = None,
    ) -> HumanRating:
        """Keep a person's rating of one explanation (with the score it showed then)."""
        rating = Rating(rating)
        with self.transaction() as cur:
            rating_id = self._next_id(cur, "ratings", "rating_id")
            row = cur.execute(
                "INSERT INTO notes.ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC')) "
                "RETURNING strftime(created_at, '%Y-%m-%d %H:%M:%S')",
                [rating_id, neuron.layer, neuron.neuron, explanation_text, explanation_ref, _finite(score),
                 str(rating), note, author or "anonymous"],
            ).fetchone()
        return HumanRating(rating_id, neuron, explanation_text, explanation_ref, _finite(score), rating, note,
                           author or "anonymous", row[0] if row else "")

    def ratings(self, neuron: NeuronId) -> list[HumanRating]:
        """A neuron's ratings, newest first."""
        rows = (
            self._cursor()
            .execute(
                "SELECT rating_id, explanation_text, explanation_ref, score, rating, note, author, "
                "strftime(created_at, '%Y-%m-%d %H:%M:%S') FROM notes.ratings "
                "WHERE layer = ? AND neuron = ? ORDER BY rating_id DESC",
                [neuron.layer, neuron.neuron],
            )
            .fetchall()
        )
        return [HumanRating(int(r[0]), neuron, r[1], r[2], r[3], Rating(r[4]), r[5], r[6], r[7]) for r in rows]

    def disagreements(self, high: float = 0.4, low: float = 0.2, limit: int = 10) -> list[Disagreement]:
        """Rated explanations where people and the score disagree: mostly "wrong" at score >= high, or mostly
        "right" at score < low; largest gap first."""
        rows = (
            self._cursor()
            .execute(
                "WITH r AS (SELECT layer, neuron, explanation_text, max(score) AS score, "
                "count(*) FILTER (rating = 'right') AS n_right, count(*) FILTER (rating = 'partly') AS n_partly, "
                "count(*) FILTER (rating = 'wrong') AS n_wrong FROM notes.ratings WHERE score IS NOT NULL "
                "GROUP BY ALL) "
                "SELECT * FROM r WHERE (n_wrong > n_right + n_partly AND score >= ?) "
                "OR (n_right > n_wrong + n_partly AND score < ?) "
                "ORDER BY abs(score - CASE WHEN n_wrong > n_right THEN 0 ELSE 1 END) DESC, layer, neuron LIMIT ?",
                [high, low, limit],
            )
            .fetchall()
        )
        return [Disagreement(NeuronId(int(r[0]), int(r[1])), r[2], float(r[3]), int(r[4]), int(r[5]), int(r[6]))
                for r in rows]

    def notes_counts(self) -> dict[str, int]:
        """Rows in each notes table, e.g. {"suggestions": 3, "ratings": 5, ...}."""
        cur = self._cursor()
        return {name: int(cur.execute(f"SELECT count(*) FROM notes.{name}").fetchone()[0])  # type: ignore[index]
                for name in NOTES_TABLES}

    def neuron_table(
        self,
        *,
        layer: int | None = None,
        search: str | None = None,
        order: str = "score",
        descending: bool = True,
        scored_only: bool = False,
        min_layer: int | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[NeuronRow]:
        """Neurons with their statistics and best explanation, filtered and sorted (`order` is a NEURON_ORDERS key)."""
        if order not in NEURON_ORDERS:
            raise StoreError(f"cannot sort neurons by {order!r}; choose one of {', '.join(NEURON_ORDERS)}")
        where, params = neuron_table_filter(layer=layer, search=search, scored_only=scored_only, min_layer=min_layer)
        direction = "DESC" if descending else "ASC"
        rows = (
            self._cursor()
            .execute(
                "SELECT s.layer, s.neuron, s.max_activation, s.min_activation, s.density, b.explanation, b.score "
                f"FROM cache.neuron_stats s LEFT JOIN ({self.best_explanations_sql()}) b USING (layer, neuron) "
                f"WHERE {where} ORDER BY {NEURON_ORDERS[order]} {direction} NULLS LAST, s.layer, s.neuron "
                "LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            .fetchall()
        )
        return [NeuronRow(NeuronId(int(r[0]), int(r[1])), float(r[2]), float(r[3]), float(r[4]), r[5],
                          None if r[6] is None else float(r[6])) for r in rows]

    def count_neurons(
        self, *, layer: int | None = None, search: str | None = None, scored_only: bool = False
    ) -> int:
        """How many neurons `neuron_table` would list without a limit."""
        where, params = neuron_table_filter(layer=layer, search=search, scored_only=scored_only)
        row = (
            self._cursor()
            .execute(
                f"SELECT count(*) FROM cache.neuron_stats s LEFT JOIN ({self.best_explanations_sql()}) b "
                f"USING (layer, neuron) WHERE {where}",
                params,
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def neuron_rows(self, neurons: Sequence[NeuronId]) -> dict[NeuronId, NeuronRow]:
        """These neurons' statistics and best explanations (for lists of related neurons)."""
        if not neurons:
            return {}
        rows = (
            self._cursor()
            .execute(
                "SELECT s.layer, s.neuron, s.max_activation, s.min_activation, s.density, b.explanation, b.score "
                f"FROM cache.neuron_stats s LEFT JOIN ({self.best_explanations_sql()}) b USING (layer, neuron) "
                "JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w USING (layer, neuron)",
                [[n.layer for n in neurons], [n.neuron for n in neurons]],
            )
            .fetchall()
        )
        found = [NeuronRow(NeuronId(int(r[0]), int(r[1])), float(r[2]), float(r[3]), float(r[4]), r[5],
                           None if r[6] is None else float(r[6])) for r in rows]
        return {row.neuron: row for row in found}

    def scores_by_layer(self) -> list[LayerScores]:
        """Per layer: how many neurons have a scored explanation, and the mean and median of their best scores."""
        rows = (
            self._cursor()
            .execute(
                f"SELECT layer, count(*), avg(score), median(score) FROM ({self.best_explanations_sql()}) "
                "WHERE score IS NOT NULL GROUP BY layer ORDER BY layer"
            )
            .fetchall()
        )
        return [LayerScores(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]


    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside BEGIN/COMMIT (rolled back on error), one writer at a time."""
        with self._write_lock:
            cur = self._cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")


# --- small pure helpers -----------------------------------------------------------------------------


def neuron_excerpt_filter(
    neuron: NeuronId, kinds: Sequence[ExcerptKind] | None = None, splits: Sequence[Split] | None = None
) -> tuple[str, list[Any]]:
    """WHERE clause and parameters selecting one neuron's rows of neuron_excerpts (alias n)."""
    clauses, params = ["n.layer = ?", "n.neuron = ?"], [neuron.layer, neuron.neuron]
    if kinds:
        clauses.append("n.kind IN (SELECT unnest(?))")
        params.append([str(k) for k in kinds])
    if splits:
        clauses.append("n.split IN (SELECT unnest(?))")
        params.append([str(s) for s in splits])
    return " AND ".join(clauses), params


def _check_llm_database(database: str) -> None:
    # the database name is part of the SQL text, so only the two known names pass
    if database not in ("cache", "notes"):
        raise ValueError(f"the LLM cache lives in 'cache' or 'notes', not {database!r}")


NEURON_ORDERS: dict[str, str] = {
    "score": "b.score",
    "density": "s.density",
    "max": "s.max_activation",
    "min": "s.min_activation",
    "neuron": "s.layer, s.neuron",
}
"""Sort keys of Store.neuron_table -> the SQL they order by (the only text that reaches ORDER BY)."""


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, with % _ and the escape character taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def neuron_table_filter(
    *, layer: int | None = None, search: str | None = None, scored_only: bool = False, min_layer: int | None = None
) -> tuple[str, list[Any]]:
    """WHERE clause and parameters for Store.neuron_table (aliases s: neuron_stats, b: best explanation)."""
    clauses: list[str] = []
    params: list[Any] = []
    if layer is not None:
        clauses.append("s.layer = ?")
        params.append(int(layer))
    if min_layer is not None:
        clauses.append("s.layer >= ?")
        params.append(int(min_layer))
    if search and search.strip():
        clauses.append("b.explanation ILIKE ? ESCAPE '\\'")
        params.append(like_pattern(search.strip()))
    if scored_only:
        clauses.append("b.score IS NOT NULL")
    return " AND ".join(clauses) or "true", params


def _finite(value: float | None) -> float | None:
    """A score as stored: None for undefined (None or NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _explanation_from_row(row: Sequence[Any]) -> ExplanationRecord:
    """An ExplanationRecord from a row of `Store._EXPLANATION_COLUMNS`."""
    return ExplanationRecord(
        explanation_id=int(row[0]), neuron=NeuronId(int(row[1]), int(row[2])), text=row[3], explainer=row[4],
        model=row[5], prompt_version=row[6], simulator=row[7], status=ExplanationStatus(row[8]), failure=row[9],
        candidates=int(row[10]), calibration_score=row[11], created_at=row[12], score_all=row[13],
        score_top=row[14], score_random=row[15],
    )


def _sql_path(path: Path) -> str:
    # ATTACH takes no bound parameters; a quote in a path is doubled as in SQL
    return str(path).replace("'", "''")


def _has_partial(path: Path) -> bool:
    return temp_path(path).exists() or partial_dir(path).exists()


def replace_file(source: Path, target: Path) -> None:
    """Move a finished file over the target atomically (readers keep the old one open)."""
    os.replace(source, target)

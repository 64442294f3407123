"""The recording (NAME.duckdb): what `build` wrote, read by every later stage, written once.

RecordingQueries reads it (excerpts, statistics, per-neuron excerpts with activations, token means);
RecordingWriter is the build's only way to write it (core/record.py writes NAME.duckdb.tmp through it and renames
the finished file into place).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from core.packing import DESCRIPTION, DESCRIPTION_EXACT, decode_lists, decode_tuple, encode_lists
from core.store.database import Database, Queries, StoreError
from core.store.schema import RECORDING, create_tables, read_meta, write_meta
from core.types import Excerpt, ExcerptKind, NeuronExcerpt, NeuronId, NeuronStats, Split, TokenMean

log = logging.getLogger(__name__)

_CHOSEN_NEURONS = "JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w USING (layer, neuron)"
"""Joined to keep the rows of listed neurons (parameters: their layers, their neuron numbers)."""


class RecordingQueries(Queries):
    """Reads of the recording."""

    def meta(self) -> dict[str, Any]:
        """The build's settings and sizes: model, corpus, layers, neurons_per_layer, tokens, build_id, ..."""
        return read_meta(self._db.cursor(), RECORDING)

    def recorded_neurons(self) -> int:
        """How many neurons have statistics (every neuron of a finished build)."""
        row = self._db.cursor().execute(f"SELECT count(*) FROM {RECORDING}.neuron_stats").fetchone()
        return int(row[0]) if row else 0

    def check_neuron(self, neuron: NeuronId) -> None:
        """Raise StoreError with the valid range when `neuron` is not in this cache."""
        layers, neurons_per_layer = self._shape()
        if not (0 <= neuron.layer < layers and 0 <= neuron.neuron < neurons_per_layer):
            raise StoreError(
                f"neuron {neuron} is out of range: this cache has layers 0-{layers - 1} "
                f"and neurons 0-{neurons_per_layer - 1} in each layer"
            )

    def _shape(self) -> tuple[int, int]:
        # kept: explaining a layer checks every neuron, and reading the meta table costs more than the check
        if (shape := self._db.kept.get("shape")) is None:
            meta = self.meta()
            shape = (int(meta.get("layers", 0)), int(meta.get("neurons_per_layer", 0)))
            if all(shape):  # a build writes it once; until then it is read every time
                self._db.kept["shape"] = shape
        return shape

    def excerpts(self, excerpt_ids: Sequence[int]) -> dict[int, Excerpt]:
        """These excerpts by id (ids that do not exist are left out)."""
        rows = self._db.cursor().execute(
            f"SELECT excerpt_id, token_ids, tokens FROM {RECORDING}.excerpts WHERE excerpt_id IN (SELECT unnest(?))",
            [list(excerpt_ids)],
        ).fetchall()
        return {row[0]: Excerpt(row[0], tuple(row[1]), tuple(row[2])) for row in rows}

    def neuron_excerpts(
        self,
        neuron: NeuronId,
        kinds: Sequence[ExcerptKind] | None = None,
        splits: Sequence[Split] | None = None,
    ) -> list[NeuronExcerpt]:
        """A neuron's stored excerpts with activations, ordered by kind, quantile bin, then rank."""
        where, params = neuron_excerpt_filter(neuron, kinds, splits)
        rows = self._db.cursor().execute(
            "SELECT e.excerpt_id, e.token_ids, e.tokens, n.kind, n.rank, n.split, n.activations, n.quantile_bin "
            f"FROM {RECORDING}.neuron_excerpts n JOIN {RECORDING}.excerpts e USING (excerpt_id) "
            f"WHERE {where} ORDER BY n.kind, n.quantile_bin NULLS FIRST, n.rank",
            params,
        ).fetchall()
        return [neuron_excerpt_from_row(neuron, row) for row in rows]

    def neuron_stats(self, neuron: NeuronId) -> NeuronStats | None:
        """A neuron's statistics over every recorded token; None when it was not recorded."""
        row = self._db.cursor().execute(
            "SELECT max_activation, min_activation, mean, variance, skewness, kurtosis, density, hist_edges, "
            f"hist_counts, quantile_edges FROM {RECORDING}.neuron_stats WHERE layer = ? AND neuron = ?",
            [neuron.layer, neuron.neuron],
        ).fetchone()
        return None if row is None else neuron_stats_from_row(neuron, row)

    def token_means(self, neuron: NeuronId, limit: int = 20, highest: bool = True) -> list[TokenMean]:
        """Tokens with the highest (or lowest) mean activation for this neuron, with their counts."""
        order = "DESC" if highest else "ASC"
        rows = self._db.cursor().execute(
            f"SELECT t.token_id, v.token, t.count, t.mean_activation FROM {RECORDING}.token_means t "
            f"JOIN {RECORDING}.vocab v USING (token_id) WHERE t.layer = ? AND t.neuron = ? "
            f"ORDER BY t.mean_activation {order}, t.token_id LIMIT ?",
            [neuron.layer, neuron.neuron, limit],
        ).fetchall()
        return [TokenMean(int(r[0]), r[1], int(r[2]), float(r[3])) for r in rows]


    # --- many neurons at once (core/interop's exports and imports) ---

    def neuron_ids(self, layers: Sequence[int] | None = None) -> list[NeuronId]:
        """Every neuron with statistics (optionally of some layers only), by layer and neuron."""
        where, params = ("", []) if layers is None else ("WHERE layer IN (SELECT unnest(?))", [list(layers)])
        rows = self._db.cursor().execute(
            f"SELECT layer, neuron FROM {RECORDING}.neuron_stats {where} ORDER BY layer, neuron", params
        ).fetchall()
        return [NeuronId(int(r[0]), int(r[1])) for r in rows]

    def neurons_excerpts_and_stats(
        self, neurons: Sequence[NeuronId]
    ) -> dict[NeuronId, tuple[NeuronStats | None, list[NeuronExcerpt]]]:
        """`neuron_stats` and `neuron_excerpts` of many neurons in two queries (exports read a block at a time)."""
        if not neurons:
            return {}
        params = [[n.layer for n in neurons], [n.neuron for n in neurons]]
        cur = self._db.cursor()
        found: dict[NeuronId, tuple[NeuronStats | None, list[NeuronExcerpt]]] = {n: (None, []) for n in neurons}
        for row in cur.execute(
            "SELECT layer, neuron, max_activation, min_activation, mean, variance, skewness, kurtosis, density, "
            f"hist_edges, hist_counts, quantile_edges FROM {RECORDING}.neuron_stats {_CHOSEN_NEURONS}", params,
        ).fetchall():
            neuron = NeuronId(int(row[0]), int(row[1]))
            found[neuron] = (neuron_stats_from_row(neuron, row[2:]), found[neuron][1])
        for row in cur.execute(
            "SELECT n.layer, n.neuron, e.excerpt_id, e.token_ids, e.tokens, n.kind, n.rank, n.split, n.activations, "
            f"n.quantile_bin FROM {RECORDING}.neuron_excerpts n {_CHOSEN_NEURONS} JOIN {RECORDING}.excerpts e "
            "USING (excerpt_id) ORDER BY n.layer, n.neuron, n.kind, n.quantile_bin NULLS FIRST, n.rank", params,
        ).fetchall():
            neuron = NeuronId(int(row[0]), int(row[1]))
            found[neuron][1].append(neuron_excerpt_from_row(neuron, row[2:]))
        return found

    def shared_excerpt_activations(self) -> pa.Table:
        """(layer, neuron, excerpt_id, activations as float32 lists) of every excerpt stored for two or more neurons,
        one row per (neuron, excerpt), ordered by excerpt (an import correlates neurons over them)."""
        table = self._db.cursor().sql(
            f"WITH shared AS (SELECT excerpt_id FROM {RECORDING}.neuron_excerpts GROUP BY excerpt_id "
            "HAVING count(DISTINCT (layer, neuron)) >= 2) "
            "SELECT n.layer, n.neuron, n.excerpt_id, any_value(n.activations) AS activations "
            f"FROM {RECORDING}.neuron_excerpts n JOIN shared USING (excerpt_id) "
            "GROUP BY n.layer, n.neuron, n.excerpt_id ORDER BY n.excerpt_id, n.layer, n.neuron"
        ).to_arrow_table()
        index = table.schema.get_field_index("activations")
        return table.set_column(index, "activations", decode_lists(table.column("activations")))


def neuron_excerpt_from_row(neuron: NeuronId, row: Sequence[Any]) -> NeuronExcerpt:
    """A NeuronExcerpt from (excerpt_id, token_ids, tokens, kind, rank, split, activations, quantile_bin)."""
    return NeuronExcerpt(
        neuron=neuron,
        excerpt=Excerpt(row[0], tuple(row[1]), tuple(row[2])),
        kind=ExcerptKind(row[3]),
        rank=int(row[4]),
        split=Split(row[5]),
        activations=decode_tuple(row[6]),
        quantile_bin=None if row[7] is None else int(row[7]),
    )


def neuron_stats_from_row(neuron: NeuronId, row: Sequence[Any]) -> NeuronStats:
    """NeuronStats from the neuron_stats columns after (layer, neuron), in schema order."""
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

def neuron_excerpt_filter(
    neuron: NeuronId, kinds: Sequence[ExcerptKind] | None = None, splits: Sequence[Split] | None = None
) -> tuple[str, list[Any]]:
    """WHERE clause and parameters selecting one neuron's rows of neuron_excerpts (alias n)."""
    clauses = ["n.layer = ?", "n.neuron = ?"]
    params: list[Any] = [neuron.layer, neuron.neuron]
    if kinds:
        clauses.append("n.kind IN (SELECT unnest(?))")
        params.append([str(k) for k in kinds])
    if splits:
        clauses.append("n.split IN (SELECT unnest(?))")
        params.append([str(s) for s in splits])
    return " AND ".join(clauses), params


class RecordingWriter(RecordingQueries):
    """The writer of a new recording file (it never opens an existing one): `build`'s, and `import-openai`'s. It
    reads what it wrote (an import correlates neurons over their shared excerpts before it finishes)."""

    exact_activations = False
    """Whether activation lists are stored as float32 rather than packed in 12 bits (core.packing): an import's."""

    @classmethod
    def create(cls, path: str | Path, *, exact_activations: bool = False) -> RecordingWriter:
        """An empty recording at `path` (an old file there is replaced), with its schema and a new build id.
        `exact_activations`: store activation lists as float32 (an import's published values), not 12 bits."""
        path = Path(path)
        path.unlink(missing_ok=True)
        db = Database(path)
        db.attach(RECORDING, path, read_only=False)
        cur = db.cursor()
        create_tables(cur, RECORDING)
        encoding = DESCRIPTION_EXACT if exact_activations else DESCRIPTION
        write_meta(cur, RECORDING, {"build_id": uuid.uuid4().hex, "activation_encoding": encoding})
        writer = cls(db)
        writer.exact_activations = exact_activations
        return writer

    def set_meta(self, values: dict[str, Any]) -> None:
        """Set keys of the recording's meta (the build's settings and sizes)."""
        write_meta(self._db.cursor(), RECORDING, values)

    def insert_excerpts(self, token_ids: np.ndarray, tokens: Sequence[Sequence[str]], sources: Sequence[str]) -> None:
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
        self._insert("excerpts", table)
        log.debug("stored %d excerpts of %d tokens", n, length)

    def insert_excerpt_rows(self, table: pa.Table) -> None:
        """Excerpts with ids of their own (excerpt_id, token_ids, tokens, source), for a recording written in parts
        (an import)."""
        self._insert("excerpts", table)

    def insert_vocab(self, token_ids: np.ndarray, tokens: Sequence[str], counts: np.ndarray) -> None:
        """The corpus's vocabulary: each token id with its display text and count."""
        table = pa.table(
            {
                "token_id": pa.array(token_ids.astype(np.int32)),
                "token": pa.array(list(tokens), type=pa.string()),
                "count": pa.array(counts.astype(np.int64)),
            }
        )
        self._insert("vocab", table)

    def insert_neuron_stats(self, table: pa.Table) -> None:
        """Rows of neuron_stats for one layer, columns in schema order."""
        self._insert("neuron_stats", table)

    def insert_neuron_excerpts(self, table: pa.Table) -> None:
        """Rows of neuron_excerpts for one layer, sorted by neuron, columns in schema order; `activations` packed
        already (core.packing.encode_rows, as the build does) or float lists, which are packed here."""
        self._insert("neuron_excerpts", pack_activations(table, exact=self.exact_activations))

    def insert_token_means(self, table: pa.Table) -> None:
        """Rows of token_means for one layer, columns in schema order."""
        self._insert("token_means", table)

    def checkpoint(self) -> None:
        """Write everything into the file (before it is renamed into place)."""
        self._db.checkpoint(RECORDING)

    def _insert(self, table_name: str, rows: pa.Table) -> None:
        """Append an Arrow table whose columns are in the target table's order."""
        insert_arrow(self._db.cursor(), RECORDING, table_name, rows)


def pack_activations(table: pa.Table, *, exact: bool = False) -> pa.Table:
    """neuron_excerpts rows with their `activations` packed (a column of float lists is encoded, as float32 when
    `exact`; a packed one is kept)."""
    index = table.schema.get_field_index("activations")
    column = table.column(index)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return table
    return table.set_column(index, "activations", encode_lists(column, exact=exact))


def insert_arrow(cur: duckdb.DuckDBPyConnection, database: str, table_name: str, rows: pa.Table) -> None:
    """Append an Arrow table (columns in the target table's order) in one statement on this cursor."""
    cur.register("arrow_rows", rows)
    try:
        cur.execute(f"INSERT INTO {database}.{table_name} SELECT * FROM arrow_rows")
    finally:
        cur.unregister("arrow_rows")

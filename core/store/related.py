"""Related tokens and related neurons (results file; written by core/related.py, formulas in docs/related.md).

RelatedQueries reads them (the activation_* token lists come from the recording's token_means); RelatedWrites is
the part of ResultsWriter that stores a related run one layer at a time, resumably.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from core.store.database import Queries
from core.store.recording import RecordingQueries, insert_arrow
from core.store.schema import RESULTS, read_meta, write_meta
from core.types import NeuronId, RelatedNeuron, RelatedNeuronKind, RelatedToken, RelatedTokenKind

_RELATED_TABLES = ("related_tokens", "related_neurons", "related_layers")
_FROM_TOKEN_MEANS = (RelatedTokenKind.ACTIVATION_TOP, RelatedTokenKind.ACTIVATION_BOTTOM)
"""Related-token kinds read from the recording's token means, not from the related tables."""


class RelatedQueries(RecordingQueries):
    """Reads of the related tables."""

    def related_tokens(self, neuron: NeuronId, kind: RelatedTokenKind | str, limit: int = 20) -> list[RelatedToken]:
        """A neuron's related tokens of one kind, best first; activation_* come from token_means (with counts)."""
        kind = RelatedTokenKind(kind)
        return self.related_tokens_of_kinds(neuron, [kind], limit)[kind]

    def related_tokens_of_kinds(self, neuron: NeuronId, kinds: Sequence[RelatedTokenKind | str], limit: int = 20
                                ) -> dict[RelatedTokenKind, list[RelatedToken]]:
        """`related_tokens` of several kinds, the weight-based ones in one query (a page shows four lists)."""
        chosen = [RelatedTokenKind(kind) for kind in kinds]
        found: dict[RelatedTokenKind, list[RelatedToken]] = {kind: [] for kind in chosen}
        weighted = [str(kind) for kind in chosen if kind not in _FROM_TOKEN_MEANS]
        for kind in chosen:
            if kind in _FROM_TOKEN_MEANS:
                means = self.token_means(neuron, limit, highest=kind == RelatedTokenKind.ACTIVATION_TOP)
                found[kind] = [RelatedToken(m.token_id, m.token, m.mean_activation, m.count) for m in means]
        if weighted:
            rows = self._db.cursor().execute(
                f"SELECT r.kind, r.token_id, coalesce(v.token, ''), r.value FROM {RESULTS}.related_tokens r "
                f"LEFT JOIN {RESULTS}.model_vocab v USING (token_id) "
                "WHERE r.layer = ? AND r.neuron = ? AND r.kind IN (SELECT unnest(?)) "
                "QUALIFY row_number() OVER (PARTITION BY r.kind ORDER BY r.rank) <= ? ORDER BY r.kind, r.rank",
                [neuron.layer, neuron.neuron, weighted, limit],
            ).fetchall()
            for r in rows:
                found[RelatedTokenKind(r[0])].append(RelatedToken(int(r[1]), r[2], float(r[3])))
        return found

    def related_neurons(self, neuron: NeuronId, kind: RelatedNeuronKind | str, limit: int = 10) -> list[RelatedNeuron]:
        """A neuron's related neurons of one kind, strongest first ([] until `python -m core related` ran)."""
        kind = RelatedNeuronKind(kind)
        return self.related_neurons_of_kinds(neuron, [kind], limit)[kind]

    def related_neurons_of_kinds(self, neuron: NeuronId, kinds: Sequence[RelatedNeuronKind | str], limit: int = 10
                                 ) -> dict[RelatedNeuronKind, list[RelatedNeuron]]:
        """`related_neurons` of several kinds in one query (the related page shows every kind)."""
        found: dict[RelatedNeuronKind, list[RelatedNeuron]] = {RelatedNeuronKind(kind): [] for kind in kinds}
        rows = self._db.cursor().execute(
            f"SELECT kind, other_layer, other_neuron, strength FROM {RESULTS}.related_neurons "
            "WHERE layer = ? AND neuron = ? AND kind IN (SELECT unnest(?)) "
            "QUALIFY row_number() OVER (PARTITION BY kind ORDER BY rank) <= ? ORDER BY kind, rank",
            [neuron.layer, neuron.neuron, [str(kind) for kind in found], limit],
        ).fetchall()
        for r in rows:
            found[RelatedNeuronKind(r[0])].append(RelatedNeuron(NeuronId(int(r[1]), int(r[2])), float(r[3])))
        return found

    def related_settings(self) -> dict[str, Any] | None:
        """{"settings": ..., "finished": bool} of the last related run, None when there was none."""
        return read_meta(self._db.cursor(), RESULTS).get("related")

    def related_layers_done(self) -> set[int]:
        """Layers whose related rows are complete."""
        rows = self._db.cursor().execute(f"SELECT DISTINCT layer FROM {RESULTS}.related_layers").fetchall()
        return {int(r[0]) for r in rows}


class RelatedWrites(Queries):
    """Storing a related run (part of ResultsWriter)."""

    def start_related(self, settings: dict[str, Any], token_ids: np.ndarray, tokens: Sequence[str]) -> None:
        """Drop every related row, store the model's vocabulary and the new settings (one transaction)."""
        vocab = pa.table(
            {"token_id": pa.array(np.asarray(token_ids, dtype=np.int32)), "token": pa.array(list(tokens), pa.string())}
        )
        with self._db.transaction() as cur:
            for name in (*_RELATED_TABLES, "model_vocab"):
                cur.execute(f"DELETE FROM {RESULTS}.{name}")
            insert_arrow(cur, RESULTS, "model_vocab", vocab)
            write_meta(cur, RESULTS, {"related": {"settings": settings, "finished": False}})

    def insert_related_layer(self, layer: int, tokens: pa.Table, neurons: pa.Table) -> None:
        """One layer's related_tokens and related_neurons rows and its progress row, all or nothing."""
        with self._db.transaction() as cur:
            for name in _RELATED_TABLES:
                cur.execute(f"DELETE FROM {RESULTS}.{name} WHERE layer = ?", [layer])
            insert_arrow(cur, RESULTS, "related_tokens", tokens)
            insert_arrow(cur, RESULTS, "related_neurons", neurons)
            cur.execute(f"INSERT INTO {RESULTS}.related_layers VALUES (?, current_timestamp)", [layer])

    def finish_related(self, settings: dict[str, Any]) -> None:
        """Mark the related tables complete for these settings."""
        with self._db.transaction() as cur:
            write_meta(cur, RESULTS, {"related": {"settings": settings, "finished": True}})

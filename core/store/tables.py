"""Tables of neurons for the dashboard: the picker's filtered and sorted list, lists of chosen neurons with their
best explanation, and scores by layer (recording's statistics joined with the results' best explanations)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.store.database import Queries, StoreError
from core.store.explanations import BEST_EXPLANATIONS
from core.store.schema import NOTES, RECORDING
from core.types import LayerScores, NeuronId, NeuronRow

NEURON_ORDERS: dict[str, str] = {
    "score": "b.score",
    "density": "s.density",
    "max": "s.max_activation",
    "min": "s.min_activation",
    "neuron": "s.layer, s.neuron",
}
"""Sort keys of neuron_table -> the SQL they order by (the only text that reaches ORDER BY)."""

_ROW = "s.layer, s.neuron, s.max_activation, s.min_activation, s.density, b.explanation, b.score"
_FROM = f"{RECORDING}.neuron_stats s LEFT JOIN ({BEST_EXPLANATIONS}) b USING (layer, neuron)"

_MADE = (f"SELECT g.layer, g.neuron, g.text, l.score_all AS score FROM {NOTES}.suggestions g "
         f"LEFT JOIN {NOTES}.live_scores l USING (score_id) WHERE g.source = ? "
         "QUALIFY row_number() OVER (PARTITION BY g.layer, g.neuron ORDER BY g.suggestion_id DESC) = 1")
"""Each neuron's latest suggestion from one source of the notes (the parameter), with its live score."""
_FILLED = (f"{RECORDING}.neuron_stats s LEFT JOIN (SELECT layer, neuron, "
           "coalesce(e.explanation, m.text) AS explanation, "
           "CASE WHEN e.explanation IS NULL THEN m.score ELSE e.score END AS score, "
           "e.explanation IS NULL AND m.text IS NOT NULL AS made "
           f"FROM ({BEST_EXPLANATIONS}) e FULL OUTER JOIN ({_MADE}) m USING (layer, neuron)) b USING (layer, neuron)")
"""_FROM with each neuron's best explanation, else the latest one from a source of the notes (aliases s and b as
in _FROM, so the same filters and orders apply to both)."""


class NeuronTableQueries(Queries):
    """Neurons with their statistics and best explanation."""

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
        made_by: str | None = None,
    ) -> list[NeuronRow]:
        """Neurons filtered and sorted (`order` is a NEURON_ORDERS key). With `made_by` (a source of the notes,
        which must be attached: the dashboard's), a neuron without an explanation gets that source's latest
        suggestion instead, marked `made`, searched and sorted with the rest."""
        if order not in NEURON_ORDERS:
            raise StoreError(f"cannot sort neurons by {order!r}; choose one of {', '.join(NEURON_ORDERS)}")
        where, params = neuron_table_filter(layer=layer, search=search, scored_only=scored_only, min_layer=min_layer)
        source, made, source_params = _source(made_by)
        direction = "DESC" if descending else "ASC"
        rows = self._db.cursor().execute(
            f"SELECT {_ROW}, {made} FROM {source} WHERE {where} "
            f"ORDER BY {NEURON_ORDERS[order]} {direction} NULLS LAST, s.layer, s.neuron LIMIT ? OFFSET ?",
            [*source_params, *params, limit, offset],
        ).fetchall()
        return [_neuron_row(r) for r in rows]

    def count_neurons(self, *, layer: int | None = None, search: str | None = None, scored_only: bool = False,
                      made_by: str | None = None) -> int:
        """How many neurons `neuron_table` would list without a limit."""
        where, params = neuron_table_filter(layer=layer, search=search, scored_only=scored_only)
        source, _made, source_params = _source(made_by)
        row = self._db.cursor().execute(f"SELECT count(*) FROM {source} WHERE {where}",
                                        [*source_params, *params]).fetchone()
        return int(row[0]) if row else 0

    def neuron_rows(self, neurons: Sequence[NeuronId]) -> dict[NeuronId, NeuronRow]:
        """These neurons' statistics and best explanations (for lists of related neurons)."""
        if not neurons:
            return {}
        rows = self._db.cursor().execute(
            f"SELECT {_ROW}, false FROM {_FROM} JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w "
            "USING (layer, neuron)",
            [[n.layer for n in neurons], [n.neuron for n in neurons]],
        ).fetchall()
        found = [_neuron_row(r) for r in rows]
        return {row.neuron: row for row in found}

    def scores_by_layer(self) -> list[LayerScores]:
        """Per layer: how many neurons have a scored explanation, and the mean and median of their best scores."""
        rows = self._db.cursor().execute(
            f"SELECT layer, count(*), avg(score), median(score) FROM ({BEST_EXPLANATIONS}) "
            "WHERE score IS NOT NULL GROUP BY layer ORDER BY layer"
        ).fetchall()
        return [LayerScores(int(r[0]), int(r[1]), float(r[2]), float(r[3])) for r in rows]


def _source(made_by: str | None) -> tuple[str, str, list[Any]]:
    """What neuron_table reads from (aliases s and b), its column saying whether a row's explanation is the notes
    source's, and its parameters (the source, bound)."""
    return (_FROM, "false", []) if made_by is None else (_FILLED, "b.made", [made_by])


def _neuron_row(r: Sequence[Any]) -> NeuronRow:
    return NeuronRow(NeuronId(int(r[0]), int(r[1])), float(r[2]), float(r[3]), float(r[4]), r[5],
                     None if r[6] is None else float(r[6]), bool(r[7]))


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, with % _ and the escape character taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def neuron_table_filter(
    *, layer: int | None = None, search: str | None = None, scored_only: bool = False, min_layer: int | None = None
) -> tuple[str, list[Any]]:
    """WHERE clause and parameters for neuron_table (aliases s: neuron_stats, b: best explanation)."""
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

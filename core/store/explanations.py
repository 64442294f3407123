"""Explanations, their scores and their simulations (results file; written by explain runs, `score`, and imports).

ExplanationQueries reads them; ExplanationWrites is the part of ResultsWriter that stores them.
BEST_EXPLANATIONS is the relation every table of neurons joins for "the neuron's best explanation".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from core.packing import decode_tuple
from core.store.database import Queries
from core.store.schema import RECORDING, RESULTS
from core.types import (
    ExcerptKind,
    ExcerptSimulation,
    ExplanationRecord,
    ExplanationStatus,
    NeuronId,
    Scores,
    Split,
)

_COLUMNS = (
    "e.explanation_id, e.layer, e.neuron, e.text, e.explainer, e.model, e.prompt_version, e.simulator, e.status, "
    "e.failure, e.candidates, e.calibration_score, strftime(e.created_at, '%Y-%m-%d %H:%M:%S'), "
    "s.score_all, s.score_top, s.score_random"
)
_FROM = (
    f"{RESULTS}.explanations e LEFT JOIN {RESULTS}.scores s "
    "ON s.explanation_id = e.explanation_id AND s.simulator = e.simulator"
)

BEST_EXPLANATIONS = (
    "SELECT e.layer, e.neuron, e.explanation_id, e.text AS explanation, e.explainer, e.simulator, "
    f"s.score_all AS score, s.score_top, s.score_random FROM {_FROM} WHERE e.status = 'ok' "
    "QUALIFY row_number() OVER (PARTITION BY e.layer, e.neuron "
    "ORDER BY e.calibration_score DESC NULLS LAST, e.explanation_id DESC) = 1"
)
"""A relation (layer, neuron, explanation_id, explanation, explainer, simulator, score, score_top, score_random):
each neuron's best finished explanation, for joining into tables. "Best" is chosen on the CALIBRATE excerpts
(calibration_score; ones without it last, newest first), never on the SCORE excerpts whose score is reported: a
choice made on the reported score would inflate it."""


class ExplanationQueries(Queries):
    """Reads of explanations, scores and simulations."""

    def explanations(self, neuron: NeuronId) -> list[ExplanationRecord]:
        """A neuron's explanations with their scores, best first as BEST_EXPLANATIONS chooses it (on the CALIBRATE
        excerpts), failed ones last."""
        rows = self._db.cursor().execute(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.layer = ? AND e.neuron = ? "
            "ORDER BY e.status = 'ok' DESC, e.calibration_score DESC NULLS LAST, e.explanation_id DESC",
            [neuron.layer, neuron.neuron],
        ).fetchall()
        return [_explanation(row) for row in rows]

    def run_explanations(
        self, neurons: Sequence[NeuronId], explainer: str, simulator: str
    ) -> dict[NeuronId, ExplanationRecord]:
        """For resuming and summing up a run: each listed neuron's latest explanation by this explainer and
        simulator (a finished one wins over a failed one)."""
        if not neurons:
            return {}
        rows = self._db.cursor().execute(
            f"SELECT {_COLUMNS} FROM {_FROM} "
            "JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w ON w.layer = e.layer AND w.neuron = e.neuron "
            "WHERE e.explainer = ? AND e.simulator = ? "
            "QUALIFY row_number() OVER (PARTITION BY e.layer, e.neuron "
            "ORDER BY e.status = 'ok' DESC, e.explanation_id DESC) = 1",
            [[n.layer for n in neurons], [n.neuron for n in neurons], explainer, simulator],
        ).fetchall()
        records = [_explanation(row) for row in rows]
        return {record.neuron: record for record in records}

    def simulations(self, explanation_id: int, simulator: str | None = None) -> list[ExcerptSimulation]:
        """The simulated activations of an explanation beside the real ones, per scored excerpt (top first, then
        random, by rank). `simulator` defaults to the one that scored it when it was made."""
        rows = self._db.cursor().execute(
            "SELECT m.excerpt_id, m.kind, m.split, x.tokens, n.activations, m.normalized_predictions, m.score "
            f"FROM {RESULTS}.simulations m JOIN {RESULTS}.explanations e USING (explanation_id) "
            f"JOIN {RECORDING}.neuron_excerpts n ON n.layer = e.layer AND n.neuron = e.neuron "
            "AND n.excerpt_id = m.excerpt_id AND n.kind = m.kind "
            f"JOIN {RECORDING}.excerpts x ON x.excerpt_id = m.excerpt_id "
            "WHERE m.explanation_id = ? AND m.simulator = coalesce(?, e.simulator) "
            "ORDER BY m.kind = 'top' DESC, n.rank",
            [explanation_id, simulator],
        ).fetchall()
        return [
            ExcerptSimulation(
                excerpt_id=int(r[0]), kind=ExcerptKind(r[1]), split=Split(r[2]), tokens=tuple(r[3]),
                activations=decode_tuple(r[4]), normalized_predictions=tuple(float(v) for v in r[5]),
                score=None if r[6] is None else float(r[6]),
            )
            for r in rows
        ]

    def explanation_counts(self) -> tuple[int, int]:
        """(explanations, scores) stored, failed runs included."""
        row = self._db.cursor().execute(
            f"SELECT (SELECT count(*) FROM {RESULTS}.explanations), (SELECT count(*) FROM {RESULTS}.scores)"
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def explanation_scores(self, explanation_id: int) -> dict[str, Scores]:
        """Every simulator's scores of one explanation, by simulator spec."""
        rows = self._db.cursor().execute(
            f"SELECT simulator, score_all, score_top, score_random, tokens FROM {RESULTS}.scores "
            "WHERE explanation_id = ? ORDER BY simulator", [explanation_id],
        ).fetchall()
        return {r[0]: Scores(r[1], r[2], r[3], int(r[4])) for r in rows}


class ExplanationWrites(Queries):
    """Storing explain runs (part of ResultsWriter)."""

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
        human explanation (explainer "human") replaces an earlier one with the same text. The run takes the id of
        the one it replaces (else the next id); returns it.
        """
        with self._db.transaction() as cur:
            stale = (
                f"SELECT explanation_id FROM {RESULTS}.explanations WHERE layer = ? AND neuron = ? AND explainer = ? "
                "AND simulator = ? AND (status = ? OR (explainer = 'human' AND text = ?))"
            )
            params = [neuron.layer, neuron.neuron, explainer, simulator, str(ExplanationStatus.FAILED), text]
            # the run takes the id of the one it replaces: a rerun (a killed `score` run again) stores what an
            # uninterrupted run stores, and a link to the explanation still finds it
            row = cur.execute(f"SELECT coalesce(min(explanation_id), (SELECT coalesce(max(explanation_id), 0) + 1 "
                              f"FROM {RESULTS}.explanations)) FROM ({stale})", params).fetchone()
            for table in ("simulations", "scores", "explanations"):  # explanations last: the others select through it
                cur.execute(f"DELETE FROM {RESULTS}.{table} WHERE explanation_id IN ({stale})", params)
            explanation_id = int(row[0]) if row else 1
            cur.execute(
                f"INSERT INTO {RESULTS}.explanations "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC'))",
                [explanation_id, neuron.layer, neuron.neuron, text, explainer, model, prompt_version, simulator,
                 str(status), failure, candidates, finite(calibration_score)],
            )
            _insert_scores(cur, explanation_id, simulator, scores, simulations)
        return explanation_id

    def add_score(
        self, explanation_id: int, simulator: str, scores: Scores, simulations: Sequence[ExcerptSimulation] = ()
    ) -> None:
        """Store the scores and simulations of an existing explanation by one more simulator (replacing that
        simulator's earlier ones), in one transaction (`score --imported`)."""
        with self._db.transaction() as cur:
            for table in ("simulations", "scores"):
                cur.execute(f"DELETE FROM {RESULTS}.{table} WHERE explanation_id = ? AND simulator = ?",
                            [explanation_id, simulator])
            _insert_scores(cur, explanation_id, simulator, scores, simulations)

    def insert_explanation_rows(self, explanations: pa.Table, scores: pa.Table, simulations: pa.Table) -> int:
        """Many finished explanations at once (an import), in one transaction. The tables hold the columns of
        explanations (without created_at), scores and simulations in schema order, with explanation ids counted
        from 0; they are stored after the last id. Returns the id the first one got."""
        with self._db.transaction() as cur:
            [(base,)] = cur.execute(
                f"SELECT coalesce(max(explanation_id), 0) + 1 FROM {RESULTS}.explanations"
            ).fetchall()  # fetchall: the cursor must be finished before it registers the rows
            for name, rows in (("explanations", explanations), ("scores", scores), ("simulations", simulations)):
                cur.register("interop_rows", rows)
                try:
                    stamp = ", (now() AT TIME ZONE 'UTC')" if name == "explanations" else ""
                    cur.execute(f"INSERT INTO {RESULTS}.{name} SELECT * REPLACE (explanation_id + ? AS "
                                f"explanation_id){stamp} FROM interop_rows", [base])
                finally:
                    cur.unregister("interop_rows")
        return int(base)


def _insert_scores(cur: duckdb.DuckDBPyConnection, explanation_id: int, simulator: str, scores: Scores | None,
                   simulations: Sequence[ExcerptSimulation]) -> None:
    """The scores row and simulated excerpts of one explanation by one simulator (in the caller's transaction)."""
    if scores is not None:
        cur.execute(
            f"INSERT INTO {RESULTS}.scores VALUES (?, ?, ?, ?, ?, ?)",
            [explanation_id, simulator, finite(scores.all), finite(scores.top), finite(scores.random), scores.tokens],
        )
    if simulations:
        cur.executemany(
            f"INSERT INTO {RESULTS}.simulations VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[explanation_id, simulator, s.excerpt_id, str(s.kind), str(s.split), list(s.normalized_predictions),
              finite(s.score)] for s in simulations],
        )


def finite(value: float | None) -> float | None:
    """A score as stored: None for undefined (None or NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _explanation(row: Sequence[Any]) -> ExplanationRecord:
    """An ExplanationRecord from a row of _COLUMNS."""
    return ExplanationRecord(
        explanation_id=int(row[0]), neuron=NeuronId(int(row[1]), int(row[2])), text=row[3], explainer=row[4],
        model=row[5], prompt_version=row[6], simulator=row[7], status=ExplanationStatus(row[8]), failure=row[9],
        candidates=int(row[10]), calibration_score=row[11], created_at=row[12], score_all=row[13],
        score_top=row[14], score_random=row[15],
    )

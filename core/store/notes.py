"""What people write in the dashboard (NAME.notes.duckdb): live scores, suggestions, ratings, the dashboard's LLM
answers. NotesStore is the only object through which the dashboard writes anything; the dashboard process is the
file's only writer, so it never waits for the command line's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import duckdb

from core.store.database import Database, Queries
from core.store.explanations import finite
from core.store.responses import ResponseCache
from core.store.schema import NOTES, NOTES_TABLES
from core.types import (
    BoardSettings,
    ClassShare,
    Disagreement,
    HumanRating,
    LiveScore,
    LiveSimulation,
    NeuronId,
    Rating,
    Scores,
    Suggestion,
)

_STAMP = "strftime(created_at, '%Y-%m-%d %H:%M:%S')"


class NotesQueries(Queries):
    """Reads of the notes."""

    def live_score(
        self, neuron: NeuronId, text: str, simulator: str, *, with_simulations: bool = True
    ) -> LiveScore | None:
        """The latest live score of exactly this text for this neuron by this simulator, if any."""
        row = self._db.cursor().execute(
            f"SELECT score_id FROM {NOTES}.live_scores WHERE layer = ? AND neuron = ? AND text = ? AND simulator = ? "
            "ORDER BY score_id DESC LIMIT 1",
            [neuron.layer, neuron.neuron, text, simulator],
        ).fetchone()
        return None if row is None else self.live_score_by_id(int(row[0]), with_simulations=with_simulations)

    def live_score_by_id(self, score_id: int, *, with_simulations: bool = True) -> LiveScore | None:
        """One live score, with its per-excerpt predictions unless `with_simulations` is False."""
        cur = self._db.cursor()
        row = cur.execute(
            "SELECT layer, neuron, text, simulator, score_all, score_top, score_random, author_saw_score_excerpts "
            f"FROM {NOTES}.live_scores WHERE score_id = ?",
            [score_id],
        ).fetchone()
        if row is None:
            return None
        simulations: tuple[LiveSimulation, ...] = ()
        if with_simulations:
            rows = cur.execute(
                f"SELECT excerpt_id, normalized_predictions, score FROM {NOTES}.live_simulations "
                "WHERE score_id = ? ORDER BY excerpt_id",
                [score_id],
            ).fetchall()
            simulations = tuple(LiveSimulation(int(r[0]), tuple(float(v) for v in r[1]), r[2]) for r in rows)
        return LiveScore(score_id, NeuronId(int(row[0]), int(row[1])), row[2], row[3], row[4], row[5], row[6],
                         simulations, row[7] is not False)  # NULL: written before the flag existed, read as seen

    def suggestions(self, neuron: NeuronId) -> list[Suggestion]:
        """A neuron's suggestions, best live score first (unscored last), without their simulations."""
        rows = self._db.cursor().execute(
            f"SELECT s.suggestion_id, s.text, s.author, s.source, strftime(s.created_at, '%Y-%m-%d %H:%M:%S'), "
            "l.score_id, l.simulator, l.score_all, l.score_top, l.score_random, l.author_saw_score_excerpts "
            f"FROM {NOTES}.suggestions s LEFT JOIN {NOTES}.live_scores l USING (score_id) "
            "WHERE s.layer = ? AND s.neuron = ? ORDER BY l.score_all DESC NULLS LAST, s.suggestion_id DESC",
            [neuron.layer, neuron.neuron],
        ).fetchall()
        return [
            Suggestion(int(r[0]), neuron, r[1], r[2], r[3], r[4],
                       None if r[5] is None else LiveScore(int(r[5]), neuron, r[1], r[6], r[7], r[8], r[9], (),
                                                           r[10] is not False))
            for r in rows
        ]

    def suggestions_from(self, source: str, neurons: Sequence[NeuronId]) -> dict[NeuronId, Suggestion]:
        """The latest suggestion from `source` (e.g. the offline default run when a neuron is first viewed) of each
        of these neurons that has one, with its live score."""
        if not neurons:
            return {}
        rows = self._db.cursor().execute(
            "SELECT s.suggestion_id, s.layer, s.neuron, s.text, s.author, s.source, "
            "strftime(s.created_at, '%Y-%m-%d %H:%M:%S'), "
            "l.score_id, l.simulator, l.score_all, l.score_top, l.score_random, l.author_saw_score_excerpts "
            f"FROM {NOTES}.suggestions s JOIN (SELECT unnest(?) AS layer, unnest(?) AS neuron) w USING (layer, neuron) "
            f"LEFT JOIN {NOTES}.live_scores l USING (score_id) WHERE s.source = ? ORDER BY s.suggestion_id",
            [[n.layer for n in neurons], [n.neuron for n in neurons], source],
        ).fetchall()
        found: dict[NeuronId, Suggestion] = {}
        for r in rows:  # later ids overwrite earlier ones: the latest is kept
            neuron = NeuronId(int(r[1]), int(r[2]))
            score = None if r[7] is None else LiveScore(int(r[7]), neuron, r[3], r[8], r[9], r[10], r[11], (),
                                                        r[12] is not False)
            found[neuron] = Suggestion(int(r[0]), neuron, r[3], r[4], r[5], r[6], score)
        return found

    def ratings(self, neuron: NeuronId) -> list[HumanRating]:
        """A neuron's ratings, newest first."""
        rows = self._db.cursor().execute(
            f"SELECT rating_id, explanation_text, explanation_ref, score, rating, note, author, {_STAMP} "
            f"FROM {NOTES}.ratings WHERE layer = ? AND neuron = ? ORDER BY rating_id DESC",
            [neuron.layer, neuron.neuron],
        ).fetchall()
        return [HumanRating(int(r[0]), neuron, r[1], r[2], r[3], Rating(r[4]), r[5], r[6], r[7]) for r in rows]

    def disagreements(self, high: float = 0.4, low: float = 0.2, limit: int = 10) -> list[Disagreement]:
        """Rated explanations where people and the score disagree: mostly "wrong" at score >= high, or mostly
        "right" at score < low; largest gap first."""
        rows = self._db.cursor().execute(
            "WITH r AS (SELECT layer, neuron, explanation_text, max(score) AS score, "
            "count(*) FILTER (rating = 'right') AS n_right, count(*) FILTER (rating = 'partly') AS n_partly, "
            f"count(*) FILTER (rating = 'wrong') AS n_wrong FROM {NOTES}.ratings WHERE score IS NOT NULL "
            "GROUP BY ALL) "
            "SELECT * FROM r WHERE (n_wrong > n_right + n_partly AND score >= ?) "
            "OR (n_right > n_wrong + n_partly AND score < ?) "
            "ORDER BY abs(score - CASE WHEN n_wrong > n_right THEN 0 ELSE 1 END) DESC, layer, neuron LIMIT ?",
            [high, low, limit],
        ).fetchall()
        return [Disagreement(NeuronId(int(r[0]), int(r[1])), r[2], float(r[3]), int(r[4]), int(r[5]), int(r[6]))
                for r in rows]

    # --- the classroom (core/classroom.py) ---------------------------------------------------------------------

    def class_share(self) -> ClassShare | None:
        """The teacher's latest "show this neuron to the class" (None before the first)."""
        row = self._db.cursor().execute(
            f"SELECT share_id, layer, neuron, page, {_STAMP} FROM {NOTES}.class_shares "
            "ORDER BY share_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else ClassShare(int(row[0]), NeuronId(int(row[1]), int(row[2])), row[3], row[4])

    def board_settings(self, neuron: NeuronId) -> BoardSettings:
        """What the teacher set for the neuron's class board (an open, uncleared board when nothing was set)."""
        row = self._db.cursor().execute(
            f"SELECT open, pinned_suggestion, cleared_suggestions, cleared_ratings FROM {NOTES}.class_boards "
            "WHERE layer = ? AND neuron = ?",
            [neuron.layer, neuron.neuron],
        ).fetchone()
        if row is None:
            return BoardSettings(neuron)
        return BoardSettings(neuron, bool(row[0]), None if row[1] is None else int(row[1]), int(row[2]), int(row[3]))

    def rating_counts(self, neuron: NeuronId, after: int = 0) -> dict[str, tuple[int, int, int]]:
        """The neuron's ratings with an id above `after`, counted per rated explanation (its explanation_ref):
        (right, partly, wrong)."""
        rows = self._db.cursor().execute(
            "SELECT explanation_ref, count(*) FILTER (rating = 'right'), count(*) FILTER (rating = 'partly'), "
            f"count(*) FILTER (rating = 'wrong') FROM {NOTES}.ratings "
            "WHERE layer = ? AND neuron = ? AND rating_id > ? GROUP BY explanation_ref",
            [neuron.layer, neuron.neuron, after],
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def count_rows(self, table: str) -> int:
        """Rows of a notes table (suggestions, ratings, live_scores, ...): for counting what a class wrote."""
        if table not in NOTES_TABLES:
            raise ValueError(f"unknown notes table {table!r}")
        row = self._db.cursor().execute(f"SELECT count(*) FROM {NOTES}.{table}").fetchone()
        return int(row[0]) if row else 0


class NotesStore(NotesQueries):
    """Reads and writes of the notes: the dashboard's one write surface."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.version = 0
        """Counts the writes made through this object: a cache key for views that read the notes."""
        self._neuron_versions: dict[NeuronId, int] = {}
        self._counting = threading.Lock()  # writes come from page runs and the background thread at once
        self.class_version = 0
        """Counts the writes of the classroom's state (shares and boards): what students' pages poll, an int read
        without a query (this process is the notes' only writer, so no write can happen behind its back)."""
        self.responses = ResponseCache(db, NOTES)
        """The dashboard's LLM answers (core/llm.py)."""

    def add_live_score(
        self,
        neuron: NeuronId,
        text: str,
        simulator: str,
        scores: Scores,
        simulations: Sequence[LiveSimulation],
        author_saw_score_excerpts: bool = True,
    ) -> LiveScore:
        """Keep a live scoring of `text`, with one simulation per scoring excerpt; `author_saw_score_excerpts`:
        whether the text's author could have seen them (the score is then optimistic)."""
        values = (finite(scores.all), finite(scores.top), finite(scores.random))
        with self._db.transaction() as cur:
            score_id = _next_id(cur, "live_scores", "score_id")
            cur.execute(
                f"INSERT INTO {NOTES}.live_scores (score_id, layer, neuron, text, simulator, score_all, score_top, "
                "score_random, created_at, author_saw_score_excerpts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC'), ?)",
                [score_id, neuron.layer, neuron.neuron, text, simulator, *values, author_saw_score_excerpts],
            )
            if simulations:
                cur.executemany(
                    f"INSERT INTO {NOTES}.live_simulations VALUES (?, ?, ?, ?)",
                    [[score_id, s.excerpt_id, list(s.normalized_predictions), finite(s.score)] for s in simulations],
                )
        self._changed(neuron)
        return LiveScore(score_id, neuron, text, simulator, *values, tuple(simulations), author_saw_score_excerpts)

    def add_suggestion(
        self, neuron: NeuronId, text: str, author: str, source: str = "person", score_id: int | None = None
    ) -> Suggestion:
        """Keep an explanation someone suggested (or generated) in the dashboard, with its live score's id."""
        author = author or "anonymous"
        with self._db.transaction() as cur:
            suggestion_id = _next_id(cur, "suggestions", "suggestion_id")
            row = cur.execute(
                f"INSERT INTO {NOTES}.suggestions VALUES (?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC')) "
                f"RETURNING {_STAMP}",
                [suggestion_id, neuron.layer, neuron.neuron, text, author, source, score_id],
            ).fetchone()
        self._changed(neuron)
        score = None if score_id is None else self.live_score_by_id(score_id, with_simulations=False)
        return Suggestion(suggestion_id, neuron, text, author, source, row[0] if row else "", score)

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
        rating, author = Rating(rating), author or "anonymous"
        with self._db.transaction() as cur:
            rating_id = _next_id(cur, "ratings", "rating_id")
            row = cur.execute(
                f"INSERT INTO {NOTES}.ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC')) "
                f"RETURNING {_STAMP}",
                [rating_id, neuron.layer, neuron.neuron, explanation_text, explanation_ref, finite(score),
                 str(rating), note, author],
            ).fetchone()
        self._changed(neuron)
        return HumanRating(rating_id, neuron, explanation_text, explanation_ref, finite(score), rating, note, author,
                           row[0] if row else "")

    def share(self, neuron: NeuronId, page: str) -> ClassShare:
        """The teacher shows `neuron` on `page` to the class."""
        with self._db.transaction() as cur:
            share_id = _next_id(cur, "class_shares", "share_id")
            row = cur.execute(
                f"INSERT INTO {NOTES}.class_shares VALUES (?, ?, ?, ?, (now() AT TIME ZONE 'UTC')) RETURNING {_STAMP}",
                [share_id, neuron.layer, neuron.neuron, page],
            ).fetchone()
        self._changed(neuron, classroom=True)
        return ClassShare(share_id, neuron, page, row[0] if row else "")

    def set_board(
        self,
        neuron: NeuronId,
        *,
        open: bool | None = None,
        pin: int | None = None,
        unpin: bool = False,
        clear: bool = False,
    ) -> BoardSettings:
        """Change the neuron's class board: open or close it, pin a suggestion (or unpin), or clear it (everything
        suggested and rated for it so far is hidden from the board, and stays in the notes)."""
        current = self.board_settings(neuron)
        pinned = None if unpin or clear else (pin if pin is not None else current.pinned_suggestion)
        with self._db.transaction() as cur:
            cleared = (current.cleared_suggestions, current.cleared_ratings)
            if clear:
                cleared = (_next_id(cur, "suggestions", "suggestion_id") - 1, _next_id(cur, "ratings", "rating_id") - 1)
            settings = BoardSettings(neuron, current.open if open is None else bool(open), pinned, *cleared)
            cur.execute(
                f"INSERT OR REPLACE INTO {NOTES}.class_boards VALUES (?, ?, ?, ?, ?, ?, (now() AT TIME ZONE 'UTC'))",
                [neuron.layer, neuron.neuron, settings.open, settings.pinned_suggestion, *cleared],
            )
        self._changed(neuron, classroom=True)
        return settings

    def neuron_version(self, neuron: NeuronId) -> int:
        """Counts the writes about `neuron` made through this object: a cache key for views of one neuron's notes,
        which a write about another neuron (a class submitting on the board, an explanation made on view in the
        background) leaves valid."""
        return self._neuron_versions.get(neuron, 0)

    def _changed(self, neuron: NeuronId, classroom: bool = False) -> None:
        # counted after the commit: a view computed under the new count sees the new rows
        with self._counting:
            self.version += 1
            self._neuron_versions[neuron] = self._neuron_versions.get(neuron, 0) + 1
            if classroom:
                self.class_version += 1


def _next_id(cur: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    # table and column are this module's constants, never user text; callers hold the write lock
    row = cur.execute(f"SELECT coalesce(max({column}), 0) + 1 FROM {NOTES}.{table}").fetchone()
    return int(row[0]) if row else 1

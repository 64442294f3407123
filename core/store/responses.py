"""LLM answers kept by request (core/llm.py), so a stopped run or a repeated question is never paid twice.

The command line keeps them in the results file (ResultsWriter.responses), the dashboard in its notes file
(NotesStore.responses): each process writes only the file it owns.
"""

from __future__ import annotations

from core.store.database import Database
from core.store.schema import NOTES, RESULTS


class ResponseCache:
    """The llm_cache table of one attached file ("results" or "notes")."""

    def __init__(self, db: Database, database: str) -> None:
        if database not in (RESULTS, NOTES):  # the name is part of the SQL text, so only these two pass
            raise ValueError(f"LLM answers live in {RESULTS!r} or {NOTES!r}, not {database!r}")
        self._db = db
        self._database = database

    def get(self, key: str) -> str | None:
        """The stored response JSON of the request with this key, or None."""
        row = self._db.cursor().execute(
            f"SELECT response FROM {self._database}.llm_cache WHERE key = ?", [key]
        ).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, endpoint: str, model: str, response: str) -> None:
        """Store one response JSON under its request key (a repeated key keeps the first answer)."""
        with self._db.transaction() as cur:
            cur.execute(
                f"INSERT OR IGNORE INTO {self._database}.llm_cache (key, endpoint, model, response) "
                "VALUES (?, ?, ?, ?)",
                [key, endpoint, model, response],
            )

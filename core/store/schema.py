"""The schema of a cache's three files, and their version.

A cache is NAME.duckdb (the recording), NAME.results.duckdb (later stages) and NAME.notes.duckdb (the dashboard);
core/paths.py names them. A Database attaches them under the names RECORDING, RESULTS and NOTES, so every query
says which file it reads: `recording.neuron_stats`, `results.explanations`, `notes.suggestions`.

Every file has a `meta` table (key -> JSON value) holding `schema_version`. Versions:
1. One file held the recording and every later result; the notes file had no meta table and called the
   simulator's predictions `normalized_activations`. (core/store/migrate.py turns such a cache into version 2.)
2. Three files as above. The recording's meta holds `build_id`, and the results file's meta holds the
   `recording_id` it was computed from, so results of an earlier build of the same path are never shown.
3. The recording's `neuron_excerpts.activations` is one BLOB per row, packed by core/packing.py (12 bits per
   activation; meta `activation_encoding` says how), where version 2 stored FLOAT[]. A version-2 recording still
   reads as it is (core.packing.decode takes both); `migrate` packs it, keeping its build id and so its results.
   Results files are unchanged; notes files gained `live_scores.author_saw_score_excerpts` and the classroom's
   tables class_shares and class_boards, which their writer adds to an older file (migrate.upgrade_notes).
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

SCHEMA_VERSION = 3
"""The layout this code writes (see the module docstring)."""

OLDEST_READABLE_VERSION = 2
"""The oldest recording this code reads without migrating it (version 1 must be split first)."""

RECORDING = "recording"
RESULTS = "results"
NOTES = "notes"
DATABASES = (RECORDING, RESULTS, NOTES)
"""The names the files are attached under; the only database names that reach SQL text."""

_META = """
        key VARCHAR PRIMARY KEY,
        value JSON NOT NULL"""

# LLM answers by sha256 of the full request (core/llm.py): the command line keeps them in the results file, the
# dashboard in the notes file.
_LLM_CACHE = """
        key VARCHAR PRIMARY KEY,
        endpoint VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        response JSON NOT NULL,
        created_at TIMESTAMP DEFAULT current_timestamp"""

RECORDING_TABLES: dict[str, str] = {
    "meta": _META,
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
    # one row per (neuron, excerpt) and reason; rows are inserted sorted by (layer, neuron) so the zone maps make a
    # per-neuron read touch a few row groups without an index; activations are packed by core.packing (FLOAT[] in a
    # version-2 recording, which core.packing.decode reads too)
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
}
"""NAME.duckdb: written once by `build` (core/record.py through RecordingWriter)."""

RESULTS_TABLES: dict[str, str] = {
    "meta": _META,
    "llm_cache": _LLM_CACHE,
    # one row per explain run of a neuron (core/explain.py); failed runs keep their reason and are replaced by the
    # next run's result; ids are max + 1 under the writer's lock
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
    # related tokens and neurons (core/related.py, formulas in docs/related.md); rows are written one layer at a
    # time sorted by (neuron, kind, rank), together with that layer's row in related_layers
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
"""NAME.results.duckdb: written only by the command line (explain, score, related) through ResultsWriter."""

NOTES_TABLES: dict[str, str] = {
    "meta": _META,
    "llm_cache": _LLM_CACHE,
    # an explanation text simulated and scored live (a suggestion, a generated explanation, or a stored explanation
    # re-scored with the dashboard's simulator), reused when the same text is scored again; NULL scores = undefined
    "live_scores": """
        score_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        simulator VARCHAR NOT NULL,
        score_all DOUBLE,
        score_top DOUBLE,
        score_random DOUBLE,
        created_at TIMESTAMP NOT NULL,
        author_saw_score_excerpts BOOLEAN""",
    # author_saw_score_excerpts: whether the text's author could have seen the SCORE excerpts (the scoring page
    # shows them): such a score is optimistic and never picks a neuron's best explanation; NULL (rows written
    # before the column existed) reads as seen
    # the simulator's predictions (0-10 scale) per scoring excerpt of a live score
    "live_simulations": """
        score_id BIGINT NOT NULL,
        excerpt_id INTEGER NOT NULL,
        normalized_predictions FLOAT[] NOT NULL,
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
    # the classroom (core/classroom.py): every "show this neuron to the class" of the teacher, the latest one being
    # where the class is; kept, so the class's path through the cache can be read afterwards
    "class_shares": """
        share_id BIGINT PRIMARY KEY,
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        page VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL""",
    # a neuron's class board: open to submissions or closed, the pinned suggestion, and what the teacher cleared
    # (suggestions and ratings up to these ids are hidden from the board, never deleted)
    "class_boards": """
        layer SMALLINT NOT NULL,
        neuron INTEGER NOT NULL,
        open BOOLEAN NOT NULL,
        pinned_suggestion BIGINT,
        cleared_suggestions BIGINT NOT NULL,
        cleared_ratings BIGINT NOT NULL,
        updated_at TIMESTAMP NOT NULL,
        PRIMARY KEY (layer, neuron)""",
}
"""NAME.notes.duckdb: written only by the dashboard through NotesStore."""

TABLES: dict[str, dict[str, str]] = {RECORDING: RECORDING_TABLES, RESULTS: RESULTS_TABLES, NOTES: NOTES_TABLES}


def create_tables(cur: duckdb.DuckDBPyConnection, database: str) -> None:
    """Create the missing tables of an attached file (or of an empty stand-in) and stamp its schema version."""
    for name, columns in TABLES[database].items():
        cur.execute(f"CREATE TABLE IF NOT EXISTS {database}.{name} ({columns})")
    cur.execute(f"INSERT OR IGNORE INTO {database}.meta VALUES ('schema_version', ?)", [json.dumps(SCHEMA_VERSION)])


def has_table(cur: duckdb.DuckDBPyConnection, database: str, table: str) -> bool:
    """Whether the attached `database` has `table` (for reading files of older versions)."""
    row = cur.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [database, table]
    ).fetchone()
    return bool(row and row[0])


def read_meta(cur: duckdb.DuckDBPyConnection, database: str) -> dict[str, Any]:
    """Every key of a file's meta table ({} when it has none)."""
    if not has_table(cur, database, "meta"):
        return {}
    rows = cur.execute(f"SELECT key, value FROM {database}.meta").fetchall()
    return {key: json.loads(value) for key, value in rows}


def read_version(cur: duckdb.DuckDBPyConnection, database: str) -> int:
    """The schema version of an attached file: its meta's schema_version; 1 for a notes file without meta."""
    return int(read_meta(cur, database).get("schema_version", 1))


def write_meta(cur: duckdb.DuckDBPyConnection, database: str, values: dict[str, Any]) -> None:
    """Set keys of a file's meta table."""
    for key, value in values.items():
        cur.execute(f"INSERT OR REPLACE INTO {database}.meta VALUES (?, ?)", [key, json.dumps(value)])

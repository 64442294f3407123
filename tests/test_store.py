"""The store's files and who opens them: the recording, the results, version checks, results of an earlier build,
the migration of a version-1 cache (a real one, tests/data/v1-cache.md) and of a version-2 recording (float lists
of activations, packed by the migration), and the dashboard's view re-attaching."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import duckdb
import numpy as np
import pytest

from core.cli import main
from core.packing import decode, max_error
from core.paths import copy_cache, notes_path, results_path
from core.store import (
    SCHEMA_VERSION,
    DashboardCache,
    OldLayoutError,
    StoreError,
    cache_version,
    migrate_cache,
    open_reader,
    open_results_writer,
)
from core.types import ExplanationStatus, NeuronId, Rating

V1_CACHE = Path(__file__).parent / "data" / "v1-cache.tgz"


@pytest.fixture
def tiny(tiny_explained_cache, tmp_path) -> Path:
    """A fresh copy of the tiny cache (recording and results)."""
    path = tmp_path / "tiny.duckdb"
    copy_cache(tiny_explained_cache, path)
    return path


@pytest.fixture
def recording_only(tiny_explained_cache, tmp_path) -> Path:
    """The tiny cache's recording alone, as a build leaves it."""
    path = tmp_path / "built.duckdb"
    shutil.copyfile(tiny_explained_cache, path)
    return path


@pytest.fixture
def v1(tmp_path) -> Path:
    """The version-1 cache and notes of tests/data (unpacked fresh)."""
    with tarfile.open(V1_CACHE) as archive:
        archive.extractall(tmp_path, filter="data")
    return tmp_path / "v1.duckdb"


def rows(path: Path, table: str) -> list[tuple]:
    """Every row of a table of a DuckDB file, sorted (for comparing content, not order)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def assert_packed_copy(packed: Path, original: Path) -> None:
    """neuron_excerpts of `packed` are those of `original` (float lists) with the activations packed: every other
    column equal, in the same order, every activation within the packing's bound and each row's extremes exact."""
    query = "SELECT * EXCLUDE (activations), activations FROM neuron_excerpts"
    with duckdb.connect(str(packed), read_only=True) as a, duckdb.connect(str(original), read_only=True) as b:
        got, want = a.execute(query).fetchall(), b.execute(query).fetchall()
        assert a.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 'neuron_excerpts' AND "
                         "column_name = 'activations'").fetchone() == ("BLOB",)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g[:-1] == w[:-1]
        truth = np.asarray(w[-1], dtype=np.float32)
        back = decode(g[-1])
        assert np.abs(back - truth).max() <= max_error(truth[None, :])[0] * 1.002 + 1e-7
        assert (back.max(), back.min()) == (truth.max(), truth.min())


def as_version_2(path: Path) -> None:
    """Turn a recording into what a version-2 build wrote: activations as FLOAT[], schema_version 2."""
    with duckdb.connect(str(path)) as con:
        rows = con.execute("SELECT * EXCLUDE (activations), activations FROM neuron_excerpts").fetchall()
        con.execute("ALTER TABLE neuron_excerpts DROP COLUMN activations")
        con.execute("ALTER TABLE neuron_excerpts ADD COLUMN activations FLOAT[]")
        con.execute("DELETE FROM neuron_excerpts")
        con.executemany("INSERT INTO neuron_excerpts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [[*r[:-1], decode(r[-1]).tolist()] for r in rows])
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("DELETE FROM meta WHERE key = 'activation_encoding'")


def set_meta(path: Path, key: str, value: str) -> None:
    """Change one meta value of a file, as another build or an older/newer version would have written it."""
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = ?", [value, key])


# --- recording and results -----------------------------------------------------------------------------------


def test_a_new_recording_reads_as_a_cache_without_results(recording_only):
    with open_reader(recording_only) as reader:
        info = reader.info()
        assert info.neurons_recorded == 2 * 48 and info.explanations == 0
        assert reader.explanations(NeuronId(0, 1)) == [] and reader.related_layers_done() == set()
        assert reader.neuron_excerpts(NeuronId(0, 1))  # the recording itself is there
    assert not results_path(recording_only).exists()  # reading creates nothing


def test_results_are_written_to_their_own_file_and_the_recording_stays_untouched(recording_only):
    before = recording_only.read_bytes()
    with open_results_writer(recording_only) as writer:
        explanation_id = writer.add_explanation(NeuronId(0, 3), text="mats", explainer="human", model=None,
                                                prompt_version=None, simulator="baseline", status=ExplanationStatus.OK)
        with pytest.raises(duckdb.Error):  # the writer holds the recording read-only
            writer._db.cursor().execute("DELETE FROM recording.meta")
    assert recording_only.read_bytes() == before
    assert results_path(recording_only).exists()
    with open_reader(recording_only) as reader:
        [found] = reader.explanations(NeuronId(0, 3))
        assert found.explanation_id == explanation_id and reader.info().explanations == 1


def test_results_of_an_earlier_build_are_not_shown_and_the_next_writer_moves_them_aside(tiny):
    set_meta(tiny, "build_id", '"another build"')  # `build --force` renamed a new recording into place
    with open_reader(tiny) as reader:
        assert reader.explanations(NeuronId(0, 1)) == []
    with open_results_writer(tiny) as writer:
        assert writer.info().explanations == 0
    [stale] = tiny.parent.glob("tiny.results.stale-*.duckdb")
    assert len(rows(stale, "explanations")) == 4  # kept, not deleted


def test_files_that_are_not_caches_or_are_newer_get_one_line(tmp_path, tiny):
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match=f"cannot open {bogus}"):
        open_reader(bogus)
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(StoreError, match="not a Neuron Atlas cache"):
        open_reader(empty)
    with pytest.raises(StoreError, match="no cache at"):
        open_reader(tmp_path / "missing.duckdb")
    set_meta(tiny, "schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer Neuron Atlas"):
        open_reader(tiny)


# --- version 1 -------------------------------------------------------------------------------------------------


def test_a_version_1_cache_opened_for_reading_says_what_to_run(v1, capsys):
    assert cache_version(v1) == 1
    with pytest.raises(OldLayoutError, match=rf"run `python -m core migrate {v1}`"):
        open_reader(v1)
    assert main(["show", str(v1), "--neuron", "0:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python -m core migrate" in err


def test_migration_moves_every_row_and_keeps_the_recording(v1, tmp_path):
    original = tmp_path / "original.duckdb"
    shutil.copyfile(v1, original)
    assert migrate_cache(v1) and cache_version(v1) == SCHEMA_VERSION
    assert not migrate_cache(v1)  # once is enough
    results = results_path(v1)
    for table in ("excerpts", "vocab", "neuron_stats", "token_means"):
        assert rows(v1, table) == rows(original, table), table
    assert_packed_copy(v1, original)
    for table in ("explanations", "scores", "simulations", "related_tokens", "related_neurons", "related_layers",
                  "model_vocab", "llm_cache"):
        assert rows(results, table) == rows(original, table), table
        assert rows(results, table), table  # the fixture has rows in every one of them
    old_meta, new_meta = dict(rows(original, "meta")), dict(rows(v1, "meta"))
    assert {k: v for k, v in new_meta.items() if k not in ("schema_version", "build_id", "activation_encoding")} == {
        k: v for k, v in old_meta.items() if k not in ("schema_version", "related")}
    assert "12-bit" in new_meta["activation_encoding"]
    assert dict(rows(results, "meta"))["related"] == old_meta["related"]
    with open_reader(v1) as reader:
        assert reader.info().explanations == len(rows(original, "explanations"))
        assert reader.related_settings() is not None and reader.related_settings()["finished"]


def test_a_migration_stopped_before_its_last_rename_is_done_again(v1, tmp_path, monkeypatch):
    import core.store.migrate as migrate

    original = tmp_path / "original.duckdb"
    shutil.copyfile(v1, original)
    renames: list[Path] = []

    def stop_at_the_second(source: Path, target: Path) -> None:
        if renames:
            raise KeyboardInterrupt
        renames.append(Path(target))
        os.replace(source, target)

    monkeypatch.setattr(migrate.os, "replace", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        migrate_cache(v1)
    monkeypatch.undo()
    assert renames == [results_path(v1)] and cache_version(v1) == 1  # still the old cache, whole
    assert rows(v1, "explanations") == rows(original, "explanations")
    assert migrate_cache(v1)
    assert rows(results_path(v1), "explanations") == rows(original, "explanations")


def test_writing_commands_migrate_first_and_the_dashboard_upgrades_its_notes(v1, capsys):
    assert main(["score", str(v1), "--neurons", "0:7", "--explanation", "cats"]) == 0
    assert cache_version(v1) == SCHEMA_VERSION
    with open_reader(v1) as reader:
        assert [e.explainer for e in reader.explanations(NeuronId(0, 7))] == ["human"]
        assert len(reader.explanations(NeuronId(0, 1))) == 1  # the old ones are still there
    cache = DashboardCache(v1)
    try:
        [suggestion] = cache.notes.suggestions(NeuronId(0, 1))
        assert suggestion.author == "Ada" and suggestion.score is not None
        live = cache.notes.live_score_by_id(suggestion.score.score_id)
        assert live is not None and live.simulations[0].normalized_predictions == (1.0, 2.0, 0.0)
        assert cache.notes.ratings(NeuronId(0, 1))[0].rating == Rating.WRONG
        assert cache.notes.responses.get("k1") == '{"a": 1}'
    finally:
        cache.close()
    assert dict(rows(notes_path(v1), "meta"))["schema_version"] == str(SCHEMA_VERSION)
    assert main(["migrate", str(v1)]) == 0
    assert "nothing to do" in capsys.readouterr().out


# --- version 2 ---------------------------------------------------------------------------------------------------


def test_a_version_2_recording_reads_as_it_is_and_migrate_packs_it_keeping_its_results(tiny, tmp_path, capsys):
    as_version_2(tiny)
    original = tmp_path / "original.duckdb"
    shutil.copyfile(tiny, original)
    neuron = NeuronId(1, 5)
    with open_reader(tiny) as reader:  # no migration needed to read it
        floats = reader.neuron_excerpts(neuron)
        explanations = reader.explanations(neuron)
        assert floats and len(explanations) == 2
    with duckdb.connect(str(original), read_only=True) as con:
        [(first,)] = con.execute("SELECT activations FROM neuron_excerpts WHERE layer = 1 AND neuron = 5 "
                                 "AND kind = 'top' AND rank = 0").fetchall()
    assert next(e for e in floats if e.kind == "top" and e.rank == 0).activations == pytest.approx(first, abs=0)
    build_id = dict(rows(tiny, "meta"))["build_id"]
    assert main(["migrate", str(tiny)]) == 0
    assert "activations packed" in capsys.readouterr().out
    assert cache_version(tiny) == SCHEMA_VERSION and dict(rows(tiny, "meta"))["build_id"] == build_id
    assert_packed_copy(tiny, original)
    for table in ("excerpts", "vocab", "neuron_stats", "token_means"):
        assert rows(tiny, table) == rows(original, table), table
    with open_reader(tiny) as reader:  # the same build: its results still count
        assert [e.explanation_id for e in reader.explanations(neuron)] == [e.explanation_id for e in explanations]
        packed = reader.neuron_excerpts(neuron)
        assert [(e.excerpt.excerpt_id, e.kind, e.rank) for e in packed] == \
            [(e.excerpt.excerpt_id, e.kind, e.rank) for e in floats]
    assert main(["migrate", str(tiny)]) == 0
    assert "nothing to do" in capsys.readouterr().out


# --- the dashboard's view ----------------------------------------------------------------------------------------


def test_the_dashboard_re_attaches_replaced_files_and_keeps_the_notes(tiny, tmp_path):
    cache = DashboardCache(tiny)
    try:
        cache.notes.add_rating(NeuronId(0, 1), "x", Rating.RIGHT)
        before = cache.signature
        replacement = tmp_path / "new.duckdb"
        shutil.copyfile(tiny, replacement)
        set_meta(replacement, "model", '"rebuilt"')
        layers = cache.reader.meta()["layers"]
        set_meta(replacement, "layers", str(layers + 1))  # a recording of another shape
        cache.reader.check_neuron(NeuronId(0, 1))  # its shape is kept while the file stays attached
        os.replace(replacement, tiny)  # what a finished build does
        assert cache.reader.meta()["model"] != "rebuilt"  # still the old file until refreshed
        with pytest.raises(StoreError, match=f"layers 0-{layers - 1} "):
            cache.reader.check_neuron(NeuronId(layers, 0))
        cache.refresh()
        assert cache.reader.meta()["model"] == "rebuilt" and cache.signature != before
        cache.reader.check_neuron(NeuronId(layers, 0))  # the new shape, read again after the attach
        assert len(cache.notes.ratings(NeuronId(0, 1))) == 1
        assert len(cache.reader.explanations(NeuronId(1, 5))) == 2  # the results of the same build still count
    finally:
        cache.close()

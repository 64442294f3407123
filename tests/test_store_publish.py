"""Results written on a working copy and published by rename (core/store/publish.py): readers keep reading while a
command writes, see its progress after each publication, never a half-written file; one writer at a time; what a
stopped writer left is resumed; damaged or stale results are set aside, never deleted. Kill -9 at each step:
tests/test_kill.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from core.cli import main
from core.paths import copy_cache, notes_path, results_path
from core.store import DashboardCache, StoreError, open_reader, open_results_writer
from core.store.publish import PUBLISH_ENV, ResultsFiles
from core.types import ExplanationStatus, NeuronId

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tiny_explained_cache, tmp_path) -> Path:
    """A fresh copy of the tiny cache (recording and results: three explained neurons)."""
    path = tmp_path / "tiny.duckdb"
    copy_cache(tiny_explained_cache, path)
    return path


def add(writer, neuron: NeuronId, text: str) -> int:
    return writer.add_explanation(neuron, text=text, explainer="human", model=None, prompt_version=None,
                                  simulator="baseline", status=ExplanationStatus.OK)


def texts(reader, neuron: NeuronId) -> list[str | None]:
    return [e.text for e in reader.explanations(neuron)]


def leftovers(path: Path) -> list[str]:
    """Files beside the cache other than its recording, results and notes."""
    keep = {path.name, results_path(path).name, notes_path(path).name}
    return sorted(p.name for p in path.parent.iterdir() if p.name not in keep)


def test_a_dashboard_reads_while_a_writer_writes_and_sees_each_publication(tiny, monkeypatch):
    monkeypatch.setenv(PUBLISH_ENV, "0")  # publish after every commit
    dashboard = DashboardCache(tiny)
    dashboard.notes.add_suggestion(NeuronId(0, 1), "mats and cats", "Ada", "person")
    notes_before = dashboard.notes.suggestions(NeuronId(0, 1))
    try:
        with open_results_writer(tiny) as writer:
            assert dashboard.reader.explanations(NeuronId(0, 7)) == []
            add(writer, NeuronId(0, 7), "first")
            dashboard.refresh()  # what a page does on its next run
            assert texts(dashboard.reader, NeuronId(0, 7)) == ["first"]
            add(writer, NeuronId(0, 8), "second")
            assert dashboard.reader.explanations(NeuronId(0, 8)) == []  # until it looks again
            dashboard.refresh()
            assert texts(dashboard.reader, NeuronId(0, 8)) == ["second"]
            assert writer.working.stats.publications == 2
        dashboard.refresh()
        assert dashboard.reader.info().explanations == 4 + 2
        assert dashboard.notes.suggestions(NeuronId(0, 1)) == notes_before  # the notes are the dashboard's own
    finally:
        dashboard.close()
    assert leftovers(tiny) == []  # no working copy, staging file or lock left


def test_between_publications_readers_see_the_last_published_file(tiny, monkeypatch):
    monkeypatch.setenv(PUBLISH_ENV, "3600")
    before = ResultsFiles.of(tiny).published.stat().st_ino
    with open_results_writer(tiny) as writer:
        add(writer, NeuronId(1, 1), "not yet published")
        assert texts(writer, NeuronId(1, 1)) == ["not yet published"]  # the writer reads its own work
        with open_reader(tiny) as reader:
            assert reader.explanations(NeuronId(1, 1)) == []
        assert ResultsFiles.of(tiny).published.stat().st_ino == before
        writer.checkpoint()  # publish now
        with open_reader(tiny) as reader:
            assert texts(reader, NeuronId(1, 1)) == ["not yet published"]
        add(writer, NeuronId(1, 2), "published on close")
    with open_reader(tiny) as reader:
        assert texts(reader, NeuronId(1, 2)) == ["published on close"]


@contextlib.contextmanager
def writer_in_another_process(path: Path) -> Iterator[subprocess.Popen]:
    """A second process holding open_results_writer(path) until its stdin closes."""
    code = ("import sys; from core.store import open_results_writer\n"
            "with open_results_writer(sys.argv[1]):\n    print('writing', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
        yield holder
    finally:
        holder.communicate("", timeout=60)


def test_a_second_writer_is_refused_with_the_first_ones_process(tiny, capsys):
    with writer_in_another_process(tiny) as holder:
        with pytest.raises(StoreError, match=f"another command \\(process {holder.pid}\\) is writing the results"):
            open_results_writer(tiny)
        assert main(["score", str(tiny), "--neurons", "0:3", "--explanation", "cats"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and f"process {holder.pid}" in error and "wait until it finishes" in error
        with open_reader(tiny) as reader:  # reading is never refused
            assert reader.info().explanations == 4
    assert main(["score", str(tiny), "--neurons", "0:3", "--explanation", "cats"]) == 0  # after it finished


def test_a_stopped_writers_working_copy_is_resumed_not_lost(tiny, monkeypatch):
    """What a writer committed but never published (it was killed: see test_kill.py) is resumed by the next one."""
    monkeypatch.setenv(PUBLISH_ENV, "3600")
    writer = open_results_writer(tiny)
    add(writer, NeuronId(1, 3), "committed, not published")
    writer.responses.put("k1", "chat", "m", '{"answer": 1}')
    writer._db.close()  # the process ends without publishing (a kill -9 leaves the same files)
    writer._lock.release()
    files = ResultsFiles.of(tiny)
    assert files.working.exists()
    with open_reader(tiny) as reader:
        assert reader.explanations(NeuronId(1, 3)) == []
    with open_results_writer(tiny) as again:
        assert texts(again, NeuronId(1, 3)) == ["committed, not published"]
        assert again.responses.get("k1") == '{"answer": 1}'
    with open_reader(tiny) as reader:
        assert texts(reader, NeuronId(1, 3)) == ["committed, not published"]
    assert leftovers(tiny) == []


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_published_results_are_set_aside_and_a_reader_is_told(tiny, damage):
    files = ResultsFiles.of(tiny)
    data = files.published.read_bytes()
    files.published.write_bytes(data[: len(data) // 3] if damage == "truncated" else os.urandom(len(data)))
    damaged = files.published.read_bytes()
    with pytest.raises(StoreError, match=f"cannot open {files.published}"):
        open_reader(tiny)
    with open_results_writer(tiny) as writer:
        assert writer.info().explanations == 0  # new results, the recording as it was
        add(writer, NeuronId(0, 1), "after the damage")
    [aside] = tiny.parent.glob("tiny.results.damaged-*.duckdb")
    assert aside.read_bytes() == damaged  # kept as it was, for whoever wants to look
    with open_reader(tiny) as reader:
        assert texts(reader, NeuronId(0, 1)) == ["after the damage"]


def test_a_working_copy_from_another_build_is_not_resumed(tiny, monkeypatch):
    monkeypatch.setenv(PUBLISH_ENV, "3600")
    files = ResultsFiles.of(tiny)
    writer = open_results_writer(tiny)
    add(writer, NeuronId(1, 4), "of the old build")
    writer._db.close()
    writer._lock.release()
    with duckdb.connect(str(tiny)) as con:  # `build --force` put a new recording in place meanwhile
        con.execute("""UPDATE meta SET value = '"another build"' WHERE key = 'build_id'""")
    with open_results_writer(tiny) as again:
        assert again.info().explanations == 0
    assert not files.working.exists()
    [stale] = tiny.parent.glob("tiny.results.stale-*.duckdb")
    with duckdb.connect(str(stale), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM explanations").fetchone() == (4,)


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process: its permission bits, or for root (whom they do not stop) a read-only
    bind mount of it onto itself."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"running as root, and a read-only bind mount is not allowed here: {mounted.stderr.strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_cache_folder_gets_one_line_and_nothing_changes(tiny, capsys):
    before = {p.name: p.read_bytes() for p in tiny.parent.iterdir()}
    with read_only_folder(tiny.parent):
        assert main(["score", str(tiny), "--neurons", "0:3", "--explanation", "cats"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: cannot write results beside") and "make the folder writable" in error
        assert main(["show", str(tiny), "--neuron", "0:1"]) == 0  # reading still works
    assert {p.name: p.read_bytes() for p in tiny.parent.iterdir()} == before

"""`build`, `explain`, `score` and `related` killed with SIGKILL at named points (core/killpoints.py), run again,
and compared with an uninterrupted run: the same rows (recording, explanations, scores, simulations, related tables,
LLM answers; timestamps and build ids aside), nothing duplicated, the recording and the notes untouched, and after
every kill a published results file that a dashboard, open the whole time, reads whole.

Each chain runs the real command line in a subprocess; each run is killed at its point (exit status -9) and the next
run starts from whatever that kill left: the last point of a chain is followed by a clean run. Runs publish after
every commit (NEURON_ATLAS_PUBLISH_S=0) except where the point needs unpublished work or the final publication. The
uninterrupted reference runs go through the same command line in this process (no kill there: it saves the start of
a Python with torch for each).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fault_server import FaultServer

from core.cli.main import main
from core.killpoints import KILL_ENV
from core.paths import copy_cache, notes_path, partial_dir, results_path, temp_path
from core.store import DashboardCache, open_reader
from core.store.publish import PUBLISH_ENV, ResultsFiles
from core.types import NeuronId, Rating

ROOT = Path(__file__).resolve().parents[1]

EXPLAIN = ("--neurons", "0:0-11", "--quiet")
"""The explain run of the chain: 12 neurons of the tiny cache, baseline explainer and simulator."""
BEFORE = ("--neurons", "0:0-1", "--quiet")
"""A first, uninterrupted explain run, so the chain starts from published results."""

EXPLAIN_POINTS: list[tuple[str, str, str]] = [
    # (kill point, publish interval, what the kill leaves)
    ("open.copying", "0", "the published results half copied into the staging file; nothing else"),
    ("explain.stored#2", "3600", "two neurons committed to the working copy, never published"),
    ("publish.checkpointed", "0", "a neuron checkpointed into the working copy, the copy not begun"),
    ("publish.copying", "0", "the checkpointed working copy half written to the staging file"),
    ("publish.before-rename", "0", "a complete staging file, not renamed"),
    ("publish.renamed", "0", "the staging file renamed over the published one, the run not finished"),
    ("explain.stored", "0", "a neuron committed and published, the next one not begun"),
    ("final.copying", "3600", "every neuron committed, the final publication half written"),
    ("final.before-rename", "3600", "the final staging file complete, not renamed"),
    ("final.renamed", "3600", "the final publication renamed into place, the working copy not yet removed"),
]

RELATED = ("--quiet", "--sample-tokens", "64", "--tokens", "5", "--neurons", "4")
RELATED_POINTS: list[tuple[str, str, str]] = [
    ("related.stored", "0", "layer 0 committed and published, layer 1 not begun"),
    ("final.before-rename", "3600", "the finished tables in a complete staging file, not renamed"),
]


def run(*args: str, kill: str | None = None, publish_s: str = "0") -> subprocess.CompletedProcess[str]:
    """`python -m core ARGS` in a subprocess, killed at `kill` if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != KILL_ENV}
    env.update({"PYTHONPATH": str(ROOT), PUBLISH_ENV: publish_s})
    if kill:
        env[KILL_ENV] = kill
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def run_here(*args: str) -> None:
    """`python -m core ARGS` in this process, uninterrupted (the reference runs)."""
    assert main(list(args)) == 0, args


RUN_META = ("build_id", "built_at")
"""Meta keys that differ between two builds of the same recording (its identity and time, not its content)."""


def content(path: Path) -> dict[str, list[str]]:
    """Every table of a DuckDB file: its rows as sorted reprs, without TIMESTAMP columns (when a row was written)
    and without the RUN_META keys of meta."""
    found: dict[str, list[str]] = {}
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute("SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal "
                              "ORDER BY table_name, column_index").fetchall()
        by_table: dict[str, list[str]] = {}
        for table, column, kind in columns:
            if not kind.startswith("TIMESTAMP"):
                by_table.setdefault(table, []).append(f'"{column}"')
        for table, names in by_table.items():
            where = f" WHERE key NOT IN {RUN_META}" if table == "meta" else ""
            rows = con.execute(f'SELECT {", ".join(names)} FROM "{table}"{where}').fetchall()
            found[table] = sorted(repr(row) for row in rows)
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def within(published: dict[str, list[str]], reference: dict[str, list[str]], tables: tuple[str, ...]) -> None:
    """Every row the published file holds of these tables is a row of the uninterrupted run (none duplicated)."""
    for table in tables:
        extra = Counter(published.get(table, [])) - Counter(reference[table])
        assert not extra, f"{table}: rows an uninterrupted run does not have: {list(extra)[:3]}"


class Chain:
    """A cache copy, a dashboard holding it open the whole time (with notes people wrote), and the checks."""

    def __init__(self, source: Path, folder: Path) -> None:
        self.cache = folder / "chain.duckdb"
        copy_cache(source, self.cache)
        self.dashboard = DashboardCache(self.cache)
        self.dashboard.notes.add_suggestion(NeuronId(0, 3), "commas in lists", "Ada", "person")
        self.dashboard.notes.add_rating(NeuronId(0, 3), "commas in lists", Rating.RIGHT, note="yes", author="Bo")
        self.notes = digest(notes_path(self.cache))
        self.recording = digest(self.cache)

    def killed(self, result: subprocess.CompletedProcess[str], point: str) -> None:
        assert result.returncode == -signal.SIGKILL, (point, result.returncode, result.stderr[-2000:])

    def published_whole(self, point: str) -> dict[str, list[str]]:
        """The dashboard attaches the published file again and reads it; returns its content."""
        self.dashboard.refresh()
        assert self.dashboard.reader.info().layers == 2, point
        with open_reader(self.cache) as reader:
            reader.info()
        return content(results_path(self.cache)) if results_path(self.cache).exists() else {}

    def finish(self, reference: dict[str, Any], tables: tuple[str, ...]) -> None:
        """The cache equals the uninterrupted run's; the recording and the notes are as they were."""
        self.dashboard.refresh()
        assert content(results_path(self.cache)) == reference
        assert digest(self.cache) == self.recording
        assert digest(notes_path(self.cache)) == self.notes
        assert [s.text for s in self.dashboard.notes.suggestions(NeuronId(0, 3))] == ["commas in lists"]
        files = ResultsFiles.of(self.cache)
        assert not any(p.exists() for p in (files.working, files.staging, files.lock))
        self.dashboard.close()


@pytest.fixture(scope="module")
def explain_reference(tiny_cache, tmp_path_factory) -> dict[str, list[str]]:
    """The results of the uninterrupted runs: BEFORE, then EXPLAIN."""
    path = tmp_path_factory.mktemp("reference") / "explain.duckdb"
    copy_cache(tiny_cache, path)
    for args in (BEFORE, EXPLAIN):
        run_here("explain", str(path), *args)
    return content(results_path(path))


def test_explain_killed_at_ten_points_ends_as_an_uninterrupted_run(tiny_cache, explain_reference, tmp_path):
    chain = Chain(tiny_cache, tmp_path)
    run_here("explain", str(chain.cache), *BEFORE)
    tables = ("explanations", "scores", "simulations")
    for point, publish_s, leaves in EXPLAIN_POINTS:
        chain.killed(run("explain", str(chain.cache), *EXPLAIN, kill=point, publish_s=publish_s), point)
        within(chain.published_whole(point), explain_reference, tables)
        if point == "explain.stored#2":  # unpublished: the readers still see the first run only
            assert chain.dashboard.reader.info().explanations == 2, leaves
    last = run("explain", str(chain.cache), *EXPLAIN)
    assert last.returncode == 0, last.stderr
    assert "0 explained, 12 already done (skipped), 0 failed" in last.stdout  # the last kill came after the work
    chain.finish(explain_reference, tables)


def test_an_explain_killed_outright_leaves_no_worker_process_behind(tiny_cache, tmp_path):
    """`explain` with worker processes, killed at a kill point (as `kill -9` or running out of memory would): its
    workers end with it, so nothing keeps running or holds the run's output open; the next run resumes."""
    import psutil

    cache = tmp_path / "workers.duckdb"
    copy_cache(tiny_cache, cache)
    every = ("--neurons", "0:0-47,1:0-47", "--processes", "2", "--quiet")
    point = "explain.stored#5"
    killed = run("explain", str(cache), *every, kill=point, publish_s="0")  # returns when its pipes close
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    def left_behind() -> list[int]:  # processes of that run (its environment) still there
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.environ().get(KILL_ENV) == point:
                    found.append(process.pid)
        return found

    deadline = time.monotonic() + 30
    while left_behind() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left_behind()
    last = run("explain", str(cache), *every)
    assert last.returncode == 0, last.stderr
    assert "already done (skipped)" in last.stdout and " 0 failed" in last.stdout


@pytest.fixture(scope="module")
def related_reference(tiny_cache, tmp_path_factory) -> dict[str, list[str]]:
    path = tmp_path_factory.mktemp("reference") / "related.duckdb"
    copy_cache(tiny_cache, path)
    run_here("related", str(path), *RELATED)
    return content(results_path(path))


def test_related_killed_at_two_points_ends_as_an_uninterrupted_run(tiny_cache, related_reference, tmp_path):
    chain = Chain(tiny_cache, tmp_path)
    for point, publish_s, _ in RELATED_POINTS:
        chain.killed(run("related", str(chain.cache), *RELATED, kill=point, publish_s=publish_s), point)
        within(chain.published_whole(point), related_reference, ("related_tokens", "related_neurons"))
    last = run("related", str(chain.cache), *RELATED)
    assert last.returncode == 0, last.stderr
    chain.finish(related_reference, ("related_tokens", "related_neurons"))


SCORE = ("--neurons", "0:0-3", "--explanation", "the word 'the' and commas")
"""A person's explanation scored on four neurons with the baseline simulator."""
SCORE_POINTS: list[tuple[str, str, str]] = [
    ("score.stored#2", "0", "two neurons scored and published, the third not begun"),
    ("score.stored#3", "3600", "three neurons scored into the working copy, never published"),
]


@pytest.fixture(scope="module")
def score_reference(tiny_cache, tmp_path_factory) -> dict[str, list[str]]:
    path = tmp_path_factory.mktemp("reference") / "score.duckdb"
    copy_cache(tiny_cache, path)
    run_here("score", str(path), *SCORE)
    return content(results_path(path))


def test_score_killed_at_two_points_ends_as_an_uninterrupted_run(tiny_cache, score_reference, tmp_path):
    """A rerun of `score` replaces the explanations the killed run stored (same text), keeping their ids."""
    chain = Chain(tiny_cache, tmp_path)
    tables = ("explanations", "scores", "simulations")
    for point, publish_s, leaves in SCORE_POINTS:
        chain.killed(run("score", str(chain.cache), *SCORE, kill=point, publish_s=publish_s), point)
        published = chain.published_whole(point)
        within(published, score_reference, tables)
        assert len(published["explanations"]) == 2, leaves  # the second kill's work is not published
    last = run("score", str(chain.cache), *SCORE)
    assert last.returncode == 0, last.stderr
    chain.finish(score_reference, tables)


BUILD = ("--corpus", "stdlib", "--tokens", "512", "--excerpt-len", "8", "--batch-size", "16", "--top-k", "4",
         "--checkpoint-seconds", "0", "--quiet")
"""64 excerpts in 4 batches, a checkpoint after each of the first three."""
BUILD_POINTS: list[tuple[str, str]] = [
    ("build.checkpoint-written#2", "the second checkpoint complete in checkpoint.tmp, not renamed over the first"),
    ("build.writing", "every batch recorded; CACHE.tmp holds layer 0 of 2"),
    ("build.before-rename", "CACHE.tmp complete, not renamed"),
    ("build.renamed", "the cache renamed into place, CACHE.partial/ not yet removed"),
]


@pytest.fixture(scope="module")
def build_reference(tiny_model_folder, tmp_path_factory) -> dict[str, list[str]]:
    path = tmp_path_factory.mktemp("reference") / "build.duckdb"
    run_here("build", "--model", str(tiny_model_folder("llama")), "--cache", str(path), *BUILD)
    return content(path)


def test_build_killed_at_four_points_ends_as_an_uninterrupted_run(tiny_model_folder, build_reference, tmp_path):
    """Until the rename there is no cache file (never a half-written one); after it, the whole cache; the rerun
    resumes from the last checkpoint and writes the same recording."""
    cache = tmp_path / "build.duckdb"
    args = ("build", "--model", str(tiny_model_folder("llama")), "--cache", str(cache), *BUILD)
    for point, leaves in BUILD_POINTS:
        killed = run(*args, kill=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
        if point == "build.renamed":
            assert content(cache) == build_reference, leaves
        else:
            assert not cache.exists(), leaves
        assert partial_dir(cache).exists(), leaves
    last = run(*args)
    assert last.returncode == 0, last.stderr
    assert "resumed at excerpt" in last.stdout
    assert content(cache) == build_reference
    assert not partial_dir(cache).exists() and not temp_path(cache).exists()
    with open_reader(cache) as reader:
        assert reader.info().neurons_recorded == 2 * 48


def test_llm_answers_paid_before_a_kill_are_not_paid_again(tiny_cache, tmp_path):
    """A paid run killed before it published anything: its working copy keeps the answers (core/store/publish.py),
    so the rerun asks the server nothing it already answered."""
    cache = tmp_path / "paid.duckdb"
    copy_cache(tiny_cache, cache)
    spec = "openai:gpt-4o-mini"
    args = ("explain", str(cache), "--neurons", "0:0-3", "--explainer", spec, "--simulator", spec, "--concurrency",
            "1", "--timeout", "5", "--quiet")
    with FaultServer() as server:
        killed = run(*args, "--base-url", server.url, kill="explain.stored#2", publish_s="3600")
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        before = len(server.requests)
        assert before > 0 and not results_path(cache).exists()  # nothing was published
        again = run(*args, "--base-url", server.url)
        assert again.returncode == 0, again.stderr
        bodies = Counter(r.raw for r in server.requests if r.path.endswith("/completions"))
    assert "2 explained, 2 already done (skipped), 0 failed" in again.stdout
    repeated = [body[:80] for body, n in bodies.items() if n > 1]
    assert not repeated, f"{len(repeated)} requests were sent twice: {repeated[:2]}"
    with open_reader(cache) as reader:
        assert len(reader.run_explanations([NeuronId(0, n) for n in range(4)], spec, spec)) == 4

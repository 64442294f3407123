"""The first run (core/fill.py): `python -m core demo --background` on a tiny model and a small token budget gives a
first page at once and fills in the rest in a process of its own, which the dashboard reports while it works and
stops reporting when it is done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.fill import FillError, StepKind, progress_path, read_fill, run_fill
from core.store import open_reader
from core.types import NeuronId

ROOT = Path(__file__).resolve().parents[1]


def core(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True)


def wait_for(check, timeout_s: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def texts(test) -> str:
    """Every info, caption, warning and markdown text of an AppTest run (main area and sidebar)."""
    parts = [e.value for kind in ("info", "caption", "warning", "markdown", "title") for e in getattr(test, kind)]
    parts += [str(e.value) for kind in ("caption", "markdown", "warning") for e in getattr(test.sidebar, kind)]
    return "\n".join(str(p) for p in parts)


def progress_bars(test) -> list:
    return list(test.get("progress"))


def related_page(layer: int, neuron: int):
    """An AppTest of app.py on the related page of this neuron, run."""
    from streamlit.testing.v1 import AppTest

    test = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    test.query_params["layer"], test.query_params["neuron"] = str(layer), str(neuron)
    test.switch_page("pages/related.py").run()
    assert not test.exception
    return test


@pytest.fixture
def tiny_demo(tiny_model_folder, tmp_path) -> Path:
    """A demo of the tiny Llama (2 layers x 48 neurons) over 1,024 stdlib tokens: the first page only."""
    cache = tmp_path / "demo.duckdb"
    done = core("demo", "--cache", str(cache), "--model", str(tiny_model_folder("llama")), "--tokens", "1024",
                "--spread", "8", "--background", "--quiet")
    assert done.returncode == 0, done.stderr
    return cache


def test_the_app_reports_the_background_fill_until_it_is_done_and_the_fill_runs_once(tiny_demo, atlas_home,
                                                                                     monkeypatch) -> None:
    cache = tiny_demo
    # the first page is there when `demo --background` returns: layer 0 neuron 0 explained and scored
    with open_reader(cache) as reader:
        first = [r for r in reader.explanations(NeuronId(0, 0)) if r.text]
        assert first and first[0].score_all is not None
        assert not reader.related_layers_done()
    wait_for(lambda: read_fill(cache) is not None, what="the fill's progress record")
    progress = read_fill(cache)
    assert progress is not None
    os.kill(progress.pid, signal.SIGSTOP)  # hold the real fill process where it is while the app is looked at
    try:
        progress = read_fill(cache)
        assert progress is not None and progress.running and not progress.finished
        assert [s.name for s in progress.steps] == ["spread", "related", "layer0"]
        assert progress.step_for(StepKind.RELATED, NeuronId(1, 3)) is not None
        monkeypatch.setenv("NEURON_ATLAS_CACHE", str(cache))
        page = related_page(1, 3)
        shown = texts(page)
        assert "The demo is filling in" in str([p.proto.text for p in progress_bars(page)])
        assert "related tokens and neurons:" in shown  # each step's line in the sidebar
        assert "Related neurons: still being computed in the background (related tokens and neurons" in shown
        assert "Weight-based related tokens: still being computed in the background" in shown
        assert "not computed yet" not in shown
        again = core("demo", "--cache", str(cache), "--tokens", "1024", "--background", "--quiet")
        assert again.returncode == 0 and f"already filling in (process {progress.pid})" in again.stderr
        assert read_fill(cache) == progress  # no second fill started
    finally:
        os.kill(progress.pid, signal.SIGCONT)
    wait_for(lambda: (p := read_fill(cache)) is not None and not p.running, timeout_s=300, what="the fill's end")
    done = read_fill(cache)
    assert done is not None and done.finished and done.error is None and done.fraction == 1.0
    with open_reader(cache) as reader:
        assert reader.related_layers_done() == {0, 1}
        assert {r.neuron for r in reader.neuron_rows(tuple(NeuronId(0, n) for n in range(48))).values()
                if r.explanation} == {NeuronId(0, n) for n in range(48)}
    page = related_page(1, 3)
    shown = texts(page)
    assert not progress_bars(page)
    assert "still being computed" not in shown and "not computed yet" not in shown
    assert "Upstream: feed it positively" in [s.value for s in page.subheader]
    # (the same demo, to keep the tests cheap) a finished demo starts no fill; a second fill says why it cannot run
    tiny_demo = cache
    record = json.loads(progress_path(tiny_demo).read_text())
    again = core("demo", "--cache", str(tiny_demo), "--tokens", "1024", "--background", "--quiet")
    assert again.returncode == 0 and "demo cache ready" in again.stdout
    assert json.loads(progress_path(tiny_demo).read_text()) == record  # nothing was started
    # a fill while another holds the cache: one line, nothing changed
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "f.write('4242'); f.flush(); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(60)", str(tiny_demo.with_name("demo.fill.lock"))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(FillError, match="already being filled in"):
            run_fill(tiny_demo)
        busy = core("fill", str(tiny_demo))
        assert busy.returncode == 2 and busy.stderr.strip().startswith("error: the demo of")
        assert "Traceback" not in busy.stderr
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(progress_path(tiny_demo).read_text()) == record


def test_the_progress_record_is_read_again_when_it_changes_and_a_damaged_one_is_none(tmp_path):
    from core.fill import FillProgress, _write_record

    cache = tmp_path / "x.duckdb"
    assert read_fill(cache) is None
    _write_record(cache, FillProgress(pid=1, build_id="b", steps=(), publications=1))
    first = read_fill(cache)
    assert first is not None and first.publications == 1 and read_fill(cache) is first  # read once per version
    _write_record(cache, FillProgress(pid=1, build_id="b", steps=(), publications=2))
    assert (again := read_fill(cache)) is not None and again.publications == 2
    progress_path(cache).write_text("{ not json")
    assert read_fill(cache) is None
    progress_path(cache).unlink()
    assert read_fill(cache) is None

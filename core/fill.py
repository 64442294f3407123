"""The demo's first run: a first page within minutes, the rest filled in by a background process the app watches.

`make app` records a small demo (the Makefile's TOKENS), explains and scores the first neurons of layer 0
(FIRST_PAGE_NEURONS) and opens the dashboard; `python -m core fill CACHE`, started beside it as a process of its own,
computes the rest (FILL_STEPS: explanations of a spread over the other layers, the related tables, the rest of
layer 0). The recording stays as it is, so everything computed stays valid (results are tied to its build id).

The fill writes a small progress record, NAME.fill.json (read with `read_fill`), and its results in chunks, each
through a results writer of its own: the writer works on a private copy that it publishes by atomic rename when it
closes (core.store.publish), so a dashboard that holds the published file open keeps reading it and attaches the
new one when it notices. A killed fill loses at most its current chunk: the next one resumes from what was
published. A command-line writer of the same cache takes turns with it (one writer at a time; the fill stops with
the other writer named, and `make app` resumes it).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.types import NeuronId

log = logging.getLogger(__name__)

FIRST_PAGE = tuple(NeuronId(0, n) for n in range(16))
"""Neurons `demo` explains and scores before the dashboard opens (the first page is layer 0 neuron 0)."""
FIRST_PAGE_NEURONS = f"0:0-{len(FIRST_PAGE) - 1}"
"""FIRST_PAGE as `explain --neurons` reads it."""

DEMO_SPREAD = 290
"""Neurons the fill explains over layers 1.. (10 per layer of the default model)."""

RELATED_CHUNK_LAYERS = 5
"""Related layers computed between two publications (each chunk re-reads the weights and the correlation sample:
a few seconds against about a minute of work)."""

EXPLAIN_CHUNK_NEURONS = 96
"""Neurons explained between two publications."""

SECONDS_PER_RELATED_LAYER = 13.0
SECONDS_PER_EXPLAINED_NEURON = 0.35
"""Measured costs on an idle 2-core machine (README, docs/recording.md), used only to weigh the steps in the
overall fraction done."""

FILL_NICENESS = 10
"""The fill runs below the dashboard's priority so pages stay quick while it works."""


class FillError(Exception):
    """A fill that cannot run (another one is running, the cache is missing); the message says what to do."""


class StepKind(StrEnum):
    """What a fill step computes (which pages wait for it)."""

    EXPLAIN = "explain"
    RELATED = "related"


@dataclass(frozen=True)
class FillStep:
    """One step of the fill and how far it is."""

    name: str
    """spread, related or layer0 (the dashboard names them for people)."""
    kind: StepKind
    done: int
    """Units finished and published (neurons, or layers for related)."""
    total: int
    layers: tuple[int, ...]
    """Layers the step covers."""
    neurons: tuple[str, ...] | None = None
    """The neurons ("L:N") of an explain step; None: every neuron of `layers` (related)."""

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 1.0

    @property
    def seconds(self) -> float:
        """Estimated cost of the whole step (weights the overall fraction)."""
        unit = SECONDS_PER_RELATED_LAYER if self.kind == StepKind.RELATED else SECONDS_PER_EXPLAINED_NEURON
        return self.total * unit

    def covers(self, neuron: NeuronId) -> bool:
        """Whether this step computes something of `neuron`."""
        if self.neurons is None:
            return neuron.layer in self.layers
        return str(neuron) in self.neurons


@dataclass(frozen=True)
class FillProgress:
    """The progress record of a cache's fill (NAME.fill.json)."""

    pid: int
    build_id: str
    steps: tuple[FillStep, ...]
    finished: bool = False
    error: str | None = None
    publications: int = 0
    """Publications so far: changes whenever new results are on disk."""
    updated_at: float = field(default_factory=time.time)

    @property
    def alive(self) -> bool:
        """Whether the fill's process still runs."""
        return _process_alive(self.pid)

    @property
    def running(self) -> bool:
        """Unfinished, and its process is alive."""
        return not self.finished and self.error is None and self.alive

    @property
    def stopped(self) -> bool:
        """Unfinished, and nothing works on it (killed, or it failed): `make app` resumes it."""
        return not self.finished and not self.running

    @property
    def fraction(self) -> float:
        """Share of the work done, each step weighed by its estimated time."""
        total = sum(s.seconds for s in self.steps)
        return sum(s.seconds * s.fraction for s in self.steps) / total if total else 1.0

    def step_for(self, kind: StepKind, neuron: NeuronId | None = None) -> FillStep | None:
        """The unfinished step of `kind` that computes something of `neuron` (any neuron when None)."""
        for step in self.steps:
            if step.kind == kind and not step.finished and (neuron is None or step.covers(neuron)):
                return step
        return None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FillProgress:
        steps = tuple(
            FillStep(name=str(s["name"]), kind=StepKind(s["kind"]), done=int(s["done"]), total=int(s["total"]),
                     layers=tuple(int(x) for x in s["layers"]),
                     neurons=None if s.get("neurons") is None else tuple(str(n) for n in s["neurons"]))
            for s in data["steps"]
        )
        return cls(pid=int(data["pid"]), build_id=str(data["build_id"]), steps=steps,
                   finished=bool(data["finished"]), error=data.get("error"),
                   publications=int(data.get("publications", 0)), updated_at=float(data.get("updated_at", 0.0)))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process by that id
        return True
    return True


# --- the files of a fill -------------------------------------------------------------------------------------------


def progress_path(cache: Path) -> Path:
    """NAME.fill.json: the progress record the dashboard reads."""
    return cache.with_name(cache.name.removesuffix(".duckdb") + ".fill.json")


def log_path(cache: Path) -> Path:
    """NAME.fill.log: what a background fill prints."""
    return cache.with_name(cache.name.removesuffix(".duckdb") + ".fill.log")


def _lock_path(cache: Path) -> Path:
    return cache.with_name(cache.name.removesuffix(".duckdb") + ".fill.lock")


def read_fill(cache: str | Path) -> FillProgress | None:
    """The progress record of the fill of `cache`; None when there is none (or it cannot be read)."""
    record = progress_path(Path(cache))
    try:
        found = record.stat()
    except OSError as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("cannot read the fill's progress of %s: %s", cache, error)
        return None
    # every page run of the dashboard asks; the record changes every few seconds while a fill runs, never after
    return _read_record(str(record), found.st_ino, found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=16)
def _read_record(record: str, inode: int, mtime_ns: int, size: int) -> FillProgress | None:
    # keyed by the file's identity: _write_record replaces the file, so each record is a new inode and time
    try:
        return FillProgress.from_json(json.loads(Path(record).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        if not isinstance(error, FileNotFoundError):
            log.warning("cannot read the fill's progress %s: %s", record, error)
        return None


def _write_record(cache: Path, progress: FillProgress) -> None:
    """Write the record atomically (a reader never sees half of it)."""
    target = progress_path(cache)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(replace(progress, updated_at=time.time()).to_json()))
    os.replace(tmp, target)


# --- planning ---------------------------------------------------------------------------------------------------------


def plan_fill(layers: int, neurons_per_layer: int, spread: int, seed: int = 0) -> list[FillStep]:
    """The fill's steps for a cache of this shape, none done: a spread of `spread` neurons over layers 1.., the
    related tables of every layer, then every neuron of layer 0 not on the first page."""
    # the sample `explain --layers 1-29 --sample N` takes
    from core.explain import sample_neurons

    steps = []
    if spread and layers > 1:
        sample = sample_neurons(range(1, layers), neurons_per_layer, spread, seed)
        steps.append(FillStep("spread", StepKind.EXPLAIN, 0, len(sample), tuple(range(1, layers)),
                              tuple(str(n) for n in sample)))
    steps.append(FillStep("related", StepKind.RELATED, 0, layers, tuple(range(layers))))
    first = set(FIRST_PAGE)
    rest = [str(NeuronId(0, n)) for n in range(neurons_per_layer) if NeuronId(0, n) not in first]
    if rest:
        steps.append(FillStep("layer0", StepKind.EXPLAIN, 0, len(rest), (0,), tuple(rest)))
    return steps


# --- running ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fill_lock(cache: Path) -> Iterator[None]:
    """One fill per cache: an flock on NAME.fill.lock (released with the process, also on kill -9)."""
    fd = os.open(_lock_path(cache), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise FillError(f"the demo of {cache} is already being filled in (process {holder}); its progress is "
                            f"in {progress_path(cache).name}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_fill(cache: Path, *, spread: int = DEMO_SPREAD, seed: int = 0,
             on_progress: Callable[[FillProgress], None] | None = None) -> FillProgress:
    """Compute the rest of the demo of `cache`, publishing chunk by chunk and keeping NAME.fill.json up to date;
    resumable (what is published is not redone). FillError when another fill of this cache runs."""
    from core.store import open_reader

    cache = Path(cache)
    if not cache.exists():
        raise FillError(f"no cache at {cache}; `python -m core demo --cache {cache}` builds it")
    with _fill_lock(cache):
        with open_reader(cache) as reader:
            info, build_id = reader.info(), str(reader.meta().get("build_id", ""))
        progress = FillProgress(os.getpid(), build_id, tuple(plan_fill(info.layers, info.neurons_per_layer, spread,
                                                                       seed)))
        _write_record(cache, progress)
        try:
            progress = _run_steps(cache, progress, on_progress)
        except BaseException as error:
            _write_record(cache, replace(progress, error=f"{type(error).__name__}: {error}"))
            raise
        progress = replace(progress, finished=True)
        _write_record(cache, progress)
    return progress


def _run_steps(cache: Path, progress: FillProgress,
               on_progress: Callable[[FillProgress], None] | None) -> FillProgress:
    steps = list(progress.steps)
    for index, step in enumerate(steps):
        chunks = _related_chunks(cache, step) if step.kind == StepKind.RELATED else _explain_chunks(cache, step)
        for done, wrote in chunks:
            if wrote:  # the writer published its results when it closed
                progress = replace(progress, publications=progress.publications + 1)
            steps[index] = step = replace(step, done=done)
            progress = replace(progress, steps=tuple(steps))
            _write_record(cache, progress)
            if on_progress:
                on_progress(progress)
    return progress


def _explain_chunks(cache: Path, step: FillStep) -> Iterator[tuple[int, bool]]:
    """Explain the step's neurons with the offline baseline, chunk by chunk: yields (neurons done, wrote any)."""
    from core.backends import wire
    from core.explain import explain_neurons
    from core.store import open_results_writer

    neurons = [NeuronId.parse(n) for n in step.neurons or ()]
    for start in range(0, len(neurons), EXPLAIN_CHUNK_NEURONS):
        with open_results_writer(cache) as writer:
            made = wire("baseline", explainer="baseline", responses=writer.responses)
            assert made.explainer is not None
            summary = explain_neurons(writer, neurons[start:start + EXPLAIN_CHUNK_NEURONS], made.explainer,
                                      made.simulator)
        yield min(start + EXPLAIN_CHUNK_NEURONS, len(neurons)), summary.done + summary.failed > 0


def _related_chunks(cache: Path, step: FillStep) -> Iterator[tuple[int, bool]]:
    """The related tables, RELATED_CHUNK_LAYERS layers at a time: yields (layers done, wrote any)."""
    from core.models import load_model
    from core.related import check_cache, compute_related
    from core.store import open_results_writer

    subject = None
    while True:
        with open_results_writer(cache) as writer:
            if subject is None:
                subject = load_model(check_cache(writer)["model"])
            summary = compute_related(writer, subject, progress=False, stop_after_layers=RELATED_CHUNK_LAYERS)
        yield summary.resumed_from_layer + summary.layers_computed, summary.layers_computed > 0
        if summary.finished:
            return


# --- starting it in the background ------------------------------------------------------------------------------------


def start_fill(cache: Path, *, spread: int = DEMO_SPREAD, python: Sequence[str] | None = None) -> int:
    """Start `python -m core fill CACHE` as a process of its own (its own session, so stopping the dashboard with
    Ctrl-C does not stop it), printing into NAME.fill.log; returns its process id."""
    command = [*(python or [sys.executable]), "-m", "core", "fill", str(cache), "--spread", str(spread), "--quiet"]
    root = Path(__file__).resolve().parents[1]
    with open(log_path(cache), "ab") as out:
        process = subprocess.Popen(command, cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                   start_new_session=True)
    return process.pid


def first_page_explained(cache: Path) -> bool:
    """Whether every neuron of FIRST_PAGE_NEURONS has an explanation (read-only: works beside an open dashboard)."""
    from core.store import open_reader

    with open_reader(cache) as reader:
        rows = reader.neuron_rows(FIRST_PAGE)
    return len(rows) == len(FIRST_PAGE) and all(r.explanation for r in rows.values())


def needs_fill(cache: Path) -> bool:
    """Whether the demo of `cache` still has work to fill in (no finished fill of this recording's build)."""
    from core.store import open_reader

    done = read_fill(cache)
    if done is None or not done.finished:
        return True
    with open_reader(cache) as reader:
        return str(reader.meta().get("build_id", "")) != done.build_id

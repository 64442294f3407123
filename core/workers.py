"""Worker processes for the offline default's explanations: its work is Python from end to end (about 60 ms a
neuron), so one interpreter uses one core, and a server's page runs share that interpreter with it.

- `offline_results`: `explain` over many neurons in one process per core (core.explain.explain_neurons).
- `OfflineWorkers`: a long-running process (the dashboard server) hands its explanations to workers, so the page
  runs of every session go on while one is made.

Workers are spawned, never forked (a forked child would inherit DuckDB's threads and locks), and without the
parent's main module: Streamlit runs app.py as `__main__`, and a spawned child runs its parent's `__main__` again
before anything else (it would start the whole dashboard script in every worker). Each worker opens the cache
read-only itself; the parent stores every result. A worker ignores Ctrl-C (the parent stops the pool) and ends
when its parent ends, even one killed outright.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import spawn
from multiprocessing.connection import wait
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.store import CacheReader, open_reader, signatures
from core.types import NeuronId

if TYPE_CHECKING:
    from core.explain import ExplanationResult

log = logging.getLogger(__name__)

OFFLINE_CHUNK = 8
"""Neurons a worker process of `offline_results` explains per round trip."""

WORKER_NAME = "neuron-atlas-worker"
"""The start of a worker process's name (how the spawn below knows its own processes)."""


# --- spawning without the parent's main module ----------------------------------------------------------------------


class _WorkerProcess(SpawnProcess):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"{WORKER_NAME}-{self.name}"


class _WorkerContext(SpawnContext):
    Process = _WorkerProcess


_SPAWN_DATA = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    # what a spawned child is told about its parent; our workers need the import path, not the main module
    data = _SPAWN_DATA(name)
    if name.startswith(WORKER_NAME):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


spawn.get_preparation_data = _preparation_data  # other processes are spawned as before

CONTEXT = _WorkerContext()
"""The multiprocessing context of every worker pool here."""


def _start_worker(nice: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _leave_with_parent()
    if nice and hasattr(os, "nice"):
        os.nice(nice)


def _leave_with_parent() -> None:
    """End this worker when its parent ends: a parent killed outright (or out of memory) would otherwise leave it
    waiting for work for ever, holding the parent's output pipes open."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        sentinel = parent.sentinel
        threading.Thread(target=lambda: (wait([sentinel]), os._exit(1)), name="parent watch", daemon=True).start()


# --- explain over many neurons ----------------------------------------------------------------------------------------


def _explain_in_worker(path: str, neuron: NeuronId, candidates: int | None) -> ExplanationResult:
    from core.baseline import BaselineSimulator
    from core.explain import BaselineExplainer, explain_neuron

    return explain_neuron(_reader(path), neuron, BaselineExplainer(), BaselineSimulator(), candidates)


def offline_results(path: Path, neurons: Sequence[NeuronId], candidates: int | None, processes: int
                    ) -> Iterator[ExplanationResult]:
    """The offline default's results of `neurons` (core.explain.explain_neuron with the baseline explainer and
    simulator), in their order, made by `processes` worker processes reading the cache at `path`."""
    with ProcessPoolExecutor(min(processes, len(neurons)), mp_context=CONTEXT, initializer=_start_worker) as pool:
        try:
            yield from pool.map(_explain_in_worker, [str(path)] * len(neurons), neurons, [candidates] * len(neurons),
                                chunksize=OFFLINE_CHUNK)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the chunks in progress end; nothing new starts
            raise


# --- explanations for a server ----------------------------------------------------------------------------------------


class OfflineWorkers:
    """Worker processes that make `core.explain.explain_on_first_view`'s explanations for a long-running process
    (the dashboard server, where every session's page runs share one interpreter: an explanation made there, 60-75
    ms of Python, holds all of them back). By default up to one process fewer than the machine's cores, at least
    one and at most MAX_PROCESSES (each about 160 MB), each started when the ones running are busy; `nice` lowers
    their scheduling priority (work nobody waits for uses only idle cores). Where the workers cannot be used, the
    explanation is made here."""

    MAX_PROCESSES = 4

    def __init__(self, processes: int | None = None, nice: int = 0) -> None:
        self.processes = processes or min(self.MAX_PROCESSES, max(1, (os.cpu_count() or 1) - 1))
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def explain(self, reader: CacheReader, neuron: NeuronId) -> ExplanationResult:
        """`explain_on_first_view(reader, neuron)`, made by a worker that reads the same cache file."""
        from core.explain import explain_on_first_view

        try:
            future = self._started().submit(_explain_file, str(reader.path), neuron)
        except (BrokenProcessPool, RuntimeError, OSError) as error:  # workers gone, or this process exiting
            why = f"offline workers unavailable ({error})"
        else:
            try:
                return future.result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): start afresh next time
                why = "an offline worker died"
        log.warning("%s; explaining %s here", why, neuron)
        self.close()
        return explain_on_first_view(reader, neuron)

    def close(self) -> None:
        """Stop the workers (the ones in progress finish); the next explanation starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=CONTEXT, initializer=_start_worker,
                                                 initargs=(self.nice,))
            return self._pool


_READERS: dict[str, tuple[tuple[object, ...], CacheReader]] = {}
"""A worker's readers by cache file, with the files' signatures when opened."""


def _reader(path: str) -> CacheReader:
    """This worker's reader of the cache at `path`, opened again when the file was rebuilt or published since."""
    now = signatures(Path(path))
    kept = _READERS.get(path)
    if kept is None or kept[0] != now:
        if kept is not None:
            kept[1].close()
        _READERS[path] = kept = (now, open_reader(path))
    return kept[1]


def _explain_file(path: str, neuron: NeuronId) -> ExplanationResult:
    from core.explain import explain_on_first_view

    return explain_on_first_view(_reader(path), neuron)

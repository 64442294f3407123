"""core.workers: explain in one process per core, a server's explanations made in worker processes, spawned
without the parent's main module; real processes on the small SmolLM2 cache."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import types

import pytest

from core.baseline import BaselineSimulator
from core.explain import BaselineExplainer, explain_neurons, explain_on_first_view
from core.store import open_reader, open_results_writer
from core.types import NeuronId
from core.workers import OfflineWorkers


def test_worker_processes_store_what_one_process_stores(copy_cache):
    """The offline default in two worker processes (`explain --processes 2`, one per core by default): the same
    explanations, choices and scores as in this process, each counted once; a second run skips them all."""
    neurons = [NeuronId(layer, n) for layer in (0, 15, 29) for n in range(0, 1536, 97)]
    stored = []
    for processes in (1, 2):
        with open_results_writer(copy_cache()) as store:
            seen: list = []
            summary = explain_neurons(store, neurons, BaselineExplainer(), BaselineSimulator(), processes=processes,
                                      on_done=seen.append)
            assert summary.done + summary.failed == len(neurons) == len(seen) and summary.done >= len(neurons) - 3
            stored.append([(r.neuron, r.text, r.status, r.candidates, r.calibration_score, r.score_all)
                           for n in neurons for r in store.explanations(n)])
            again = explain_neurons(store, neurons, BaselineExplainer(), BaselineSimulator(), processes=processes)
            assert again.skipped == summary.done and again.done == 0
    assert len(stored[0]) == len(neurons) and stored[0] == stored[1]

    class Other(BaselineSimulator):
        spec = "another simulator"

    with open_results_writer(copy_cache()) as store, pytest.raises(ValueError, match="offline default only"):
        explain_neurons(store, neurons, BaselineExplainer(), Other(), processes=2)


def test_offline_workers_make_the_explanation_made_here_and_outlive_a_killed_worker(small_cache):
    """The dashboard server's worker processes (core.workers.OfflineWorkers): the same result as in this process;
    a worker killed in between (out of memory, by hand) costs that one explanation its worker, not the answer."""
    def same(result) -> dict:
        return {k: v for k, v in dataclasses.asdict(result).items() if k != "seconds"}

    others = set(multiprocessing.active_children())  # workers of other tests' dashboards may be alive
    workers = OfflineWorkers(processes=1)
    try:
        with open_reader(small_cache) as reader:
            neurons = [NeuronId(0, 3), NeuronId(15, 700), NeuronId(29, 1500)]
            for neuron in neurons:
                assert same(workers.explain(reader, neuron)) == same(explain_on_first_view(reader, neuron))
            children = [c for c in multiprocessing.active_children() if c not in others]
            assert len(children) == 1  # one worker, started on first use and kept
            os.kill(children[0].pid, signal.SIGKILL)
            children[0].join(30)
            for neuron in neurons[:2]:  # the first answer made here, the next by a new worker
                assert same(workers.explain(reader, neuron)) == same(explain_on_first_view(reader, neuron))
            assert len([c for c in multiprocessing.active_children() if c not in others and c.is_alive()]) == 1
    finally:
        workers.close()


def test_workers_do_not_run_the_parents_main_module(small_cache, tmp_path, monkeypatch):
    """Streamlit runs app.py as `__main__`; a spawned child runs its parent's `__main__` first, which would start
    the whole dashboard script in every worker. A main module that leaves a mark when it runs leaves none."""
    mark = tmp_path / "main ran"
    script = tmp_path / "fake_app.py"
    script.write_text(f"open({str(mark)!r}, 'w').close()\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    others = set(multiprocessing.active_children())
    workers = OfflineWorkers(processes=1)
    try:
        with open_reader(small_cache) as reader:
            made = workers.explain(reader, NeuronId(0, 3))
            assert made.text and set(multiprocessing.active_children()) - others  # made by a worker that started
    finally:
        workers.close()
    assert not mark.exists()

"""Whole explain runs through the fault server (tests/fault_server.py), for every fault class of the LLM API, through
the library API and the command line: each neuron ends explained or stored as failed with its reason, the run never
crashes, a rerun without faults finishes the failed neurons and keeps the finished ones, and --max-cost holds by the
server's own count of the tokens it served (at core.llm's price table)."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fault_server import FAULTS, FaultServer

import core.llm
from core.explain import explain_neurons, make_explainer
from core.llm import make_client, price_per_million
from core.paths import copy_cache
from core.simulate import make_simulator
from core.store import CacheReader, open_reader, open_results_writer
from core.types import ExplanationRecord, ExplanationStatus, NeuronId

ROOT = Path(__file__).resolve().parents[1]
SPEC = "openai:gpt-4o-mini"
NEURONS = [NeuronId(0, n) for n in range(4)]
ENDED = re.compile(r"^(explainer|simulator): \S")
"""How a stored failure reads: which stage failed, then the reason."""


@pytest.fixture
def cache(tiny_cache: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.duckdb"
    copy_cache(tiny_cache, path)
    return path


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the real API through the developer's own environment."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def ended(store: CacheReader, neurons: Sequence[NeuronId], explainer: str, simulator: str
          ) -> dict[NeuronId, ExplanationRecord]:
    """Each neuron's row of this run; fails unless every neuron is explained, or failed with a stated reason."""
    records = store.run_explanations(neurons, explainer, simulator)
    for neuron in neurons:
        assert neuron in records, f"neuron {neuron} has no row"
        record = records[neuron]
        if record.status == ExplanationStatus.OK:
            assert record.text and record.failure is None
        else:
            assert record.status == ExplanationStatus.FAILED and ENDED.match(record.failure or ""), record.failure
    for neuron in neurons:  # nothing duplicated: one row per neuron and run
        assert len([r for r in store.explanations(neuron) if r.explainer == explainer]) == 1
    return records


def every_third(fault: str) -> Callable[[int, str, Any], str | None]:
    return lambda index, path, body: fault if index % 3 == 1 else None


def rerun_finishes(cache: Path, finished: dict[NeuronId, ExplanationRecord], neurons: Sequence[NeuronId]) -> None:
    """A run without faults explains the failed neurons and leaves the finished ones as they were."""
    with FaultServer() as clean, open_results_writer(cache) as store:
        client = make_client(SPEC, responses=store.responses, base_url=clean.url, timeout_s=5.0)
        summary = explain_neurons(store, neurons, make_explainer(SPEC, client=client),
                                  make_simulator(SPEC, client=client))
        records = ended(store, neurons, SPEC, SPEC)
    assert (summary.skipped, summary.done, summary.failed) == (len(finished), len(neurons) - len(finished), 0)
    assert all(record.status == ExplanationStatus.OK for record in records.values())
    assert {neuron: records[neuron] for neuron in finished} == finished


# --- the library API, one fault class at a time -----------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_class_ends_every_neuron_explained_or_failed(fault: str, cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.llm, "BACKOFF_S", (0.05, 0.2))  # short waits; the real ones are tested in test_llm.py
    with FaultServer(plan=every_third(fault), retry_after="0") as server, open_results_writer(cache) as store:
        client = make_client(SPEC, responses=store.responses, base_url=server.url, timeout_s=1.0, max_retries=2)
        summary = explain_neurons(store, NEURONS, make_explainer(SPEC, client=client),
                                  make_simulator(SPEC, client=client), concurrency=2)
        records = ended(store, NEURONS, SPEC, SPEC)
    assert server.applied()[fault] >= 1
    assert summary.stopped is None and summary.done + summary.failed == len(NEURONS)
    assert summary.failed == sum(r.status == ExplanationStatus.FAILED for r in records.values())
    # the client's accounts against the server's: what it confirmed was served; what was served, it counted
    served = server.served_cost(price_per_million)
    confirmed, worst = client.usage.cost_usd, client.usage.unconfirmed_usd
    assert confirmed is not None and worst is not None
    assert confirmed <= served * (1 + 1e-9) and served <= (confirmed + worst) * (1 + 1e-9)
    rerun_finishes(cache, {n: r for n, r in records.items() if r.status == ExplanationStatus.OK}, NEURONS)


# --- the command line -------------------------------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=timeout)


_COST = re.compile(r"^cost  (\S+): .*?, \$([\d.]+)(?:; \d+ lost answers may also have been billed "
                   r"\(up to \$([\d.]+) more\))?$", re.MULTILINE)


def accounted(stdout: str) -> tuple[float, float]:
    """(confirmed, worst case of lost answers) in US dollars, summed over the run's cost lines."""
    lines = _COST.findall(stdout)
    assert lines, stdout
    return sum(float(c) for _, c, _ in lines), sum(float(w or 0) for _, _, w in lines)


class EveryClassInTurn:
    """Every other request gets the next fault class, in turn; one that cannot apply to a request waits for one it
    can (misaligned logprobs need a request that asks for logprobs). The first request (the CLI's check) is clean."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self, index: int, path: str, body: Any) -> str | None:
        if index == 0 or index % 2 == 0:
            return None
        fault = list(FAULTS)[self.next % len(FAULTS)]
        if fault == "misaligned_logprobs" and not body.get("logprobs"):
            return None
        self.next += 1
        return fault


def test_cli_explain_survives_every_fault_class(cache: Path) -> None:
    neurons = [NeuronId(0, n) for n in range(10)]
    with FaultServer(plan=EveryClassInTurn(), retry_after="1") as server:
        result = run_cli("explain", str(cache), "--neurons", "0:0-9", "--explainer", SPEC, "--simulator", SPEC,
                         "--base-url", server.url, "--timeout", "1", "--max-cost", "1", "--concurrency", "1",
                         "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower()
    assert set(server.applied()) == set(FAULTS)
    with open_reader(cache) as store:
        records = ended(store, neurons, SPEC, SPEC)
    failed = sum(r.status == ExplanationStatus.FAILED for r in records.values())
    assert f"{len(neurons) - failed} explained, 0 already done (skipped), {failed} failed" in result.stdout
    confirmed, worst = accounted(result.stdout)
    served = server.served_cost(price_per_million)
    assert confirmed <= served + 1e-4 and served <= confirmed + worst + 1e-4  # printed to 4 decimals
    rerun_finishes(cache, {n: r for n, r in records.items() if r.status == ExplanationStatus.OK}, neurons)


def test_cli_max_cost_holds_by_the_servers_count(cache: Path) -> None:
    """Two priced models, answers lost at random, and a server that bills the most each request allows: the run
    stops at the cap, and the server's own count of what it served stays under it."""
    cap = 0.05
    lost = ["drop", "stall", "slow_body", "truncated_json", "cut_body", "no_usage", "rate_limit", "server_error"]
    chance = random.Random(7)

    def plan(index: int, path: str, body: Any) -> str | None:
        return chance.choice(lost) if index > 0 and chance.random() < 0.3 else None

    with FaultServer(plan=plan, greedy=True, retry_after="0") as server:
        result = run_cli("explain", str(cache), "--neurons", "0:0-11", "--explainer", "openai:gpt-4o", "--simulator",
                         SPEC, "--base-url", server.url, "--timeout", "1", "--max-cost", str(cap),
                         "--concurrency", "3", "--quiet")
    assert result.returncode == 1, result.stderr
    assert "stopped: spending cap of $0.05 reached" in result.stderr and "Traceback" not in result.stderr
    served = server.served_cost(price_per_million)
    assert set(server.served_tokens()) == {"gpt-4o", "gpt-4o-mini"}
    assert served <= cap
    confirmed, worst = accounted(result.stdout)
    assert served <= confirmed + worst + 1e-4 and confirmed + worst <= cap + 1e-4
    with open_reader(cache) as store:
        tried = store.run_explanations([NeuronId(0, n) for n in range(12)], "openai:gpt-4o", SPEC)
        assert 0 < len(tried) < 12  # it explained some neurons, then stopped before the rest
        ended(store, list(tried), "openai:gpt-4o", SPEC)

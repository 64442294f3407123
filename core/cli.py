"""The command line: `python -m core build | info | ...`.

Every user-facing failure is one of the stages' own errors; `main` prints its message on one line and
exits non-zero, so nobody sees a traceback for a wrong model id or a missing file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_CACHE_DIR = Path("caches")


class CliError(Exception):
    """A bad argument found after parsing; printed as one line."""


def _int_range(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
        return value

    return parse


def default_cache_path(model: str, corpus: str) -> Path:
    """caches/<model>-<corpus>.duckdb, with path separators and odd characters made safe."""
    def clean(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(text).name or text).strip("-.") or "x"

    return DEFAULT_CACHE_DIR / f"{clean(model)}-{clean(corpus)}.duckdb"


# --- build ------------------------------------------------------------------------------------------------


def add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="record every MLP neuron of a model over a corpus into a cache")
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (built in), a hub id, a folder or a .gguf file")
    p.add_argument("--corpus", default="stdlib", help="stdlib (built in), a .txt file or folder, .jsonl, .parquet, "
                   "or a saved Hugging Face dataset folder")
    p.add_argument("--field", default="text", help="JSONL field / Parquet or dataset column holding the text")
    p.add_argument("--tokens", type=_int_range("--tokens", 64, 2_000_000_000), default=100_000,
                   help="how many corpus tokens to record (default 100000)")
    p.add_argument("--cache", type=Path, help="cache file to write (default caches/MODEL-CORPUS.duckdb)")
    p.add_argument("--excerpt-len", type=_int_range("--excerpt-len", 4, 2048), default=64)
    p.add_argument("--top-k", type=_int_range("--top-k", 1, 1000), default=20)
    p.add_argument("--batch-size", type=_int_range("--batch-size", 1, 4096), default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-seconds", type=float, default=300.0,
                   help="save resumable progress this often (default 300)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache exists (the old file is replaced "
                   "only when the new one is finished)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="shard the corpus over Ray workers: "
                   "a local cluster, or the cluster at ADDRESS (needs requirements-ray.txt; docs/recording.md)")
    p.add_argument("--workers", type=_int_range("--workers", 1, 4096),
                   help="with --ray: number of workers (default: one per GPU, else one per CPU)")
    p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from core.corpus import build_corpus
    from core.models import load_model
    from core.record import BuildPlan, RecordConfig, record_corpus
    from core.store import partial_dir

    if args.tokens < args.excerpt_len:
        raise CliError(f"--tokens ({args.tokens}) must be at least --excerpt-len ({args.excerpt_len})")
    cache = args.cache or default_cache_path(args.model, args.corpus)
    if cache.exists() and not args.force and not partial_dir(cache).exists():
        print(f"{cache} is already built; `python -m core info {cache}` describes it, --force rebuilds it")
        return 0
    cache.parent.mkdir(parents=True, exist_ok=True)
    cfg = RecordConfig(top_k=args.top_k, bottom_k=args.top_k, batch_size=args.batch_size, seed=args.seed,
                       checkpoint_seconds=args.checkpoint_seconds)
    plan = BuildPlan(
        model=args.model, corpus=args.corpus if args.field == "text" else f"{args.corpus} [{args.field}]",
        tokens=args.tokens, excerpt_len=args.excerpt_len, settings={"top_k": args.top_k, "seed": args.seed},
    )
    if args.ray is not None:
        return _run_build_on_ray(args, cache, plan, cfg)
    if args.workers:
        raise CliError("--workers needs --ray")
    print(f"loading {args.model} ...", file=sys.stderr)
    subject = load_model(args.model)
    summary = record_corpus(
        subject,
        lambda: build_corpus(args.corpus, subject.tokenizer, max_tokens=args.tokens, excerpt_len=args.excerpt_len,
                             field=args.field, seed=args.seed, progress=not args.quiet),
        cache, plan, cfg, progress=not args.quiet,
    )
    resumed = f", resumed at excerpt {summary.resumed_from_excerpt}" if summary.resumed_from_excerpt else ""
    print(
        f"recorded {summary.layers} layers x {summary.neurons_per_layer} neurons over {summary.tokens:,} tokens "
        f"({summary.excerpts:,} excerpts) in {summary.seconds:.0f} s, {summary.tokens_per_second:.0f} tokens/s"
        f"{resumed} -> {cache}"
    )
    return 0


def _run_build_on_ray(args: argparse.Namespace, cache: Path, plan: Any, cfg: Any) -> int:
    from core.corpus import build_corpus
    from core.distributed import connect, record_with_ray
    from core.models import load_tokenizer

    connect(args.ray or None, args.workers)
    tokenizer = load_tokenizer(args.model)
    summary = record_with_ray(
        args.model, tokenizer,
        lambda: build_corpus(args.corpus, tokenizer, max_tokens=args.tokens, excerpt_len=args.excerpt_len,
                             field=args.field, seed=args.seed, progress=not args.quiet),
        cache, plan, cfg, workers=args.workers, progress=not args.quiet,
    )
    resumed = f", resumed at excerpt {summary.resumed_from_excerpt}" if summary.resumed_from_excerpt else ""
    print(
        f"recorded {summary.layers} layers x {summary.neurons_per_layer} neurons over {summary.tokens:,} tokens "
        f"({summary.excerpts:,} excerpts) on {summary.extra['workers']} Ray workers in {summary.seconds:.0f} s, "
        f"{summary.tokens_per_second:.0f} tokens/s{resumed} -> {cache}"
    )
    return 0


# --- info -------------------------------------------------------------------------------------------------


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a cache")
    p.add_argument("cache", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from core.store import Store

    with Store.open(args.cache) as store:
        info = store.info()
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    total = info.layers * info.neurons_per_layer
    print(f"cache        {info.path}")
    print(f"model        {info.model} ({info.architecture})")
    print(f"corpus       {info.corpus}")
    print(f"tokens       {info.tokens:,} in {info.excerpts:,} excerpts of {info.excerpt_len}")
    print(f"neurons      {info.neurons_recorded:,} of {total:,} recorded ({info.layers} layers x "
          f"{info.neurons_per_layer:,})")
    print(f"explanations {info.explanations:,}")
    print(f"scores       {info.scores:,}")
    return 0


# --- related ----------------------------------------------------------------------------------------------


def add_related(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("related", help="compute related tokens and related neurons of every neuron of a cache "
                       "(formulas: docs/related.md)")
    p.add_argument("cache", type=Path, help="a cache written by `python -m core build`")
    p.add_argument("--show", metavar="LAYER:NEURON", help="print the related tables of one neuron (computes nothing)")
    p.add_argument("--tokens", type=_int_range("--tokens", 1, 1000), default=20,
                   help="input and output tokens kept each way per neuron (default 20)")
    p.add_argument("--neurons", type=_int_range("--neurons", 1, 1000), default=10,
                   help="upstream, downstream and correlated neurons kept each way per neuron (default 10)")
    p.add_argument("--sample-tokens", type=_int_range("--sample-tokens", 1, 10_000_000), default=2048,
                   help="corpus tokens re-run for the activation correlations (default 2048)")
    p.add_argument("--force", action="store_true", help="recompute even if the tables are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_related)


def run_related(args: argparse.Namespace) -> int:
    from core.models import load_model
    from core.related import RelatedConfig, check_cache, compute_related
    from core.store import Store
    from core.types import NeuronId

    if args.show:
        neuron = NeuronId.parse(args.show)
        with Store.open(args.cache) as store:
            store.check_neuron(neuron)
            print("\n".join(_related_lines(store, neuron)))
        return 0
    cfg = RelatedConfig(tokens_per_kind=args.tokens, neurons_per_kind=args.neurons, sample_tokens=args.sample_tokens)
    with Store.open(args.cache, writable=True) as store:
        meta = check_cache(store)
        print(f"loading {meta['model']} ...", file=sys.stderr)
        subject = load_model(meta["model"])
        summary = compute_related(store, subject, cfg, force=args.force, progress=not args.quiet)
    if summary.layers_computed == 0:
        print(f"{args.cache} already has every related table; --force recomputes them")
        return 0
    resumed = f", resumed at layer {summary.resumed_from_layer}" if summary.resumed_from_layer else ""
    print(
        f"related tokens and neurons of {summary.layers} layers x {summary.neurons_per_layer} neurons in "
        f"{summary.seconds:.0f} s ({summary.sample_tokens:,} sample tokens for correlations){resumed} -> {args.cache}"
    )
    return 0


def _related_lines(store: Any, neuron: Any) -> list[str]:
    """The --show text: one line per list, best first."""
    from core.types import RelatedNeuronKind, RelatedTokenKind

    computed = bool(store.related_layers_done())
    lines = [f"neuron {neuron} of {store.path}", "related tokens"]
    for kind in RelatedTokenKind:
        found = store.related_tokens(neuron, kind)
        if not found and not computed and not kind.startswith("activation"):
            text = "(not computed yet: run `python -m core related CACHE`)"
        else:
            text = "  ".join(
                f"{t.token!r} {t.value:.3g}" + (f" (x{t.count})" if t.count is not None else "") for t in found
            ) or "(none)"
        lines.append(f"  {kind:<20} {text}")
    lines.append("related neurons")
    for kind in RelatedNeuronKind:
        found = store.related_neurons(neuron, kind)
        text = "  ".join(f"{r.neuron} {r.strength:.3g}" for r in found) or (
            "(none)" if computed else "(not computed yet: run `python -m core related CACHE`)"
        )
        lines.append(f"  {kind:<20} {text}")
    return lines


# --- explain, score, show ---------------------------------------------------------------------------------


def parse_neurons(text: str) -> list[Any]:
    """"0:0-99,5:17" -> NeuronIds in the order written, without repeats."""
    from core.types import NeuronId

    found: list[NeuronId] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        layer_text, colon, rest = item.partition(":")
        low, dash, high = rest.partition("-")
        try:
            if not colon or not layer_text.strip().isdigit():
                raise ValueError
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise CliError(f"--neurons: cannot read {item!r}; write LAYER:NEURON or LAYER:FIRST-LAST, "
                           "comma-separated, e.g. 0:0-99,5:17") from None
        if last < first:
            raise CliError(f"--neurons: {item!r} is an empty range")
        found += [NeuronId(int(layer_text), n) for n in range(first, last + 1)]
    if not found:
        raise CliError("--neurons names no neuron; e.g. --neurons 0:0-99,5:17")
    return list(dict.fromkeys(found))


def parse_layers(text: str) -> list[int]:
    """"0-29" or "0,5,10-12" -> sorted layer numbers."""
    layers: set[int] = set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        low, dash, high = item.partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise CliError(f"--layers: cannot read {item!r}; write e.g. 0-29 or 0,5,10-12") from None
        if last < first:
            raise CliError(f"--layers: {item!r} is an empty range")
        layers.update(range(first, last + 1))
    if not layers:
        raise CliError("--layers names no layer; e.g. --layers 0-29")
    return sorted(layers)


def sample_neurons(layers: Sequence[int], per_layer: int, sample: int | None, seed: int) -> list[Any]:
    """Every neuron of the layers, or `sample` of them spread evenly over the layers (seeded)."""
    import numpy as np

    from core.types import NeuronId

    if sample is None:
        return [NeuronId(layer, n) for layer in layers for n in range(per_layer)]
    rng = np.random.default_rng(seed)
    counts = [sample // len(layers) + (i < sample % len(layers)) for i in range(len(layers))]
    chosen = []
    for layer, count in zip(layers, counts, strict=True):
        picked = rng.choice(per_layer, size=min(count, per_layer), replace=False)
        chosen += [NeuronId(layer, int(n)) for n in sorted(picked)]
    return chosen


def _add_llm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="an OpenAI-compatible server for openai:MODEL (default OPENAI_BASE_URL or "
                   "api.openai.com)")
    p.add_argument("--max-cost", type=float, metavar="USD", help="stop before spending more than this on a priced "
                   "model (answers already received stay cached)")
    p.add_argument("--concurrency", type=_int_range("--concurrency", 1, 64), default=4,
                   help="LLM calls in flight at once (default 4)")


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain neurons, score the explanations and store both in the cache")
    p.add_argument("cache", type=Path)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--neurons", help="LAYER:NEURON or LAYER:FIRST-LAST, comma-separated (e.g. 0:0-99,5:17)")
    which.add_argument("--layers", help="layers, e.g. 0-29 or 0,5,10-12 (every neuron, or --sample of them)")
    p.add_argument("--sample", type=_int_range("--sample", 1, 10_000_000),
                   help="with --layers: this many neurons spread evenly over the layers (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--explainer", default="baseline", help="baseline (default; no language model), local, "
                   "local:MODEL, or openai:MODEL")
    p.add_argument("--simulator", default="baseline", help="baseline (default), local, local:MODEL, or openai:MODEL")
    p.add_argument("--candidates", type=_int_range("--candidates", 1, 20),
                   help="candidate explanations per neuron, the best on the calibration excerpts kept (default: "
                   "every baseline variant; 1 for language models)")
    _add_llm_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_explain)


def _clients(args: argparse.Namespace, store: Any, specs: Sequence[str]) -> dict[str, Any]:
    """One LLM client per distinct LLM spec (an explainer and a simulator with the same spec share it)."""
    from core.llm import make_client

    clients: dict[str, Any] = {}
    for spec in specs:
        kind = spec.strip().partition(":")[0].lower()
        if kind in ("openai", "local") and spec not in clients:
            clients[spec] = make_client(spec, store=store, base_url=args.base_url, max_cost_usd=args.max_cost,
                                        concurrency=args.concurrency)
    return clients


def run_explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.explain import check_client, explain_neurons, make_explainer
    from core.simulate import make_simulator
    from core.store import Store

    if args.sample is not None and not args.layers:
        raise CliError("--sample goes with --layers (e.g. --layers 0-29 --sample 200)")
    with Store.open(args.cache, writable=True) as store:
        if args.neurons:
            neurons = parse_neurons(args.neurons)
        else:
            layers = parse_layers(args.layers)
            info = store.info()
            for layer in layers:
                if not 0 <= layer < info.layers:
                    raise CliError(f"layer {layer} is out of range: this cache has layers 0-{info.layers - 1}")
            neurons = sample_neurons(layers, info.neurons_per_layer, args.sample, args.seed)
        for neuron in neurons:
            store.check_neuron(neuron)
        clients = _clients(args, store, [args.explainer, args.simulator])
        explainer = make_explainer(args.explainer, client=clients.get(args.explainer))
        simulator = make_simulator(args.simulator, client=clients.get(args.simulator))
        for spec, client in clients.items():
            if spec.lower().startswith("openai"):
                check_client(client)
        llm = any(spec.lower().startswith("openai") for spec in clients)
        with tqdm(total=len(neurons), unit="neuron", disable=args.quiet, desc="explain") as bar:
            summary = explain_neurons(
                store, neurons, explainer, simulator, candidates=args.candidates,
                concurrency=args.concurrency if llm else 1, on_done=lambda _result: bar.update(1),
            )
    print("\n".join(_summary_lines(summary)))
    if summary.stopped:
        print(f"stopped: {summary.stopped}", file=sys.stderr)
        return 1
    return 0


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.2f}"


def _summary_lines(summary: Any) -> list[str]:
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
            f"{_fmt(row.mean_all):>9} {_fmt(row.median_all):>9} {_fmt(row.mean_top):>9} {_fmt(row.mean_random):>9}"
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
    p.add_argument("--explanation", required=True, help="what the neuron responds to, e.g. \"the word 'return'\"")
    p.add_argument("--simulator", default="baseline", help="baseline (default), local, local:MODEL, or openai:MODEL")
    _add_llm_options(p)
    p.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> int:
    from core.explain import check_client, save_human_explanation
    from core.score import check_explanation, score_explanation
    from core.simulate import make_simulator
    from core.store import Store

    text = check_explanation(args.explanation)
    neurons = parse_neurons(args.neurons)
    with Store.open(args.cache, writable=True) as store:
        for neuron in neurons:
            store.check_neuron(neuron)
        clients = _clients(args, store, [args.simulator])
        simulator = make_simulator(args.simulator, client=clients.get(args.simulator))
        for client in clients.values():
            if client.spec.lower().startswith("openai"):
                check_client(client)
        print(f"{'neuron':>8} {'all':>9} {'top':>9} {'random':>9}  per excerpt (top, then random)")
        for neuron in neurons:
            scored = score_explanation(store, neuron, text, simulator)
            save_human_explanation(store, scored, simulator.prompt_version)
            per = " ".join(_fmt(e.score) for e in scored.excerpts)
            s = scored.scores
            print(f"{neuron!s:>8} {_fmt(s.all):>9} {_fmt(s.top):>9} {_fmt(s.random):>9}  {per}")
        for spec, usage in ((c.spec, c.usage) for c in clients.values()):
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
    from core.store import Store
    from core.types import ExplanationStatus, NeuronId

    try:
        neuron = NeuronId.parse(args.neuron)
    except ValueError as error:
        raise CliError(f"--neuron: {error}") from None
    with Store.open(args.cache) as store:
        store.check_neuron(neuron)
        stats = store.neuron_stats(neuron)
        records = store.explanations(neuron)
        head = f"neuron {neuron}"
        if stats is not None:
            head += f"  max {stats.max_activation:.3g}  min {stats.min_activation:.3g}  density {stats.density:.3f}"
        print(head)
        if not records:
            print(f"no explanations yet: python -m core explain {args.cache} --neurons {neuron}")
            return 0
        print(f"{'id':>5} {'all':>9} {'top':>9} {'random':>9}  {'explainer':<22} {'simulator':<22} created")
        for r in records:
            print(f"{r.explanation_id:>5} {_fmt(r.score_all):>9} {_fmt(r.score_top):>9} {_fmt(r.score_random):>9}  "
                  f"{r.explainer:<22} {r.simulator:<22} {r.created_at}")
            if r.status == ExplanationStatus.FAILED:
                print(f"      FAILED: {r.failure}")
            if r.text:
                print(f"      {r.text}")
        best = records[0]
        if args.tokens and best.status == ExplanationStatus.OK:
            print(f"\nreal / simulated (0-10) of explanation {best.explanation_id}, tokens where either is non-zero:")
            for sim in store.simulations(best.explanation_id):
                peak = max(max(sim.activations), 1e-9)
                cells = [f"{t!r} {max(a, 0) / peak * 10:.0f}/{p:.0f}"
                         for t, a, p in zip(sim.tokens, sim.activations, sim.normalized_predictions, strict=True)
                         if a > 0.05 * peak or p >= 0.5]
                print(f"  {sim.kind:<6} excerpt {sim.excerpt_id:<6} r={_fmt(sim.score):<9} " + "  ".join(cells[:24]))
    return 0


# --- entry point ------------------------------------------------------------------------------------------

# --- demo: everything the dashboard shows, in one resumable command ---------------------------------------

DEMO_CACHE = DEFAULT_CACHE_DIR / "smollm2-135m-stdlib.duckdb"
DEMO_SPREAD = 290
"""Neurons explained over layers 1-29 besides all of layer 0 (10 per layer)."""


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the demo cache: record the default model over stdlib, related tables, "
                       "and offline explanations of all of layer 0 plus a spread over the other layers")
    p.add_argument("--cache", type=Path, default=DEMO_CACHE)
    p.add_argument("--model", default="smollm2-135m", help="as for build (default: the built-in model)")
    p.add_argument("--corpus", default="stdlib", help="as for build (default: the built-in stdlib corpus)")
    p.add_argument("--tokens", type=_int_range("--tokens", 64, 2_000_000_000), default=100_000)
    p.add_argument("--spread", type=_int_range("--spread", 0, 1_000_000), default=DEMO_SPREAD,
                   help=f"neurons explained over the layers after 0 (default {DEMO_SPREAD})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Each step is the same code as its own command and skips what is already done, so a rerun resumes."""
    from core.store import Store

    quiet = ["--quiet"] if args.quiet else []
    cache = str(args.cache)
    parser = build_parser()

    def step(title: str, argv: list[str]) -> int:
        print(f"== {title}", file=sys.stderr)
        parsed = parser.parse_args(argv)
        return int(parsed.run(parsed))

    for title, argv in (
        ("1/4 record every neuron", ["build", "--cache", cache, "--model", args.model, "--corpus", args.corpus,
                                     "--tokens", str(args.tokens), *quiet]),
        ("2/4 related tokens and neurons", ["related", cache, *quiet]),
        ("3/4 explain layer 0", ["explain", cache, "--layers", "0", *quiet]),
    ):
        if code := step(title, argv):
            return code
    with Store.open(args.cache) as store:
        layers = store.info().layers
    if args.spread and layers > 1:
        argv = ["explain", cache, "--layers", f"1-{layers - 1}", "--sample", str(args.spread), *quiet]
        if code := step("4/4 explain a spread over the other layers", argv):
            return code
    print(f"demo cache ready: {cache} (open it with `streamlit run app.py`)")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_build, add_info, add_related, add_explain, add_score, add_show, add_demo,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Neuron Atlas: record, explain, score and "
                                     "relate the MLP neurons of a language model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Every exception type whose message is meant for the user."""
    from core.corpus import CorpusError
    from core.explain import ExplainError
    from core.llm import LLMError
    from core.models import ModelError
    from core.record import RecordError
    from core.related import RelatedError
    from core.score import ScoreError
    from core.simulate import SimulationError, SimulatorSpecError
    from core.store import StoreError

    return (
        CliError, ModelError, CorpusError, RecordError, RelatedError, StoreError, LLMError, ExplainError, ScoreError,
        SimulationError, SimulatorSpecError, ValueError, FileNotFoundError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

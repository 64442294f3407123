"""Commands about a cache as a whole: build (record), info, migrate, and demo (everything the dashboard shows)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli.args import CliError, default_cache_path, int_range
from core.paths import CACHE_DIR_NAME, DEMO_CACHE_NAME, build_lock_path, partial_dir, results_path

if TYPE_CHECKING:
    from core.record import BuildPlan, RecordConfig


def add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="record every MLP neuron of a model over a corpus into a cache")
    p.add_argument("--model", default="smollm2-135m",
                   help="smollm2-135m (built in), a hub id, a folder or a .gguf file")
    p.add_argument("--corpus", default="stdlib", help="stdlib (built in), a .txt file or folder, .jsonl, .parquet, "
                   "or a saved Hugging Face dataset folder")
    p.add_argument("--field", default="text", help="JSONL field / Parquet or dataset column holding the text")
    p.add_argument("--tokens", type=int_range("--tokens", 64, 2_000_000_000), default=100_000,
                   help="how many corpus tokens to record (default 100000)")
    p.add_argument("--cache", type=Path, help="cache file to write (default caches/MODEL-CORPUS.duckdb)")
    p.add_argument("--excerpt-len", type=int_range("--excerpt-len", 4, 2048), default=64)
    p.add_argument("--top-k", type=int_range("--top-k", 1, 1000), default=20)
    p.add_argument("--batch-size", type=int_range("--batch-size", 1, 4096), default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-seconds", type=float, default=300.0,
                   help="save resumable progress this often (default 300)")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache exists (the old file is replaced "
                   "only when the new one is finished)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="shard the corpus over Ray workers: "
                   "a local cluster, or the cluster at ADDRESS (needs requirements-ray.txt; docs/recording.md)")
    p.add_argument("--workers", type=int_range("--workers", 1, 4096),
                   help="with --ray: number of workers (default: one per GPU, else one per CPU)")
    p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from core.store.publish import FileLock

    if args.tokens < args.excerpt_len:
        raise CliError(f"--tokens ({args.tokens}) must be at least --excerpt-len ({args.excerpt_len})")
    cache = args.cache or default_cache_path(args.model, args.corpus)
    if _already_built(cache, args.force):
        return 0
    cache.parent.mkdir(parents=True, exist_ok=True)
    # before anything is written: a second build would share the first one's progress folder and files
    lock = FileLock(
        build_lock_path(cache),
        busy=lambda holder: (f"another build of {cache} is running (process {holder}); wait until it finishes, or "
                             "stop it (the next build goes on from where it stopped)"),
        unwritable=lambda error: (f"cannot build in {cache.parent}: {error.strerror}; choose a folder you can write "
                                  "with --cache"))
    try:
        return 0 if _already_built(cache, args.force) else _build(args, cache)  # finished while this one started
    finally:
        lock.release()


def _already_built(cache: Path, force: bool) -> bool:
    """Whether `cache` is complete and not to be rebuilt (then says so)."""
    if cache.exists() and not force and not partial_dir(cache).exists():
        print(f"{cache} is already built; `python -m core info {cache}` describes it, --force rebuilds it")
        return True
    return False


def _build(args: argparse.Namespace, cache: Path) -> int:
    from core.corpus import build_corpus
    from core.models import load_model
    from core.record import BuildPlan, RecordConfig, record_corpus

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


def _run_build_on_ray(args: argparse.Namespace, cache: Path, plan: BuildPlan, cfg: RecordConfig) -> int:
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


def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a cache")
    p.add_argument("cache", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from core.store import open_reader

    with open_reader(args.cache) as reader:
        info = reader.info()
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


def add_migrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="bring a cache made by an older Neuron Atlas to the current schema version")
    p.add_argument("cache", type=Path)
    p.set_defaults(run=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from core.store import SCHEMA_VERSION, cache_version, migrate_cache

    version = cache_version(args.cache)
    if not migrate_cache(args.cache):
        print(f"{args.cache} is already schema version {SCHEMA_VERSION}; nothing to do")
        return 0
    moved = (f"; explanations, scores and related tables moved to {results_path(args.cache).name}"
             if version == 1 else "")
    print(f"{args.cache} is now schema version {SCHEMA_VERSION}: the recording stays in {args.cache.name}, its "
          f"activations packed (docs/recording.md){moved}")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    from core.fill import DEMO_SPREAD, FIRST_PAGE_NEURONS

    p = sub.add_parser("demo", help="build the demo cache: record the default model over stdlib, explain and score "
                       f"the first page ({FIRST_PAGE_NEURONS}), then fill in the rest (offline explanations of a "
                       "spread over the other layers, related tables, the rest of layer 0)")
    p.add_argument("--cache", type=Path, default=Path(CACHE_DIR_NAME) / DEMO_CACHE_NAME)
    p.add_argument("--model", default="smollm2-135m", help="as for build (default: the built-in model)")
    p.add_argument("--corpus", default="stdlib", help="as for build (default: the built-in stdlib corpus)")
    p.add_argument("--tokens", type=int_range("--tokens", 64, 2_000_000_000), default=100_000)
    p.add_argument("--spread", type=int_range("--spread", 0, 1_000_000), default=DEMO_SPREAD,
                   help=f"neurons explained over the layers after 0 (default {DEMO_SPREAD})")
    p.add_argument("--background", action="store_true", help="after the first page, fill in the rest in a process "
                   "of its own (`python -m core fill`, log in NAME.fill.log) and return at once; the dashboard "
                   "shows its progress")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Each step is the same code as its own command and skips what is already done, so a rerun resumes."""
    from core.fill import FIRST_PAGE_NEURONS, first_page_explained, log_path, needs_fill, read_fill, start_fill

    quiet = ["--quiet"] if args.quiet else []
    cache = str(args.cache)

    def step(title: str, argv: list[str]) -> int:
        print(f"== {title}", file=sys.stderr)
        parsed = args.parse(argv)  # the whole command line's parser (set by core.cli.main)
        return int(parsed.run(parsed))

    if code := step("1/3 record every neuron", ["build", "--cache", cache, "--model", args.model, "--corpus",
                                                args.corpus, "--tokens", str(args.tokens), *quiet]):
        return code
    # checked read-only first, so running `make app` again beside an open dashboard does not need its results file
    if not first_page_explained(args.cache) and (code := step(
            f"2/3 explain and score the first page ({FIRST_PAGE_NEURONS})",
            ["explain", cache, "--neurons", FIRST_PAGE_NEURONS, *quiet])):
        return code
    if not needs_fill(args.cache):
        print(f"demo cache ready: {cache} (open it with `streamlit run app.py`)")
        return 0
    if args.background:
        running = read_fill(args.cache)
        if running is not None and running.running:
            print(f"== 3/3 the rest of the demo is already filling in (process {running.pid}); the dashboard shows "
                  "its progress", file=sys.stderr)
            return 0
        pid = start_fill(args.cache, spread=args.spread)
        print(f"== 3/3 the rest of the demo fills in in the background (process {pid}, log {log_path(args.cache)}); "
              "the dashboard shows its progress", file=sys.stderr)
        return 0
    print("== 3/3 fill in the rest: explanations over the other layers, related tables, the rest of layer 0",
          file=sys.stderr)
    code = run_fill_command(args.cache, args.spread, args.quiet)
    if code == 0:
        print(f"demo cache ready: {cache} (open it with `streamlit run app.py`)")
    return code


def add_fill(sub: argparse._SubParsersAction) -> None:
    from core.fill import DEMO_SPREAD

    p = sub.add_parser("fill", help="compute the rest of a demo cache after its first page (what `make app` runs in "
                       "the background), publishing as it goes; progress in NAME.fill.json")
    p.add_argument("cache", type=Path)
    p.add_argument("--spread", type=int_range("--spread", 0, 1_000_000), default=DEMO_SPREAD,
                   help=f"neurons explained over the layers after 0 (default {DEMO_SPREAD})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=lambda args: run_fill_command(args.cache, args.spread, args.quiet, nice=True))


def run_fill_command(cache: Path, spread: int, quiet: bool, *, nice: bool = False) -> int:
    """Run the fill with a progress bar; `nice`: below the dashboard's priority (the background process)."""
    import os

    from tqdm import tqdm

    from core.fill import FILL_NICENESS, FillProgress, run_fill

    if not cache.exists():
        raise CliError(f"no cache at {cache}; `python -m core demo --cache {cache}` builds it")
    if nice:
        os.nice(FILL_NICENESS)
    bars: list[tqdm] = []  # opened at the first progress, so a fill that cannot start prints only its error

    def show(progress: FillProgress) -> None:
        if not bars:
            bars.append(tqdm(total=100, disable=quiet, desc="fill", bar_format="{l_bar}{bar}| {n:.0f}%"))
        bars[0].update(round(progress.fraction * 100) - bars[0].n)

    try:
        done = run_fill(cache, spread=spread, on_progress=show)
    finally:
        for bar in bars:
            bar.close()
    print(f"demo filled in: {cache} ({done.publications} publications)")
    return 0

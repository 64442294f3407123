"""Commands of core/interop: import-openai, export, and `score --imported` (the score command's other half)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.cli.args import CliError, llm_settings, parse_layers, parse_neurons

EXPORT_FORMATS = ("openai", "neuronpedia", "delphi")


def _tqdm_progress(quiet: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    """A progress(description, total) factory drawing tqdm bars on stderr (None when quiet)."""
    if quiet:
        return None
    from tqdm import tqdm

    bars: list[Any] = []

    def start(description: str, total: int) -> Callable[[int], None]:
        for bar in bars:
            bar.close()
        bar = tqdm(total=total, desc=description, unit="neuron" if description != "write" else "block")
        bars.append(bar)

        def tick(done: int) -> None:
            bar.update(done)
            if bar.n >= total:
                bar.close()

        return tick

    return start


def _add_selection(p: argparse.ArgumentParser, verb: str, default: str) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--layers", help=f"layers to {verb}, e.g. 0-3 (default: {default})")
    which.add_argument("--neurons", help=f"neurons to {verb}, e.g. 0:0-99,5:17")


def _selection(args: argparse.Namespace) -> tuple[list[int] | None, list[Any] | None]:
    layers = parse_layers(args.layers) if getattr(args, "layers", None) else None
    neurons = parse_neurons(args.neurons) if getattr(args, "neurons", None) else None
    return layers, neurons


# --- import-openai ------------------------------------------------------------------------------------------------


def add_import_openai(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-openai", help="import OpenAI's published neuron files (GPT-2 XL) into a cache")
    p.add_argument("folder", type=Path, help="folder of LAYER/NEURON.json files (OpenAI's collated-activations), "
                   "or one holding collated-activations/ and explanations/")
    p.add_argument("--cache", type=Path, default=Path("caches/gpt2-xl-openai.duckdb"),
                   help="cache file to write (default caches/gpt2-xl-openai.duckdb)")
    p.add_argument("--explanations", type=Path, help="folder of LAYER/NEURON.jsonl files (default: explanations/ "
                   "beside the records, or .jsonl files among them)")
    _add_selection(p, "import", "every layer found")
    p.add_argument("--model-name", default="gpt2-xl", help="the model the files describe (default gpt2-xl)")
    p.add_argument("--force", action="store_true", help="replace an existing cache (the old file stays readable "
                   "until the new one is finished)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_import_openai)


def run_import_openai(args: argparse.Namespace) -> int:
    from core.interop.importer import import_openai, summary_lines

    layers, neurons = _selection(args)
    summary = import_openai(
        args.folder, args.cache, explanations=args.explanations, layers=layers, neurons=neurons,
        model_name=args.model_name, force=args.force, progress=_tqdm_progress(args.quiet),
    )
    print("\n".join(summary_lines(summary)))
    return 0


# --- export -------------------------------------------------------------------------------------------------------


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a cache in another tool's format: openai (OpenAI's neuron files), "
                       "neuronpedia (its export layout) or delphi (its latent cache)")
    p.add_argument("cache", type=Path)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("folder", type=Path, help="folder to write into (created; existing files of the same names are "
                   "replaced)")
    _add_selection(p, "export", "every neuron in the cache")
    p.add_argument("--model", help="delphi: the subject model to re-run (default: the cache's own)")
    p.add_argument("--model-id", help="neuronpedia: the model id to write (default: from the cache)")
    p.add_argument("--source-set", default="atlas-mlp", help="neuronpedia: the source set name; each layer becomes "
                   "source LAYER-SET (default atlas-mlp)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    layers, neurons = _selection(args)
    progress = _tqdm_progress(args.quiet)
    if args.format == "openai":
        from core.interop.export_openai import export_openai

        summary = export_openai(args.cache, args.folder, layers=layers, neurons=neurons, progress=progress)
    elif args.format == "neuronpedia":
        from core.interop.export_neuronpedia import export_neuronpedia

        summary = export_neuronpedia(args.cache, args.folder, layers=layers, neurons=neurons, model_id=args.model_id,
                                     source_set=args.source_set, progress=progress)
    else:
        from core.interop.export_delphi import export_delphi

        summary = export_delphi(args.cache, args.folder, layers=layers, neurons=neurons, model=args.model,
                                progress=progress)
    print(summary)
    return 0


# --- score --imported ---------------------------------------------------------------------------------------------


def add_imported_option(p: argparse.ArgumentParser) -> None:
    """`score --imported`: re-score the neurons' imported explanations instead of a text of one's own."""
    p.add_argument("--imported", action="store_true", help="re-score the neurons' imported explanations (e.g. "
                   "GPT-4's from import-openai) with --simulator, beside their published scores")


def run_score_imported(args: argparse.Namespace) -> int:
    from core.backends import wire
    from core.interop.cache_io import check_neuron, open_for_scores
    from core.interop.rescore import rescore_lines, rescore_neuron

    if args.explanation:
        raise CliError("--imported re-scores the stored imported explanations; leave --explanation out")
    neurons = parse_neurons(args.neurons)
    with open_for_scores(args.cache) as writer:
        for neuron in neurons:
            check_neuron(writer, neuron)
        made = wire(args.simulator, settings=llm_settings(args), responses=writer.responses)
        made.check()
        results = [rescore_neuron(writer, neuron, made.simulator) for neuron in neurons]
        print("\n".join(rescore_lines(results, made.simulator.spec)))
        for spec, usage in made.usage():
            print(f"cost  {spec}: {usage.describe()}")
    return 0

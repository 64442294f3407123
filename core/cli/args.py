"""Reading the command line's arguments: numbers in a range, neurons, layers, the LLM options.

Every bad argument is a CliError (or argparse's own message) of one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from core.backends import LLMSettings
from core.paths import CACHE_DIR_NAME
from core.types import NeuronId


class CliError(Exception):
    """A bad argument found after parsing; printed as one line."""


def int_range(name: str, low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number between low and high (underscores allowed), else one clear line."""

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

    return Path(CACHE_DIR_NAME) / f"{clean(model)}-{clean(corpus)}.duckdb"


def parse_neuron(text: str, option: str = "--neuron") -> NeuronId:
    """One LAYER:NEURON, or a CliError naming the option."""
    try:
        return NeuronId.parse(text)
    except ValueError as error:
        raise CliError(f"{option}: {error}") from None


def parse_neurons(text: str) -> list[NeuronId]:
    """"0:0-99,5:17" -> NeuronIds in the order written, without repeats."""
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
            raise CliError(f"--neurons: {item!r} is an empty range; write the smaller neuron first, e.g. "
                           f"{layer_text.strip()}:{last}-{first}")
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
            raise CliError(f"--layers: {item!r} is an empty range; write the smaller layer first, e.g. {last}-{first}")
        layers.update(range(first, last + 1))
    if not layers:
        raise CliError("--layers names no layer; e.g. --layers 0-29")
    return sorted(layers)


def add_llm_options(p: argparse.ArgumentParser) -> None:
    """--base-url, --max-cost, --concurrency and --timeout (read back by `llm_settings`)."""
    p.add_argument("--base-url", help="an OpenAI-compatible server for openai:MODEL (default OPENAI_BASE_URL or "
                   "api.openai.com)")
    p.add_argument("--max-cost", type=float, metavar="USD", help="stop before spending more than this on a priced "
                   "model (answers already received stay cached)")
    p.add_argument("--concurrency", type=int_range("--concurrency", 1, 64), default=4,
                   help="LLM calls in flight at once (default 4)")
    p.add_argument("--timeout", type=int_range("--timeout", 1, 3600), default=60, metavar="SECONDS",
                   help="give up on an LLM answer not complete after this long, then retry (default 60)")


def llm_settings(args: argparse.Namespace) -> LLMSettings:
    """The LLM options as core.backends takes them (the key comes from OPENAI_API_KEY)."""
    return LLMSettings(base_url=args.base_url, max_cost_usd=args.max_cost, concurrency=args.concurrency,
                       timeout_s=args.timeout)

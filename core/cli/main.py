"""The command line's entry: the parser over every command, and one line (never a traceback) for user errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from core.cli.args import CliError
from core.cli.cache import add_build, add_demo, add_fill, add_info, add_migrate
from core.cli.interop import add_export, add_import_openai
from core.cli.pipeline import add_explain, add_related, add_score, add_show
from core.paths import no_room

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_build, add_info, add_related, add_explain, add_score, add_show, add_demo, add_fill, add_migrate,
    add_import_openai, add_export,
]


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m core`; every command's namespace gets `run` (its function) and `parse` (this
    parser's parse_args, so `demo` can run the other commands as they are)."""
    parser = argparse.ArgumentParser(prog="python -m core", description="Neuron Atlas: record, explain, score and "
                                     "relate the MLP neurons of a language model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    parser.set_defaults(parse=parser.parse_args)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Every exception type whose message is meant for the user."""
    from core.backends import BackendSpecError
    from core.corpus import CorpusError
    from core.fill import FillError
    from core.interop import InteropError
    from core.llm import LLMError
    from core.models import ModelError
    from core.record import RecordError
    from core.related import RelatedError
    from core.score import ScoreError
    from core.simulate import SimulationError, SimulatorSpecError
    from core.store import StoreError

    return (
        CliError, ModelError, CorpusError, RecordError, RelatedError, StoreError, LLMError, BackendSpecError,
        ScoreError, SimulationError, SimulatorSpecError, InteropError, FillError, ValueError, FileNotFoundError,
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
    except Exception as error:
        where = no_room(error)
        if where is None:
            raise
        print(f"error: no room left on the disk to write {where}; free some space on that disk (or put the cache on "
              "another one) and run the same command again: what was finished is kept, and a build goes on from "
              "its last checkpoint", file=sys.stderr)
        return EXIT_USAGE

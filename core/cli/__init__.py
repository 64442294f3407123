"""The command line: `python -m core COMMAND`.

- main.py: the parser over every command, and one line for every user error (never a traceback).
- args.py: reading arguments (ranges, neurons, layers, the LLM options).
- cache.py: build, info, migrate, demo.
- pipeline.py: explain, score, show, related.
- interop.py: import-openai, export, score --imported (core/interop).
"""

from core.cli.main import build_parser, main, user_errors

__all__ = ["build_parser", "main", "user_errors"]

"""The one `main` wrapper of every `python -m <package>` command line (STYLE.md §6).

Parses argv, configures logging (stderr; `-v` for debug), runs the verb's function and turns
the expected errors into one `error: ...` line on stderr and exit status 1. With `-v` the
error is re-raised, so its traceback shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            errors: tuple[type[BaseException], ...]) -> int:  # fmt: skip
    """Run the verb chosen on `parser` (its `func` default) and return the exit status."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    try:
        return args.func(args)
    except errors as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1

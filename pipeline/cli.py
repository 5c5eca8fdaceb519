"""The one `main` wrapper of every `python -m <package>` command line (docs/architecture.md §8.4).

Parses argv, configures logging (stderr; `-v` for debug), runs the verb's function and turns
the expected errors into one `error: ...` line on stderr and exit status 1. File-system errors
(a full disk, a read-only or missing folder) are expected errors too, named by file and with
what to do. Ctrl-C stops with one line and exit status 130; atomic writes leave no partial
artifact behind. With `-v` the error is re-raised, so its traceback shows.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Sequence

EXIT_INTERRUPTED = 130

_ADVICE = {
    errno.ENOSPC: "no space left on the device; free space or write the output elsewhere",
    errno.EDQUOT: "disk quota exceeded; free space or write the output elsewhere",
    errno.EROFS: "read-only file system; write the output to a writable folder",
    errno.EACCES: "permission denied; write the output to a folder you can write to",
    errno.EPERM: "operation not permitted; write the output to a folder you can write to",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a path component is not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.EIO: "input/output error (failing disk or network file system)",
}


def describe_os_error(exc: OSError) -> str:
    """One line: the file, what went wrong, what to do."""
    if exc.filename is None:  # raised by our code with its own message
        return _one_line(str(exc))
    what = _ADVICE.get(exc.errno) if exc.errno is not None else None
    other = f" (and {exc.filename2})" if getattr(exc, "filename2", None) else ""
    return _one_line(f"{exc.filename}{other}: {what or exc.strerror or exc}")


def run_cli(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, errors: tuple[type[BaseException], ...]
) -> int:
    """Run the verb chosen on `parser` (its `func` default) and return the exit status."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print("interrupted (Ctrl-C); finished artifacts are kept, none is half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if args.verbose:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except errors as exc:
        if args.verbose:
            raise
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 1


def _one_line(text: str, limit: int = 2000) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

"""Atomic file writes: every artifact appears whole or not at all.

A writer puts its bytes into a temporary file in the destination folder, flushes and fsyncs
it, then renames it over the destination with `os.replace` (atomic on POSIX within one file
system). A writer killed half-way leaves at most a hidden `.<name>.tmp-*` file, never a
truncated artifact under the real name, which is what Make's `.DELETE_ON_ERROR` cannot give
for files written by a process that is killed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on clean exit it replaces `path` atomically.

    Args:
        path: the final destination.
        mode: "wb" or "w".

    Yields:
        The open temporary file. If the body raises, the temporary file is removed and
        `path` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', got {mode!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write `text` atomically unless `path` already holds exactly it.

    Keeping the modification time of an unchanged file is what lets Make skip the stages
    that depend on it.

    Returns:
        True if the file was (re)written.
    """
    dest = Path(path)
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(dest, text)
    return True

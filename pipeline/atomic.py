"""Atomic file writes: every artifact appears whole or not at all.

A writer puts its bytes into a temporary file in the destination folder, flushes and fsyncs
it, then renames it over the destination with `os.replace` (atomic on POSIX within one file
system). A writer killed half-way leaves at most a hidden `.<name>.tmp-<pid>@<host>-<random>`
file, never a truncated artifact under the real name, which is what Make's `.DELETE_ON_ERROR`
cannot give for files written by a process that is killed.

Orphans: the first atomic write of a process into a folder removes the temporary files of ours
there whose writer is gone: same host and the pid no longer runs, or (another host, or the
older `.<name>.tmp-<random>` naming) untouched for `ORPHAN_AGE_S`. A live writer's file is
never removed, so any number of processes may write into one folder.

Errors: an `OSError` from writing (a full disk, a read-only folder) is re-raised with the
destination as its `filename`, so the command line can name the file in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

ORPHAN_AGE_S = 3600.0  # a temp file of another host (or of the old naming) untouched this long is orphaned
_HOST = socket.gethostname().replace("/", "_")
_OURS = re.compile(r"^\..+\.tmp-(?:(\d+)@(.*)-)?[A-Za-z0-9_]{8}$")
_cleaned: set[str] = set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_orphaned_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of our atomic writes in `folder` whose writer is gone.

    Returns:
        The files removed.
    """
    _cleaned.add(str(Path(folder).resolve()))  # atomic_open need not scan it again in this process
    removed = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
        for entry in it:
            m = _OURS.match(entry.name)
            if not m or not entry.is_file(follow_symlinks=False):
                continue
            pid, host = m.group(1), m.group(2)
            orphan = False
            if pid is not None and host == _HOST:
                orphan = not _pid_alive(int(pid))
            else:
                with contextlib.suppress(FileNotFoundError):
                    orphan = now - entry.stat().st_mtime > ORPHAN_AGE_S
            if orphan:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    if removed:
        log.info("removed %d orphaned temporary file(s) of killed writers in %s", len(removed), folder)
    return removed


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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        folder = str(dest.parent.resolve())
        if folder not in _cleaned:
            remove_orphaned_temps(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-{os.getpid()}@{_HOST}-", dir=dest.parent)
    except OSError as exc:
        raise _naming(exc, dest) from exc
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts get the usual permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise _naming(exc, dest) from exc
        raise


def _naming(exc: OSError, dest: Path) -> OSError:
    """The same error, naming the artifact being written."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(dest)) if exc.errno else exc


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

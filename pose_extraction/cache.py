"""Stage 1's output folder as a cache that cannot give a wrong answer, shared by any number of processes.

A record `OUT/<video_id>.pkl` carries the key it was made with (`record["cache"]`):

    video      the source's identity: file name + size + modification time (`video_key: stat`,
               the default) or file name + size + SHA-256 of the bytes (`video_key: sha256`, for
               copies whose modification times were not kept)
    settings   everything that changes the record's content, at its effective value: estimator
               name and version, its weights (file name + SHA-256), its settings file, flip test,
               reader, extractor version, the detector (weights, thresholds; input size and
               keyframe interval only when changed from 800 and 1, so older keys stay valid) and
               the tracking settings (with `max_persons` capped by the estimator, as it is applied).
               Not in it: device, batch and chunk sizes, failure budget (same content).
    digest     SHA-256 of the two above

A record is reused only when its key equals this run's; anything else is extracted again (or,
with `overwrite=False`, kept and reported with what differs). `failures.jsonl` is rebuilt from
one marker per failed video (`OUT/.failed/<video_id>.json`, with the key it failed under), so a
failed video is not retried on resume unless asked to (`--retry-failed`) or its key changed.

Concurrency: a process works on a video only while it holds that video's claim, an exclusive
`fcntl.lockf` lock on `OUT/.claims/<video_id>.lock`. The operating system releases a killed
process's locks at once (on NFSv4, when the client's lease expires), so no claim outlives its
process, and any number of processes on one machine or on many, over a shared file system with
POSIX locks, can be pointed at one folder: each video is extracted by one of them. A claim file
is removed by the holder when it is done with the video.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write_text

VIDEO_KEYS = ("stat", "sha256")
CLAIMS_DIR = ".claims"
FAILED_DIR = ".failed"
FAILURES_FILE = "failures.jsonl"
_HASH_BLOCK = 1 << 20
_hash_memo: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and mtime)."""
    st = os.stat(path)
    memo = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _hash_memo:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
                h.update(block)
        _hash_memo[memo] = h.hexdigest()
    return _hash_memo[memo]


def video_identity(path: Path, mode: str = "stat") -> dict:
    """The identity of a source video under `mode` ("stat" or "sha256")."""
    if mode not in VIDEO_KEYS:
        raise ValueError(f"video_key {mode!r}; valid: {', '.join(VIDEO_KEYS)}")
    st = path.stat()
    ident: dict[str, Any] = {"name": path.name, "size": st.st_size}
    if mode == "stat":
        ident["mtime_ns"] = st.st_mtime_ns
    else:
        ident["sha256"] = sha256_of(path)
    return ident


def file_identity(path: str | os.PathLike | None) -> dict:
    """A weights file as name + SHA-256 (moving the weights cache re-extracts nothing)."""
    if not path:
        return {"name": ""}
    p = Path(path)
    return {"name": p.name, "sha256": sha256_of(p)} if p.is_file() else {"name": str(path)}


def make_key(video: Mapping, settings: Mapping) -> dict:
    """The cache key stored in a record: video identity, settings and their digest."""
    body = json.dumps({"video": video, "settings": settings}, sort_keys=True, default=str)
    return {
        "video": dict(video),
        "settings": json.loads(json.dumps(settings, default=str)),
        "digest": hashlib.sha256(body.encode()).hexdigest(),
    }


def differences(old: Any, new: Mapping, *, limit: int = 4) -> str:
    """What differs between a stored key and this run's, in a few words."""
    if not isinstance(old, Mapping) or "digest" not in old:
        return "the record has no cache key (made by an older version)"
    diffs: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}" if where else str(k))
        elif a != b:
            diffs.append(f"{where} {_short(a)} -> {_short(b)}")

    walk(
        {"video": old.get("video"), "settings": old.get("settings")},
        {"video": new["video"], "settings": new["settings"]},
        "",
    )
    more = f" (and {len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more if diffs else "digest differs"


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


@contextlib.contextmanager
def claim(out: Path, video_id: str, *, wait: bool) -> Iterator[bool]:
    """Hold the exclusive claim on one video; yields False if another process holds it (wait=False).

    The lock file is removed by the holder on exit (while still holding the lock); a process that
    opened the old file before it was removed sees a different inode and tries again.
    """
    folder = out / CLAIMS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{video_id}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                yield False
                return
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed it: claim the new one
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def sweep_claims(out: Path) -> None:
    """Remove the claim files no process holds (left by killed ones), then `OUT/.claims` if empty."""
    folder = out / CLAIMS_DIR
    if not folder.is_dir():
        return
    for lock in folder.glob("*.lock"):
        with claim(out, lock.stem, wait=False):  # taken only if nobody holds it; removed on exit
            pass
    with contextlib.suppress(OSError):
        folder.rmdir()


def failure_path(out: Path, video_id: str) -> Path:
    return out / FAILED_DIR / f"{video_id}.json"


def read_failure(out: Path, video_id: str) -> dict | None:
    """The failure marker of a video, or None (an unreadable marker counts as none)."""
    try:
        return json.loads(failure_path(out, video_id).read_text())
    except (OSError, ValueError):
        return None


def write_failure(out: Path, video_id: str, entry: dict) -> None:
    atomic_write_text(failure_path(out, video_id), json.dumps(entry) + "\n")


def clear_failure(out: Path, video_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        failure_path(out, video_id).unlink()


def write_failures_file(out: Path) -> Path:
    """Rebuild `OUT/failures.jsonl` from the markers: every video of the folder that failed, sorted."""
    entries = []
    folder = out / FAILED_DIR
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                e = json.loads(p.read_text())
                entries.append({"video": e["video"], "error": e["error"]})
    path = out / FAILURES_FILE
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in entries))
    return path

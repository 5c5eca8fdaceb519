"""Published inputs by name, and the one resumable, checksummed downloader of the project.

`python -m pipeline fetch NAME` (or `make fetch DATASET=NAME`) fetches a registered input
(`INPUTS`) from its publisher; `--from FILE` imports a local copy instead, with no network.
`pose_extraction/weights.py` downloads the model and estimator weights with `download` too.
Nothing in the project downloads implicitly (docs/architecture.md §8.6).

Where files go (the input's `kind`):
    dataset   a published PYSKL pickle: the folder given as `--datasets-dir` (`make fetch` passes
              `$(ART)/datasets/`), e.g. `artifacts/datasets/ntu60_hrnet.pkl`
    data      auxiliary lists: the data cache, `$RSA_DATA_DIR`, else `~/.cache/robust-skeleton-action/data/`

How a file is fetched (`download`):
    - bytes go to `<name>.part` beside the destination; a cut download keeps it and the next
      fetch asks for the rest with `Range: bytes=N-`. A 206 reply continues it; a server that
      ignores Range (200) or cannot serve it (416) starts the file again from byte 0.
    - the progress bar's total comes from Content-Length (Content-Range on a 206); a reply that
      ends short is an error and keeps the part.
    - the whole file's SHA-256 is checked against every digest known for it (a publisher's, from
      the registry or the file name; a 64-hex `X-Linked-Etag`, which Hugging Face sends; the one
      recorded at the first fetch) before it is renamed onto its final name, so nothing
      half-written or wrong ever carries that name. A mismatch deletes the part.

Checksums: `manifest.json` in the destination folder records each file's source and full
SHA-256 at its first fetch or import. A later fetch of a file already there hashes it, checks it
against the record and the publisher's digest and does no network access; a file whose bytes
changed is one error line naming it, both digests and what to do, and is never re-downloaded
over. A re-download (the file deleted) must match the recorded digest too.

`RSA_FETCH_BASE_URL` (e.g. `http://127.0.0.1:8000`) replaces the scheme and host of every
registry URL, for a local mirror or a test server; the path is kept.

Errors are `FetchError`, one line: the URL or file and the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from pipeline.atomic import atomic_write_text

log = logging.getLogger(__name__)

BASE_URL_ENV = "RSA_FETCH_BASE_URL"
MANIFEST = "manifest.json"
CHUNK = 1 << 20
TIMEOUT_S = 60.0
VERIFY_BAR_BYTES = 64 << 20  # hashing a file at least this big shows a progress bar


class FetchError(RuntimeError):
    """A download or import failed, or a file's bytes do not match a known digest."""


@dataclass(frozen=True)
class Digest:
    """A SHA-256 a file must have: the full hex digest or a prefix of it, and where it comes from."""

    value: str
    origin: str  # completes "does not match <value> <origin>", e.g. "recorded in .../manifest.json"


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name on disk, its address and the publisher's SHA-256 ("" if none)."""

    filename: str
    url: str
    sha256: str = ""


@dataclass(frozen=True)
class Input:
    """A named input: where its files go (`kind`: "dataset" or "data") and what it is."""

    kind: str
    files: tuple[RemoteFile, ...]
    about: str


_PYSKL = "https://download.openmmlab.com/mmaction/pyskl/data/nturgbd/"
_NTU = "https://raw.githubusercontent.com/shahroudy/NTURGB-D/master/Matlab/"
_MISSING60 = "NTU_RGBD_samples_with_missing_skeletons.txt"
_MISSING120 = "NTU_RGBD120_samples_with_missing_skeletons.txt"

# PYSKL publishes no digest for its pickles: theirs is recorded at the first fetch. The two NTU
# lists' digests are those of the files at NTURGB-D commit ac2ebc8 (unchanged since 2019).
INPUTS: dict[str, Input] = {
    "ntu60_hrnet": Input(
        "dataset",
        (RemoteFile("ntu60_hrnet.pkl", _PYSKL + "ntu60_hrnet.pkl"),),
        "PYSKL's HRNet 2D poses of NTU RGB+D 60 (the file MotionBERT's action-recognition instructions train on)",
    ),
    "ntu120_hrnet": Input(
        "dataset",
        (RemoteFile("ntu120_hrnet.pkl", _PYSKL + "ntu120_hrnet.pkl"),),
        "PYSKL's HRNet 2D poses of NTU RGB+D 120",
    ),
    "ntu_missing_skeletons": Input(
        "data",
        (
            RemoteFile(
                _MISSING60, _NTU + _MISSING60, "6fd4a1254ffe69f8e514649b675661a9111a18c45195fb5b7fb884e1f8b75676"
            ),
            RemoteFile(
                _MISSING120, _NTU + _MISSING120, "ab14fe64e89be63d2b08141713fcc31f6ebc7b01955009c3585d8d3367e0facc"
            ),
        ),
        "the official lists of NTU RGB+D 60 / 120 samples with missing or incomplete skeletons",
    ),
}

MISSING_SKELETONS = {"ntu60": _MISSING60, "ntu120": _MISSING120}


def data_dir() -> Path:
    """The data cache: `$RSA_DATA_DIR`, else `~/.cache/robust-skeleton-action/data`."""
    return Path(os.environ.get("RSA_DATA_DIR") or Path.home() / ".cache/robust-skeleton-action/data")


def source_url(url: str) -> str:
    """`url` with its scheme and host replaced by `$RSA_FETCH_BASE_URL` when that is set."""
    base = os.environ.get(BASE_URL_ENV)
    if not base:
        return url
    b, u = urlsplit(base), urlsplit(url)
    return urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + u.path, u.query, ""))


def missing_skeletons_file(family: str) -> Path | None:
    """The official missing-skeleton list of `family` ("ntu60", "ntu120") if fetched, else None.

    Fetched by `make fetch DATASET=ntu_missing_skeletons` into the data cache; checked against
    the published digest on every call.

    Raises:
        KeyError: for another family, listing the valid ones.
        FetchError: the cached list's bytes differ from the published file's.
    """
    if family not in MISSING_SKELETONS:
        raise KeyError(f"no missing-skeleton list for {family!r}; valid: {sorted(MISSING_SKELETONS)}")
    path = data_dir() / MISSING_SKELETONS[family]
    if not path.is_file():
        return None
    (published,) = [f for f in INPUTS["ntu_missing_skeletons"].files if f.filename == path.name]
    verify(path, [Digest(published.sha256, "of the published list")])
    return path


# ----------------------------------------------------------------------------- checksums


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), with a progress bar for big files."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with (
        open(path, "rb") as fh,
        _bar(f"verify {Path(path).name}", size, disable=size < VERIFY_BAR_BYTES) as b,
    ):
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
            b.update(len(block))
    return h.hexdigest()


def check(actual: str, digests: Sequence[Digest], *, subject: str, advice: str) -> None:
    """Raise FetchError unless `actual` starts with every digest in `digests`."""
    for d in digests:
        if not actual.startswith(d.value.lower()):
            raise FetchError(f"{subject}: sha256 {actual} does not match {d.value} {d.origin}; {advice}")


_CHANGED = "the file changed on disk: restore it, or delete it and fetch it again"


def verify(path: str | os.PathLike, digests: Sequence[Digest], *, advice: str = _CHANGED) -> str:
    """Hash a file in place and check it (no network); returns its SHA-256."""
    actual = sha256_of(path)
    check(actual, digests, subject=str(path), advice=advice)
    return actual


def read_manifest(folder: str | os.PathLike) -> dict:
    """`folder/manifest.json` ({file name: {input, source, sha256}}), {} when there is none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise FetchError(f"{path}: not valid JSON ({exc}); restore it, or delete it to record digests afresh") from None


def _record(folder: Path, filename: str, entry: dict) -> None:
    """Add one entry to the folder's manifest (under a lock: fetches into one folder may run at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(folder)
        manifest[filename] = entry
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- transfer


def _bar(desc: str, total: int | None, *, initial: int = 0, disable: bool = False):
    from pipeline.progress import progress  # tqdm only when something is shown

    return progress(
        None,
        desc=desc,
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=True,
        disable=disable,
    )


@contextlib.contextmanager
def _part_file(dest: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """`<dest>.part`, opened for update and locked; removed on exit if it holds nothing."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(part, os.O_RDWR | os.O_CREAT, 0o666), "r+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FetchError(f"{part}: another fetch is writing it; wait for that one to finish") from None
        try:
            yield part, fh
        finally:
            fh.flush()
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_size == 0:  # still ours: the lock is held until the file closes
                    part.unlink()


def _finish(part: Path, fh: IO[bytes], dest: Path, actual: str, digests: Sequence[Digest], subject: str) -> None:
    """Check the complete part, then rename it onto `dest` (a mismatch deletes it instead)."""
    fh.flush()
    os.fsync(fh.fileno())
    try:
        check(actual, digests, subject=subject, advice=f"those bytes were discarded, nothing was saved as {dest}")
    except FetchError:
        part.unlink()
        raise
    os.replace(part, dest)


def _linked_sha256(headers: http.client.HTTPMessage) -> str | None:
    """Hugging Face's `X-Linked-Etag` when it is a SHA-256 (LFS files), else None."""
    tag = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    return tag if re.fullmatch(r"[0-9a-f]{64}", tag) else None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as usual and keeps a SHA-256 that a redirecting reply names."""

    def __init__(self) -> None:
        self.linked: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.linked = self.linked or _linked_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _cut(url: str, reason: str, part: Path, have: int) -> FetchError:
    kept = f"; {have} bytes kept in {part}, run the same fetch again to resume it" if have else ""
    return FetchError(f"cannot download {url}: {reason}{kept}")


def _span(resp: http.client.HTTPResponse) -> tuple[int, int | None]:
    """(first byte of this reply, total file size or None) from its status and headers."""
    if resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (resp.headers.get("Content-Range") or "").strip())
        if m is None:
            return -1, None
        return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _open(url: str, part: Path, fh: IO[bytes]) -> tuple[http.client.HTTPResponse, int | None, str | None]:
    """The reply that continues the part (Range) or, truncating it, restarts it; (reply, total, linked sha256)."""
    have = fh.seek(0, os.SEEK_END)
    for _ in range(2):
        redirects = _Redirects()
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            resp = urllib.request.build_opener(redirects).open(req, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 416 or not have:
                raise _cut(url, _reason(exc), part, have) from None
            log.info("%s: the server cannot continue at byte %d; downloading it again", url, have)
        except (OSError, http.client.HTTPException) as exc:
            raise _cut(url, _reason(exc), part, have) from None
        else:
            start, total = _span(resp)
            if start == have:
                return resp, total, redirects.linked or _linked_sha256(resp.headers)
            if start == 0:  # a 200: the server ignores Range, this reply is the whole file
                log.info("%s: the server ignores byte ranges; downloading it again from the start", url)
                fh.seek(0)
                fh.truncate()
                return resp, total, redirects.linked or _linked_sha256(resp.headers)
            resp.close()  # a 206 at another offset: ask again for the whole file
        fh.seek(0)
        fh.truncate()
        have = 0
    raise _cut(url, "the server's byte ranges do not continue the file", part, 0)


def download(url: str, dest: str | os.PathLike, *, digests: Sequence[Digest] = (), desc: str | None = None) -> str:
    """Download `url` to `dest` through `<dest>.part`, resuming a cut download.

    Args:
        url: the registry URL (`$RSA_FETCH_BASE_URL` applies).
        dest: the final file; it appears only complete and matching `digests`.
        digests: SHA-256s (or prefixes) the file must have; a server's `X-Linked-Etag` is added.
        desc: the progress bar's label (default: the file name).

    Returns:
        The file's SHA-256.

    Raises:
        FetchError: one line naming the URL and the reason (network, HTTP status, short reply,
            digest mismatch).
    """
    dest, url = Path(dest), source_url(url)
    with _part_file(dest) as (part, fh):
        resp, total, linked = _open(url, part, fh)
        have = fh.seek(0, os.SEEK_END)
        log.info("downloading %s -> %s%s", url, dest, f" (resuming at byte {have})" if have else "")
        h = hashlib.sha256()
        fh.seek(0)
        for block in iter(lambda: fh.read(CHUNK), b""):  # the part kept from a cut download
            h.update(block)
        with resp, _bar(desc or dest.name, total, initial=have) as bar:
            while True:
                try:
                    block = resp.read1(CHUNK)  # what has arrived, so a cut connection keeps all it delivered
                except (OSError, http.client.HTTPException) as exc:
                    raise _cut(url, _reason(exc), part, fh.tell()) from None
                if not block:
                    break
                fh.write(block)
                h.update(block)
                bar.update(len(block))
        if total is not None and fh.tell() != total:
            raise _cut(url, f"the connection closed after {fh.tell()} of {total} bytes", part, fh.tell())
        extra = [Digest(linked, "sent by the server (X-Linked-Etag)")] if linked else []
        actual = h.hexdigest()
        _finish(part, fh, dest, actual, [*digests, *extra], subject=f"downloaded {url}")
    return actual


def copy_in(src: str | os.PathLike, dest: str | os.PathLike, *, digests: Sequence[Digest] = ()) -> str:
    """Copy a local file to `dest` the same way (through `.part`, checked, renamed); returns its SHA-256."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise FetchError(f"{src}: not a file")
    with _part_file(dest) as (part, fh), open(src, "rb") as inp:
        fh.seek(0)
        fh.truncate()
        h = hashlib.sha256()
        for block in iter(lambda: inp.read(CHUNK), b""):
            fh.write(block)
            h.update(block)
        actual = h.hexdigest()
        _finish(part, fh, dest, actual, digests, subject=str(src))
    return actual


# ----------------------------------------------------------------------------- named inputs


def fetch_input(
    name: str, *, datasets_dir: str | os.PathLike, from_file: str | os.PathLike | None = None
) -> list[Path]:
    """Fetch (or, with `from_file`, import) the registered input `name`; returns its files.

    Raises:
        FetchError: an unknown name, a network error, or bytes that do not match a digest.
    """
    if name not in INPUTS:
        raise FetchError(
            f"unknown input {name!r}; known: {', '.join(sorted(INPUTS))} "
            "(weights: make weights MODEL=motionbert or ESTIMATOR=vitpose|hrnet|openpifpaf)"
        )
    entry = INPUTS[name]
    folder = Path(datasets_dir) if entry.kind == "dataset" else data_dir()
    if from_file is None:
        return [_fetch_file(name, f, folder, None) for f in entry.files]
    src = Path(from_file)
    if len(entry.files) == 1:
        return [_fetch_file(name, entry.files[0], folder, src)]
    match = [f for f in entry.files if f.filename == src.name]
    if not match:
        raise FetchError(
            f"{src}: {name} has files {', '.join(f.filename for f in entry.files)}; import one by its name"
        )
    return [_fetch_file(name, match[0], folder, src)]


def _fetch_file(name: str, rf: RemoteFile, folder: Path, src: Path | None) -> Path:
    dest = folder / rf.filename
    digests = [Digest(rf.sha256, "published for it (pipeline/fetch.py)")] if rf.sha256 else []
    recorded = read_manifest(folder).get(rf.filename, {}).get("sha256")
    if recorded:
        digests.append(Digest(recorded, f"recorded in {folder / MANIFEST} when it was first fetched"))
    if dest.is_file():
        actual = verify(dest, digests)
        if src is not None and src.resolve() != dest.resolve() and sha256_of(src) != actual:
            raise FetchError(f"{dest} already holds other bytes than {src}; delete it first to import {src}")
        if not recorded:
            _record(folder, rf.filename, {"input": name, "source": f"file:{dest.resolve()}", "sha256": actual})
        log.info("%s: already fetched, sha256 %s verified", dest, actual[:12])
        return dest
    if src is not None:
        actual = copy_in(src, dest, digests=digests)
        source = f"file:{src.resolve()}"
    else:
        actual = download(rf.url, dest, digests=digests)
        source = source_url(rf.url)
    _record(folder, rf.filename, {"input": name, "source": source, "sha256": actual})
    log.info("%s: sha256 %s recorded in %s", dest, actual[:12], folder / MANIFEST)
    return dest

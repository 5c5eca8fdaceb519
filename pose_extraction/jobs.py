"""A claimed video on its way to a record, for both extraction paths (`extract.run_extract` in process,
`engine.Engine` with decode workers): the cache check, the claim, the record write or the failure marker.

`begin_video` reads what the output folder already holds for the video's cache key (a valid record of that key:
skipped; one of another key: re-extracted, or kept and refused with `overwrite=False`; a failure marker of that
key: skipped unless `retry_failed`), then takes the video's claim (`cache.claim`: any number of processes may share
one folder) and checks again under it. The job it returns writes the record atomically or the failure marker, and
gives the claim back.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from pipeline.schema import read_record, write_record
from pose_extraction import cache

# The stage's one log name: users, tests and bench/soak.py read its "extracting" and "persons kept" lines.
log = logging.getLogger("pose_extraction.extract")


def stored_record(path: Path) -> dict | None:
    """The valid record at `path`, or None (a corrupt or partial one is redone)."""
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except Exception as exc:  # unreadable: extract again
        log.warning("%s exists but is invalid (%s); extracting again", path, str(exc).splitlines()[0])
        return None


def extract_one(
    extractor: Any, video: Path, out: Path, *, overwrite: bool, retry_failed: bool, wait: bool
) -> str | tuple[str, str]:
    """One video under its claim: "extracted", "skipped", "skipped_failed", "done_by_other", "failed",
    "busy" (claimed by another process, wait=False), or ("refused", what differs)."""
    outcome, job = begin_video(extractor, video, out, overwrite=overwrite, retry_failed=retry_failed, wait=wait)
    if job is None:
        return outcome
    try:
        try:
            rec = extractor.extract(video)
        except Exception as exc:  # one bad video must not stop the others: logged, counted, reported
            return job.fail(exc)
        return job.write(rec)
    finally:
        job.release()


class VideoJob:
    """A claimed video on its way to a record: `write(rec)` or `fail(exc)`, then `release()`."""

    def __init__(self, video: Path, out: Path, key: dict, claim: Any) -> None:
        self.video, self.out, self.key, self._claim = video, out, key, claim
        self.dest = out / f"{video.stem}.pkl"
        self.t0 = time.perf_counter()

    def write(self, rec: dict) -> str:
        """Write the record (atomic); a failure to write it becomes the video's failure."""
        try:
            rec["cache"] = self.key
            write_record(rec, self.dest)
        except Exception as exc:  # noqa: BLE001 -- as fail(): logged, counted, reported
            return self.fail(exc)
        log.info(
            "%s: %d frames, %d persons kept, %.1f s",
            self.video.name,
            rec["total_frames"],
            rec["keypoint"].shape[0],
            time.perf_counter() - self.t0,
        )
        return "extracted"

    def fail(self, exc: BaseException) -> str:
        """Log the error and write the failure marker; re-raise an unwritable output folder."""
        if isinstance(exc, OSError) and exc.filename == str(self.dest):
            raise exc  # the output folder itself is unwritable: every video would fail the same way
        log.error("%s: %s", self.video, exc)
        log.debug("%s", "".join(traceback.format_exception(exc)))
        cache.write_failure(
            self.out,
            self.video.stem,
            {
                "video": str(self.video),
                "error": getattr(exc, "description", f"{type(exc).__name__}: {exc}"),
                "key": self.key,
            },
        )
        return "failed"

    def release(self) -> None:
        """Give up the claim (idempotent)."""
        if self._claim is not None:
            self._claim.__exit__(None, None, None)
            self._claim = None


def begin_video(
    extractor: Any, video: Path, out: Path, *, overwrite: bool, retry_failed: bool, wait: bool
) -> tuple[str | tuple[str, str] | None, VideoJob | None]:
    """Check the cache and take the video's claim: (outcome, None) when there is nothing to do
    (outcomes as `extract_one`'s), else (None, the claimed job)."""
    dest = out / f"{video.stem}.pkl"
    key = extractor.key_for(video)
    first, _ = _state(out, dest, video, key, overwrite=overwrite, retry_failed=retry_failed)
    if first is not None:
        return first, None
    claim = cache.claim(out, video.stem, wait=wait)
    if not claim.__enter__():
        claim.__exit__(None, None, None)
        return "busy", None
    job = VideoJob(video, out, key, claim)
    try:
        again, old = _state(out, dest, video, key, overwrite=overwrite, retry_failed=retry_failed)
        if again is not None:  # finished by another process while we were looking
            job.release()
            return ("done_by_other" if again in ("skipped", "skipped_failed") else again), None
        if old is not None:
            log.info("%s: re-extracting, the record differs: %s", video.name, cache.differences(old.get("cache"), key))
            dest.unlink()  # stale: never left beside a video it does not describe
        cache.clear_failure(out, video.stem)
    except BaseException:
        job.release()
        raise
    log.info("%s: extracting", video.name)
    job.t0 = time.perf_counter()
    return None, job


def _state(
    out: Path, dest: Path, video: Path, key: dict, *, overwrite: bool, retry_failed: bool
) -> tuple[str | tuple[str, str] | None, dict | None]:
    """What is already there for this key: ("skipped" | "skipped_failed" | ("refused", why) | None for work,
    the valid record at `dest` if it is stale, else None), reading the record once."""
    rec = stored_record(dest)
    if rec is not None:
        if isinstance(rec.get("cache"), dict) and rec["cache"].get("digest") == key["digest"]:
            return "skipped", None
        if not overwrite:
            why = f"{dest.name}: {cache.differences(rec.get('cache'), key)}"
            log.error("%s: kept (--no-overwrite), it differs from this run: %s", video.name, why)
            return ("refused", why), None
        return None, rec
    failure = cache.read_failure(out, video.stem)
    if failure is not None and not retry_failed and failure.get("key", {}).get("digest") == key["digest"]:
        return "skipped_failed", None
    return None, None

"""Index builder: pose records + a dataset adapter -> a PYSKL dataset index.

Inputs: either a folder `<poses>/<video_id>.pkl`, one pose record per video (read and validated
with `schema.read_record`), with the failure logs pose extraction writes beside them,
`failures.jsonl` or one `failures.rank<i>.jsonl` per shard (a JSON object
`{"video": path or id, "error": ...}` per line); or a pickle holding a bare list of records,
as PYSKL's tools/data/custom_2d_skeleton.py writes (float16 and compressed entries are
converted; its `label`s are replaced by the adapter's). Output: the index

    {"split": {name: [frame_dir, ...]}, "annotations": [record + "label" (+ "valid"), ...],
     "label_names": [...], "dataset": name}

Each annotation's frame_dir, like the split lists, is the adapter's canonical id (NTU:
`S001C001P001R001A001` for a record `S001C001P001R001A001_rgb.pkl`, as in PYSKL's pickles).
Records with `box_score` get `valid` ({box_thr: frames with a box at or above it}, what
PYSKL's and MMAction2's valid_ratio filter reads). The report names everything that did not
make it in, never dropping a video silently:

    records_found   records found = indexed + unlabelled + invalid + not_listed
                    + excluded_with_record
    indexed         records in the index
    expected        videos the video list or the adapter knows of, minus the excluded
                    (None if unknown)
    excluded        the adapter's excluded videos in scope (NTU: samples with missing
                    skeletons), never indexed
    excluded_with_record   how many of them had a record (skipped)
    missing         expected videos with no record and no failure entry
    failed          failure-log entries {"video", "error"} of videos that have no record
    failures_resolved   failure-log entries of videos that now have a record
    failures_malformed  unreadable failure-log lines {"file", "line", "text"}
    unlabelled      records the adapter cannot label {"video", "reason"}
    invalid         records that fail validation, or a second record of one video {"file", "error"}
    not_listed      records skipped because a video list was given and omits them
    scores_clipped  indexed records whose keypoint scores above 1 were clipped to 1
    splits          videos per split

`python -m pipeline index` writes the index with `schema.write_index` (atomic) and prints the
report on stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import pyskl, schema
from pipeline.datasets import (
    VIDEO_SUFFIXES,
    DatasetAdapter,
    DatasetError,
    UnknownVideoError,
    video_id,
)

log = logging.getLogger(__name__)

FAILURES_GLOB = "failures*.jsonl"  # failures.jsonl, or failures.rank<i>.jsonl per shard


def read_failures(path: str | os.PathLike) -> tuple[dict[str, str], list[dict]]:
    """Parse a failure log: ({video id: last error}, [malformed {"file", "line", "text"}])."""
    failed: dict[str, str] = {}
    malformed: list[dict] = []
    p = Path(path)
    if not p.is_file():
        return failed, malformed
    for n, text in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            vid = video_id(entry["video"])
            failed[vid] = str(entry.get("error", ""))
        except (ValueError, KeyError, TypeError):
            malformed.append({"file": str(p), "line": n, "text": text[:200]})
            log.warning('%s:%d: not a {"video", "error"} JSON line: %.80s', p, n, text)
    return failed, malformed


def read_video_list(path: str | os.PathLike) -> list[str]:
    """Video ids from a folder of videos (searched recursively) or a text file of names.

    Raises:
        DatasetError: no such path, no videos, or two files with the same id in a folder.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
        ids: dict[str, Path] = {}
        for f in files:
            if f.stem in ids:
                raise DatasetError(f"{p}: two videos with the id {f.stem!r}: {ids[f.stem]}, {f}")
            ids[f.stem] = f
        names = list(ids)
    elif p.is_file():
        lines = [s.strip() for s in p.read_text(encoding="utf-8").splitlines()]
        names = [video_id(s) for s in lines if s and not s.startswith("#")]
        if len(set(names)) != len(names):
            log.warning("%s: %d duplicate names ignored", p, len(names) - len(set(names)))
        names = list(dict.fromkeys(names))
    else:
        raise DatasetError(f"{p}: no such video folder or list file")
    if not names:
        raise DatasetError(f"{p}: no videos found")
    return names


@dataclass(frozen=True)
class _Entry:
    """One record of the poses source, read only when needed."""

    vid: str | None  # its own id (file stem, or the list entry's frame_dir); None: unreadable entry
    where: str  # the file (and list position) a report names
    load: Callable[[], dict]  # read + validate; SchemaError / UnsafePickleError / pyskl.LayoutError


def _folder_entries(poses_dir: Path) -> list[_Entry]:
    """The record files of a poses folder (hidden files, e.g. atomic-write temps, skipped)."""
    files = sorted(f for f in poses_dir.glob("*.pkl") if f.is_file() and not f.name.startswith("."))
    return [_Entry(f.stem, str(f), functools.partial(_read_record_file, f)) for f in files]


def _read_record_file(f: Path) -> dict:
    rec = schema.read_record(f)
    if rec["frame_dir"] != f.stem:
        raise schema.SchemaError(str(f), "frame_dir", f"the file stem {f.stem!r}", repr(rec["frame_dir"]))
    return rec


def _list_entries(path: Path) -> list[_Entry]:
    """The records of a bare list pickle (PYSKL's custom_2d_skeleton.py output; --compress too)."""
    records = schema.load_pickle(path)
    if not isinstance(records, list):
        what = "a dataset index" if schema.is_index(records) else type(records).__name__
        raise DatasetError(f"{path}: expected a folder of records or a list of records, got {what}")
    entries = []
    for i, rec in enumerate(records):
        fd = rec.get("frame_dir") if isinstance(rec, dict) else None
        vid = fd if isinstance(fd, str) and fd else None
        entries.append(_Entry(vid, f"{path} [{i}]", functools.partial(_check_list_record, rec, f"{path} [{i}]")))
    return entries


def _check_list_record(rec: object, where: str) -> dict:
    if isinstance(rec, dict) and "frame_inds" in rec:
        rec = pyskl.decompress_clip(rec, source=where)
    schema.validate_record(rec, source=where)
    return dict(rec)


def _annotation(rec: dict, frame_dir: str, label: int) -> tuple[dict, bool]:
    """The index entry of a record: canonical frame_dir, label, float32 arrays, `valid`.

    Returns (entry, whether keypoint scores above 1 were clipped). Published PYSKL records hold
    float16 and HRNet scores slightly above 1, which our writer refuses; both are converted here.
    """
    ann = {**rec, "frame_dir": frame_dir, "label": label}
    for key in ("keypoint", "keypoint_score", "box", "box_score"):
        if key in ann and ann[key].dtype != np.float32:
            ann[key] = ann[key].astype(np.float32)
    clipped = bool(ann["keypoint_score"].size) and float(ann["keypoint_score"].max()) > 1
    if clipped:
        ann["keypoint_score"] = np.minimum(ann["keypoint_score"], np.float32(1))
    if "box_score" in ann:  # what PYSKL's / MMAction2's valid_ratio filter reads
        ann["valid"] = pyskl.valid_counts(ann["box_score"])
    return ann, clipped


def build_index(
    *, poses: str | os.PathLike, dataset: DatasetAdapter, video_ids: Iterable[str] | None = None
) -> tuple[dict, dict]:
    """Label the pose records of `poses` with `dataset` and group them into its splits.

    Args:
        poses: a folder of `<video_id>.pkl` records (and optionally failures.jsonl), or a
            pickle holding a bare list of records (PYSKL's custom_2d_skeleton.py output).
        dataset: the adapter giving labels, splits, label names and excluded videos.
        video_ids: the videos to index (e.g. `read_video_list`); records of other videos are
            skipped and reported. Default: every record, expected = `dataset.expected_ids()`.

    Returns:
        (index, report) as described in the module docstring.
    """
    poses = Path(poses)
    if poses.is_dir():
        entries = _folder_entries(poses)
    elif poses.is_file():
        entries = _list_entries(poses)
    else:
        raise DatasetError(f"{poses}: no such poses folder or list file")
    canon = dataset.canonical_id
    excluded = dataset.excluded
    listed = None if video_ids is None else {canon(v) for v in video_ids}
    known = dataset.expected_ids() if listed is None else listed - excluded
    expected = None if known is None else {canon(v) for v in known}
    failed, malformed = {}, []
    for log_file in sorted(poses.glob(FAILURES_GLOB)) if poses.is_dir() else []:
        logged, bad = read_failures(log_file)
        failed.update(logged)
        malformed += bad
    report: dict = {
        "dataset": dataset.name,
        "poses": str(poses),
        "records_found": len(entries),
        "indexed": 0,
        "expected": None if expected is None else len(expected),
        "missing": [],
        "failed": [],
        "failures_resolved": 0,
        "failures_malformed": malformed,
        "excluded": sorted(excluded if listed is None else excluded & listed),
        "excluded_with_record": 0,
        "unlabelled": [],
        "invalid": [],
        "not_listed": [],
        "scores_clipped": 0,
        "splits": {},
    }
    split: dict[str, list[str]] = {name: [] for name in dataset.split_names}
    annotations, seen, present = [], set(), {}  # seen: any record; present: valid, canonical id -> where
    for entry in entries:
        vid = entry.vid
        if vid is not None and listed is not None and canon(vid) not in listed:
            report["not_listed"].append(vid)
            continue
        if vid is not None and canon(vid) in excluded:
            seen.add(canon(vid))
            report["excluded_with_record"] += 1
            continue
        try:
            if vid is not None:
                seen.add(canon(vid))
            rec = entry.load()
            assert vid is not None, "an entry without an id fails to load"
            if canon(vid) in present:
                again = f"{canon(vid)!r} again (first in {present[canon(vid)]})"
                raise schema.SchemaError(entry.where, "frame_dir", "one record per video", again)
        except (schema.SchemaError, schema.UnsafePickleError, pyskl.LayoutError) as exc:
            report["invalid"].append({"file": entry.where, "error": str(exc)})
            log.warning("invalid record skipped: %s", exc)
            continue
        present[canon(vid)] = entry.where
        try:
            label, names = dataset.label(vid), dataset.splits(vid)
        except UnknownVideoError as exc:
            report["unlabelled"].append({"video": vid, "reason": str(exc)})
            continue
        ann, clipped = _annotation(rec, canon(vid), label)
        report["scores_clipped"] += clipped
        annotations.append(ann)
        for name in names:
            split.setdefault(name, []).append(canon(vid))
    report["indexed"] = len(annotations)
    report["splits"] = {name: len(clips) for name, clips in split.items()}
    failed_canon = {canon(v): (v, e) for v, e in failed.items()}
    report["failed"] = [
        {"video": v, "error": e} for c, (v, e) in sorted(failed_canon.items()) if c not in present and c not in excluded
    ]
    report["failures_resolved"] = sum(c in present for c in failed_canon)
    if expected is not None:
        report["missing"] = sorted(expected - seen - set(failed_canon))
    index = {
        "split": split,
        "annotations": annotations,
        "label_names": list(dataset.label_names),
        "dataset": dataset.name,
    }
    return index, report


def format_report(report: dict, *, max_items: int = 10) -> str:
    """The report as a few human-readable lines, naming up to `max_items` videos per kind."""
    expected = "unknown" if report["expected"] is None else str(report["expected"])
    lines = [
        f"{report['dataset']} from {report['poses']}: {report['records_found']} records, "
        f"{report['indexed']} indexed; expected videos: {expected}"
    ]
    kinds = [
        ("excluded (missing skeletons)", report["excluded"], None),
        ("missing (no record, no failure entry)", report["missing"], None),
        ("failed (failure log)", report["failed"], "error"),
        ("unlabelled", report["unlabelled"], "reason"),
        ("invalid records", report["invalid"], "error"),
        ("not in the video list", report["not_listed"], None),
        ("malformed failure-log lines", report["failures_malformed"], "text"),
    ]
    for title, items, detail in kinds:
        if not items:
            continue
        lines.append(f"  {title}: {len(items)}")
        for item in items[:max_items]:
            if detail is None:
                lines.append(f"    {item}")
            else:
                head = item.get("video") or (f"{item['file']}:{item['line']}" if "line" in item else item["file"])
                lines.append(f"    {head}: {item[detail]}")
        if len(items) > max_items:
            lines.append(f"    ... and {len(items) - max_items} more")
    if report["excluded_with_record"]:
        lines.append(f"  excluded videos that have a record (skipped): {report['excluded_with_record']}")
    if report["scores_clipped"]:
        lines.append(f"  records with keypoint scores above 1, clipped to 1: {report['scores_clipped']}")
    if report["failures_resolved"]:
        lines.append(f"  failure entries now with a record: {report['failures_resolved']}")
    return "\n".join(lines)

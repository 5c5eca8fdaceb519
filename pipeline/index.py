"""Index builder: a folder of pose records + a dataset adapter -> a PYSKL dataset index.

Inputs: `<poses_dir>/<video_id>.pkl`, one pose record per video (read and validated with
`schema.read_record`), and the failure logs pose extraction writes beside them,
`failures.jsonl` or one `failures.rank<i>.jsonl` per shard (a JSON object
`{"video": path or id, "error": ...}` per line). Output: the index

    {"split": {name: [frame_dir, ...]}, "annotations": [record + "label", ...],
     "label_names": [...], "dataset": name}

and a report of everything that did not make it in, each video named, never dropped silently:

    records_found   record files found = indexed + unlabelled + invalid + not_listed
    indexed         records in the index
    expected        videos the video list or the adapter knows of (None if unknown)
    missing         expected videos with no record file and no failure entry
    failed          failure-log entries {"video", "error"} of videos that have no record
    failures_resolved   failure-log entries of videos that now have a record
    failures_malformed  unreadable failure-log lines {"file", "line", "text"}
    unlabelled      records the adapter cannot label {"video", "reason"}
    invalid         record files that fail validation {"file", "error"}
    not_listed      records skipped because a video list was given and omits them
    splits          videos per split

`python -m pipeline index` writes the index with `schema.write_index` (atomic) and prints the
report on stderr.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline import schema
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


def _record_files(poses_dir: Path) -> list[Path]:
    """The record files of a poses folder (hidden files, e.g. atomic-write temps, skipped)."""
    if not poses_dir.is_dir():
        raise DatasetError(f"{poses_dir}: no such poses folder")
    return sorted(f for f in poses_dir.glob("*.pkl") if f.is_file() and not f.name.startswith("."))


def build_index(
    *, poses_dir: str | os.PathLike, dataset: DatasetAdapter, video_ids: Iterable[str] | None = None
) -> tuple[dict, dict]:
    """Label the pose records of `poses_dir` with `dataset` and group them into its splits.

    Args:
        poses_dir: folder of `<video_id>.pkl` records (and optionally failures.jsonl).
        dataset: the adapter giving labels, splits and label names.
        video_ids: the videos to index (e.g. `read_video_list`); records of other videos are
            skipped and reported. Default: every record, expected = `dataset.expected_ids()`.

    Returns:
        (index, report) as described in the module docstring.
    """
    poses_dir = Path(poses_dir)
    files = _record_files(poses_dir)
    listed = None if video_ids is None else {dataset.canonical_id(v) for v in video_ids}
    known = dataset.expected_ids() if listed is None else listed
    expected = None if known is None else {dataset.canonical_id(v) for v in known}
    failed, malformed = {}, []
    for log_file in sorted(poses_dir.glob(FAILURES_GLOB)):
        entries, bad = read_failures(log_file)
        failed.update(entries)
        malformed += bad
    report: dict = {
        "dataset": dataset.name,
        "poses_dir": str(poses_dir),
        "records_found": len(files),
        "indexed": 0,
        "expected": None if expected is None else len(expected),
        "missing": [],
        "failed": [],
        "failures_resolved": 0,
        "failures_malformed": malformed,
        "unlabelled": [],
        "invalid": [],
        "not_listed": [],
        "splits": {},
    }
    split: dict[str, list[str]] = {name: [] for name in dataset.split_names}
    annotations, seen, present = [], set(), set()  # seen: any record file; present: valid
    for f in files:
        vid = f.stem
        if listed is not None and dataset.canonical_id(vid) not in listed:
            report["not_listed"].append(vid)
            continue
        seen.add(dataset.canonical_id(vid))
        try:
            rec = schema.read_record(f)
            if rec["frame_dir"] != vid:
                raise schema.SchemaError(str(f), "frame_dir", f"the file stem {vid!r}", repr(rec["frame_dir"]))
        except (schema.SchemaError, schema.UnsafePickleError) as exc:
            report["invalid"].append({"file": str(f), "error": str(exc)})
            log.warning("invalid record skipped: %s", exc)
            continue
        present.add(dataset.canonical_id(vid))
        try:
            label, names = dataset.label(vid), dataset.splits(vid)
        except UnknownVideoError as exc:
            report["unlabelled"].append({"video": vid, "reason": str(exc)})
            continue
        annotations.append({**rec, "label": label})
        for name in names:
            split.setdefault(name, []).append(vid)
    report["indexed"] = len(annotations)
    report["splits"] = {name: len(clips) for name, clips in split.items()}
    failed_canon = {dataset.canonical_id(v): (v, e) for v, e in failed.items()}
    report["failed"] = [{"video": v, "error": e} for c, (v, e) in sorted(failed_canon.items()) if c not in present]
    report["failures_resolved"] = len(failed_canon) - len(report["failed"])
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
        f"{report['dataset']} from {report['poses_dir']}: {report['records_found']} records, "
        f"{report['indexed']} indexed; expected videos: {expected}"
    ]
    kinds = [
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
    if report["failures_resolved"]:
        lines.append(f"  failure entries now with a record: {report['failures_resolved']}")
    return "\n".join(lines)

"""PYSKL / MMAction2 interchange: their compressed Kinetics-400 layout decompressed into standard records.

PYSKL's k400_hrnet.pkl (MMAction2's k400_2d.pkl) is an index whose clips hold no [M, T] arrays:

    frame_dir, label, total_frames, img_shape, original_shape   as in a standard record
    frame_inds   int [N]          the frame of each of the clip's N detected person instances
    box_score    float [N]        each instance's detector score
    valid        {box_thr: int}   frames with an instance whose box_score >= box_thr
    raw_file     str              the "kpfile" holding the keypoints: a pickle
                                  {frame_dir: {"keypoint": float [N, 17, 3] (x, y, score)}}

(`keypoint` may also sit in the clip itself, as PYSKL's tools/data/custom_2d_skeleton.py
--compress writes it.) A clip is decompressed as PYSKL's `DecompressPose` does: instance i goes
to frame `frame_inds[i]` in the first free person slot of that frame, in file order
(`frame_inds` must be non-decreasing); `squeeze` (default, as every PYSKL Kinetics config)
drops frames without instances and renumbers the rest, so `total_frames` becomes the number of
frames with a person; where a frame has more than `max_person` (default 10) instances, every
frame's slots are reordered by descending keypoint-score sum (summed over float16 scores, ties
in file order) and cut to `max_person`. Our records are float32 (values equal to
DecompressPose's float16 output when the kpfile stores float16), and carry `box_score` [M, T]
decompressed the same way plus `valid` recounted from it (see `valid_counts`).

Filtering as PYSKL's / MMAction2's PoseDataset, off by default: with `valid_ratio` > 0 a clip
is kept only if valid[box_thr] / total_frames >= valid_ratio, and its instances with
box_score < box_thr are dropped before decompression. `box_thr` alone filters nothing (as
there). Dropped clips leave the split lists and are named.

A kpfile named by `raw_file` is looked for under `kpfile_root` (default: the annotation
file's folder) as raw_file itself, then its last two and its last path component; it is read
with the loader given (`schema.load_pickle`), one kpfile at a time, kept while consecutive
clips use it.

This module is the layer below `pipeline.schema` (numpy only): `schema.iter_records` and
`schema.read_index` are the entry points, validating every record and turning a `LayoutError`
into the one-line `SchemaError` naming the file and the clip. docs/data-contract.md describes
the layout with PYSKL's and MMAction2's sources.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.unpickle import clip as _clip
from pipeline.unpickle import describe_value as _describe

log = logging.getLogger(__name__)

BOX_THRS = (0.5, 0.6, 0.7, 0.8, 0.9)  # the `valid` keys; PYSKL and MMAction2 accept only these box_thr
DEFAULT_MAX_PERSON = 10  # DecompressPose's default; no PYSKL Kinetics config changes it
NUM_JOINTS = 17  # COCO-17, as schema.NUM_JOINTS (this module sits below schema)
_DECOMPRESSED_AWAY = ("frame_inds", "anno_inds", "keypoint", "box_score", "valid")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


class LayoutError(ValueError):
    """A compressed clip or its kpfile is inconsistent: `<file> [clip <frame_dir>]: <what is wrong>`.

    `schema` re-raises it as a `SchemaError` with the same message.
    """

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {message}")


def is_compressed(obj: Any) -> bool:
    """True for an index whose clips carry `frame_inds` (the compressed layout) instead of [M, T] arrays."""
    anns = obj.get("annotations") if isinstance(obj, Mapping) else None
    return isinstance(anns, list) and bool(anns) and isinstance(anns[0], Mapping) and "frame_inds" in anns[0]


def valid_counts(box_score: np.ndarray) -> dict[float, int]:
    """`valid` of a record: {box_thr: frames where some person has box_score >= box_thr} for BOX_THRS.

    Args:
        box_score: [M, T] person box scores (0 where a slot is empty).
    """
    return {thr: int((box_score >= thr).any(axis=0).sum()) for thr in BOX_THRS}


# ------------------------------------------------------------------------------------------
# One clip
# ------------------------------------------------------------------------------------------


def _array(clip: Mapping, key: str, src: str, *, ndim: int, floating: bool) -> np.ndarray:
    v = clip[key]
    kind = np.floating if floating else np.integer
    if not isinstance(v, np.ndarray) or v.ndim != ndim or not np.issubdtype(v.dtype, kind):
        want = f"a {ndim}-d {'float' if floating else 'integer'} array"
        raise LayoutError(src, key, f"{key}: expected {want}, got {_describe(v)}")
    return v


def _check_frame_inds(fi: np.ndarray, total: int, src: str, *, squeeze: bool) -> None:
    if fi.size and fi.min() < 0:
        i = int(np.argmax(fi < 0))
        raise LayoutError(src, "frame_inds", f"frame_inds[{i}] is {int(fi[i])}, negative")
    down = np.flatnonzero(np.diff(fi) < 0)
    if down.size:
        i = int(down[0]) + 1
        raise LayoutError(
            src, "frame_inds", f"frame_inds not monotone: frame_inds[{i}] = {int(fi[i])} after {int(fi[i - 1])}"
        )
    if not squeeze and fi.size and fi[-1] >= total:
        i = int(np.argmax(fi >= total))
        raise LayoutError(
            src, "frame_inds", f"frame_inds[{i}] is {int(fi[i])}, not below total_frames {total} (squeeze off)"
        )


def decompress_clip(
    clip: Mapping,
    *,
    source: str,
    squeeze: bool = True,
    max_person: int = DEFAULT_MAX_PERSON,
    box_thr: float | None = None,
) -> dict:
    """One compressed clip (its `keypoint` [N, 17, 3] present) -> a standard record, as DecompressPose.

    Args:
        clip: frame_dir, total_frames, frame_inds [N], keypoint [N, 17, 3], optionally box_score [N]
            and any other keys (passed through).
        source: the file named in errors.
        squeeze: drop frames without instances (DecompressPose's default).
        max_person: person slots kept where a frame has more instances.
        box_thr: drop instances with box_score < box_thr first (PYSKL's `anno_inds`); None keeps all.

    Raises:
        LayoutError: naming the file, the clip and the inconsistency.
    """
    fd = clip.get("frame_dir")
    src = f"{source} [clip {_clip(str(fd), 80)}]"
    for key in ("frame_dir", "total_frames", "frame_inds", "keypoint"):
        if key not in clip:
            raise LayoutError(src, key, f"{key} missing")
    total = clip["total_frames"]
    if not _is_int(total) or total < 0:
        raise LayoutError(src, "total_frames", f"total_frames: expected an int >= 0, got {_describe(total)}")
    fi = _array(clip, "frame_inds", src, ndim=1, floating=False).astype(np.int64)
    kp = _array(clip, "keypoint", src, ndim=3, floating=True)
    bs = _array(clip, "box_score", src, ndim=1, floating=True) if "box_score" in clip else None
    if kp.shape[0] != fi.size or kp.shape[1:] != (NUM_JOINTS, 3) or (bs is not None and bs.size != fi.size):
        got, want = (f", box_score [{bs.size}]", " / [N]") if bs is not None else ("", "")
        raise LayoutError(
            src,
            "keypoint",
            f"shapes disagree: frame_inds [{fi.size}], keypoint {list(kp.shape)}{got} "
            f"(expected [N] / [N, {NUM_JOINTS}, 3]{want})",
        )
    _check_frame_inds(fi, int(total), src, squeeze=squeeze)
    if box_thr is not None:  # PYSKL's anno_inds
        if bs is None:
            raise LayoutError(src, "box_score", f"box_score missing (needed to drop instances below box_thr {box_thr})")
        above = bs >= box_thr
        fi, kp, bs = fi[above], kp[above], bs[above]
    if squeeze:
        uniq, fi = np.unique(fi, return_inverse=True)
        t = len(uniq)
    else:
        t = int(total)
    n = fi.size
    slot = np.arange(n) - np.searchsorted(fi, fi, side="left")  # [N] rank of the instance within its frame
    m = int(slot.max()) + 1 if n else 0
    if m > max_person:  # every frame's slots by descending score sum, over float16 scores as DecompressPose
        key = kp[:, :, 2].astype(np.float16).sum(-1)  # [N]
        order = np.lexsort((-key, fi))  # frames stay in order; stable, so ties keep file order
        new_slot = np.empty(n, np.int64)
        new_slot[order] = slot
        slot, m = new_slot, max_person
    kept = slot < m
    slot, fi, kp = slot[kept], fi[kept], kp[kept]
    keypoint = np.zeros((m, t, NUM_JOINTS, 2), np.float32)
    score = np.zeros((m, t, NUM_JOINTS), np.float32)
    keypoint[slot, fi] = kp[:, :, :2]
    score[slot, fi] = kp[:, :, 2]
    rec = {k: v for k, v in clip.items() if k not in _DECOMPRESSED_AWAY}
    rec.update(total_frames=t, keypoint=keypoint, keypoint_score=score)
    if bs is not None:
        box = np.zeros((m, t), np.float32)
        box[slot, fi] = bs[kept]
        rec["box_score"], rec["valid"] = box, valid_counts(box)
    return rec


# ------------------------------------------------------------------------------------------
# A whole index, streamed
# ------------------------------------------------------------------------------------------


def check_options(box_thr: float | None, valid_ratio: float | None, max_person: int) -> bool:
    """Check the filtering options; True if clips are filtered (valid_ratio > 0).

    Raises:
        ValueError: box_thr not one of BOX_THRS, valid_ratio outside (0, 1] or without box_thr,
            max_person below 1.
    """
    if box_thr is not None and box_thr not in BOX_THRS:
        raise ValueError(f"box_thr {box_thr!r}: expected one of {', '.join(map(str, BOX_THRS))} (PYSKL's `valid` keys)")
    if not _is_int(max_person) or max_person < 1:
        raise ValueError(f"max_person {max_person!r}: expected an int >= 1")
    if valid_ratio is None or valid_ratio == 0:
        if box_thr is not None:
            log.warning("box_thr %s filters nothing without valid_ratio > 0 (as in PYSKL's PoseDataset)", box_thr)
        return False
    if not 0 < valid_ratio <= 1:
        raise ValueError(f"valid_ratio {valid_ratio!r}: expected a number in (0, 1]")
    if box_thr is None:
        raise ValueError(f"valid_ratio {valid_ratio} needs box_thr (one of {', '.join(map(str, BOX_THRS))})")
    return True


def _kept(ann: Mapping, src: str, box_thr: float, valid_ratio: float) -> bool:
    """PYSKL's clip filter: valid[box_thr] / total_frames >= valid_ratio (a clip of 0 frames is dropped)."""
    valid = ann.get("valid")
    if not isinstance(valid, Mapping) or box_thr not in valid or not _is_int(valid[box_thr]):
        want = f"{{{box_thr}: frames, ...}} for valid_ratio"
        raise LayoutError(src, "valid", f"valid: expected {want}, got {_describe(valid)}")
    total = ann.get("total_frames")
    if not _is_int(total) or total < 0:
        raise LayoutError(src, "total_frames", f"total_frames: expected an int >= 0, got {_describe(total)}")
    return total > 0 and valid[box_thr] / total >= valid_ratio


def stream_clips(
    index: Mapping,
    *,
    source: str,
    kpfile_root: str | os.PathLike,
    load: Callable[[Path], Any],
    box_thr: float | None = None,
    valid_ratio: float | None = None,
    max_person: int = DEFAULT_MAX_PERSON,
    squeeze: bool = True,
) -> tuple[dict, list[str], Iterator[tuple[int, dict]]]:
    """An index (compressed or standard) as (header, dropped, records), records decompressed lazily.

    The caller (`schema.iter_records`) has checked the index's structure and splits.

    Args:
        index: {"split", "annotations", ...}; every annotation a dict with a str frame_dir.
        source: the file named in errors.
        kpfile_root: the folder `raw_file` paths are relative to.
        load: reads a kpfile (`schema.load_pickle`).
        box_thr, valid_ratio, max_person, squeeze: see the module docstring.

    Returns:
        header: the index's top-level keys but `annotations`, `split` without the dropped clips;
        dropped: frame_dirs removed by valid_ratio, in file order;
        records: (annotation position, record) in file order, not validated.

    Raises:
        LayoutError: a clip breaks the layout (the filter's fields at once, the rest when read).
        ValueError: an option is out of range.
    """
    filtering = check_options(box_thr, valid_ratio, max_person)
    anns, compressed = index["annotations"], is_compressed(index)
    where = [f"{source} [clip {_clip(a['frame_dir'], 80)}]" for a in anns]
    if compressed:
        for ann, src in zip(anns, where):
            if "frame_inds" not in ann:
                raise LayoutError(src, "frame_inds", "frame_inds missing in a compressed index")
    kept = range(len(anns))
    if filtering:
        kept = [i for i in kept if _kept(anns[i], where[i], box_thr, valid_ratio)]
    dropped = [anns[i]["frame_dir"] for i in sorted(set(range(len(anns))) - set(kept))]
    if dropped:
        log.info(
            "%s: %d of %d clips dropped by valid_ratio %s (box_thr %s)",
            source,
            len(dropped),
            len(anns),
            valid_ratio,
            box_thr,
        )
    gone = set(dropped)
    header = {k: v for k, v in index.items() if k != "annotations"}
    header["split"] = {k: [c for c in v if c not in gone] for k, v in index["split"].items()}
    options = {"squeeze": squeeze, "max_person": max_person, "box_thr": box_thr if filtering else None}
    kpfiles = _KpfileCache(Path(kpfile_root), load)

    def records() -> Iterator[tuple[int, dict]]:
        for i in kept:
            ann = anns[i]
            if not compressed:
                yield i, dict(ann)
                continue
            clip = ann if "keypoint" in ann else {**ann, **kpfiles.entry(ann, where[i])}  # the kpfile's keys win
            yield i, decompress_clip(clip, source=source, **options)

    return header, dropped, records()


class _KpfileCache:
    """The one kpfile in memory: loaded when a clip names another, kept while consecutive clips use it."""

    def __init__(self, root: Path, load: Callable[[Path], Any]):
        self.root, self.load, self.path, self.data, self.loads = root, load, None, None, {}

    def candidates(self, raw: str) -> list[Path]:
        """raw_file (absolute as given, else under root), then its last two and last components under root."""
        p = Path(raw)
        tails = [Path(*p.parts[-2:]), Path(p.name)]
        first = p if p.is_absolute() else self.root / p
        return list(dict.fromkeys([first] + [self.root / t for t in tails]))

    def entry(self, ann: Mapping, src: str) -> Mapping:
        raw = ann.get("raw_file")
        if not isinstance(raw, str) or not raw:
            message = f"no keypoint in the clip and no raw_file naming a kpfile, got {_describe(raw)}"
            raise LayoutError(src, "raw_file", message)
        tried = self.candidates(raw)
        path = next((c for c in tried if c.is_file()), None)
        if path is None:
            raise LayoutError(src, "raw_file", f"raw_file {raw} not found (looked in {', '.join(map(str, tried))})")
        if path != self.path:
            self._read(path, src)
        key = ann["frame_dir"]  # PYSKL's memcached key is the frame_dir
        pack = self.data.get(key)
        if pack is None:
            message = f"kpfile {path} has no entry {_clip(key, 80)!r} ({len(self.data)} entries)"
            raise LayoutError(src, "raw_file", message)
        if not isinstance(pack, Mapping) or "keypoint" not in pack:
            message = f"kpfile {path}: entry {_clip(key, 80)!r}: expected {{'keypoint': array}}, got {_describe(pack)}"
            raise LayoutError(src, "raw_file", message)
        return pack

    def _read(self, path: Path, src: str) -> None:
        self.path, self.data = None, None  # release the previous kpfile before reading the next
        try:
            data = self.load(path)
        except ValueError as exc:  # schema.SchemaError: unreadable, not a pickle
            raise LayoutError(src, "raw_file", f"kpfile unreadable: {exc}") from None
        if not isinstance(data, Mapping):
            message = f"kpfile {path}: expected a dict {{frame_dir: {{'keypoint': ...}}}}, got {_describe(data)}"
            raise LayoutError(src, "raw_file", message)
        self.loads[path] = self.loads.get(path, 0) + 1
        if self.loads[path] == 2:
            log.warning(
                "%s: kpfile %s read again: the annotations are not grouped by raw_file (each read loads all of it)",
                src,
                path,
            )
        self.path, self.data = path, data

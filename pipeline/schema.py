"""The data contract shared by both stages: pose records and dataset indexes (PYSKL layout).

This docstring is the one place the contract is written down.

Pose record (one per video, a pickled dict; stage 1 writes it, stage 2 reads it):

    frame_dir        str               video id (the file stem), unique within a dataset; in an
                                       index the dataset's canonical id (NTU: S001C001P001R001A001,
                                       no `_rgb`, as in PYSKL's pickles)
    total_frames     int >= 0          T
    img_shape        (H, W) ints > 0   frame size in pixels
    keypoint         float [M, T, 17, 2]   pixel coordinates, COCO-17 joint order
    keypoint_score   float [M, T, 17]      confidences in [0, 1]
    --- optional, validated when present (our writers always add them) ---
    original_shape   (H, W)            size before any resizing
    label            int >= 0          class index (required in a dataset index)
    fps              float > 0
    person_ids       int [M]           track ids, -1 where a slot has no consistent identity
    box              float [M, T, 4]   person boxes (x1, y1, x2, y2) where a detector ran
    box_score        float [M, T]
    valid            {box_thr: int}    frames with a person whose box_score >= box_thr, for box_thr
                     0.5-0.9: what PYSKL's / MMAction2's `valid_ratio` filter reads; the index
                     builder adds it wherever box_score is present
    estimator        {"name": str, "weights": str, "version": str}
    detector         {name, weights, sha256, score_threshold, min_area, input_size,
                     keyframe_interval}: the person detector of a top-down estimator
    schema_version   int               SCHEMA_VERSION when written by this project
    cache            {video, settings, digest}   stage 1's cache key: what the record was made
                     from (pose_extraction/cache.py); a record is reused only when it matches

A missing person or joint in a frame has coordinates 0 and score 0. Person slots are
identity-consistent across frames. Our writers store float32, never float16 (float16 rounds
pixel coordinates to 1-2 px above x = 1024); readers also accept the float16 of published
PYSKL pickles. total_frames, img_shape and fps are below 2**63. Unknown keys (`raw_file`,
...) pass through untouched.

Dataset index (the PYSKL / MMAction2 layout, so their pickles train here and ours there):

    {"split": {name: [frame_dir, ...]}, "annotations": [record + "label", ...], ...extra keys}

Split names follow PYSKL (`xsub_train`, `xsub_val`, `xview_*`, `xset_*`). Every clip a split
names must exist among the annotations, and frame_dirs are unique. No clip is in both
`<p>train` and `<p>val` of one protocol `p` (`xsub_train` and `xsub_val`, or `train` and
`val`); protocols may share clips (`xsub_train` and `xview_val`). Where the index has
`label_names` (ours always), it is a list of str and every label is below its length.

`read_index` also reads PYSKL's compressed Kinetics layout (k400_hrnet.pkl: per clip
`frame_inds`, `box_score`, `valid` and a `raw_file` kpfile instead of the [M, T] arrays),
returning it decompressed into standard records as PYSKL's DecompressPose does
(`pipeline/pyskl.py`); `iter_records` streams any index, one validated record at a time. A bare list of records (PYSKL's
custom_2d_skeleton.py output) is no index: `python -m pipeline index --poses LIST.pkl` makes one.
docs/data-contract.md describes these layouts with their sources.

Pickles are read by `load_pickle` with the restricted unpickler of `pipeline/unpickle.py`
(its docstring lists the allow-list and the bounds). Every write is atomic (`pipeline.atomic`).
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import pyskl
from pipeline.atomic import atomic_write_bytes
from pipeline.unpickle import UnsafePickleError, restricted_loads
from pipeline.unpickle import clip as _clip
from pipeline.unpickle import describe_value as _describe
from pipeline.unpickle import short_repr as _short

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
NUM_JOINTS = 17
# fmt: off
COCO17_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO17_EDGES = (  # the skeleton drawn in overlays and figures: face, arms, torso, legs
    (0, 1), (0, 2), (1, 3), (2, 4),
    (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)
# fmt: on
_READ_FLOATS = (np.float16, np.float32, np.float64)
_PICKLE_PROTOCOL = 4


class SchemaError(ValueError):
    """A record or index breaks the contract; the message names file, key, expected, actual."""

    def __init__(self, source: str, key: str, expected: str, actual: Any, *, hint: str = ""):
        self.source, self.key, self.expected, self.actual = source, key, expected, actual
        got = _clip(actual if isinstance(actual, str) else _short(actual), 200)
        more = f"; {hint}" if hint else ""
        super().__init__(f"{source}: {_clip(key, 200)}: expected {expected}, got {got}{more}")

    @classmethod
    def plain(cls, source: str, key: str, message: str) -> SchemaError:
        """`<source>: <message>`, for a fault that is no expected/got pair (a compressed clip's)."""
        err = cls(source, key, message, None)
        err.args = (f"{source}: {message}",)
        return err


# ------------------------------------------------------------------------------------------
# Reading pickles
# ------------------------------------------------------------------------------------------


def load_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle with the restricted unpickler.

    Raises:
        SchemaError: the path is missing, a directory, unreadable, or not a (complete) pickle.
        UnsafePickleError: the pickle asks for a forbidden global, call, size or nesting
            (nothing outside the allow-list ran).
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise SchemaError(src, "file", "an existing file", "no such file")
    if p.is_dir():
        raise SchemaError(src, "file", "a file", "a directory")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SchemaError(src, "file", "a readable file", f"{type(exc).__name__}: {exc}") from exc
    try:
        return restricted_loads(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{src}: {_clip(str(exc), 200)}") from None
    except Exception as exc:  # corrupt or truncated file: any unpickling failure
        raise SchemaError(src, "file", "a pickle", f"{type(exc).__name__}: {_clip(str(exc), 200)}") from None


class _PortablePickler(pickle._Pickler):
    """Protocol 4, numpy's globals under their `numpy.core.*` names.

    numpy 2 names its reconstruction functions `numpy._core.*`, which numpy < 1.26 (PYSKL's and
    MMAction2's environments) cannot import; `numpy.core.*` is what numpy 1.x writes and both
    1.x and 2.x resolve (2.x through its compatibility module). The pure-Python pickler is the
    one whose global references can be renamed.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        if module == "numpy._core" or module.startswith("numpy._core."):
            self.save("numpy.core" + module[len("numpy._core") :])
            self.save(name or obj.__qualname__)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dumps_portable(obj: Any) -> bytes:
    """`obj` pickled for numpy 1.x and 2.x alike (see `_PortablePickler`)."""
    buf = io.BytesIO()
    _PortablePickler(buf, protocol=_PICKLE_PROTOCOL).dump(obj)
    return buf.getvalue()


def save_pickle(obj: Any, path: str | os.PathLike) -> None:
    """Pickle `obj` to `path` atomically, readable by numpy 1.x and 2.x (PYSKL's environments too)."""
    atomic_write_bytes(path, dumps_portable(obj))


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_shape2(rec: Mapping, key: str, src: str) -> None:
    v = rec[key]
    ok = isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(s) and 0 < s < 2**63 for s in v)
    if not ok:
        raise SchemaError(src, key, "(H, W) with two positive ints", _describe(v))


def _check_array(
    rec: Mapping, key: str, shape: tuple, src: str, *, write: bool, checked: set, floating: bool = True
) -> np.ndarray:
    """Check dtype, shape (None = any) and finiteness of one array field.

    `checked` holds (id, key) of arrays whose values passed already: an index may share one
    array among many records, and reading it once per record would make validation quadratic.
    """
    v = rec[key]
    if not isinstance(v, np.ndarray):
        raise SchemaError(src, key, "a numpy array", _describe(v))
    if floating:
        allowed = (np.float32,) if write else _READ_FLOATS
        if v.dtype.type not in allowed:
            names = "/".join(np.dtype(t).name for t in allowed)
            raise SchemaError(src, f"{key}.dtype", names, v.dtype.name)
    elif not np.issubdtype(v.dtype, np.integer):
        raise SchemaError(src, f"{key}.dtype", "an integer dtype", v.dtype.name)
    if v.ndim != len(shape) or any(e is not None and e != a for e, a in zip(shape, v.shape)):
        want = "[" + ", ".join("*" if e is None else str(e) for e in shape) + "]"
        raise SchemaError(src, f"{key}.shape", want, list(v.shape))
    if floating and v.size and (id(v), key) not in checked and not np.isfinite(v).all():
        bad = int((~np.isfinite(v)).sum())
        raise SchemaError(src, key, "finite values", f"{bad} NaN/inf values")
    if key != "keypoint_score":  # its range is checked by the caller
        checked.add((id(v), key))
    return v


def validate_record(rec: Any, *, source: str = "<record>", write: bool = False, require_label: bool = False) -> None:
    """Check one pose record against the contract.

    Args:
        rec: the record.
        source: file (and clip) named in errors.
        write: writer's checks: float32 only and scores at most 1. Readers also accept
            float16/float64 and log scores above 1 (published HRNet heatmap maxima).
        require_label: the record comes from a dataset index.

    Raises:
        SchemaError: naming the key, the expected and the actual value.
    """
    _validate_record(rec, source, write=write, require_label=require_label, checked=set())


def _validate_record(rec: Any, source: str, *, write: bool, require_label: bool, checked: set) -> None:
    if not isinstance(rec, Mapping):
        raise SchemaError(source, "record", "a dict", _describe(rec))
    required = ["frame_dir", "total_frames", "img_shape", "keypoint", "keypoint_score"]
    if require_label:
        required.append("label")
    for key in required:
        if key not in rec:
            raise SchemaError(source, key, "present", "missing")
    fd = rec["frame_dir"]
    if not isinstance(fd, str) or not fd:
        raise SchemaError(source, "frame_dir", "a non-empty str", _describe(fd))
    src = f"{source} [{_clip(fd, 80)}]"
    t = rec["total_frames"]
    if not _is_int(t) or not 0 <= t < 2**63:
        raise SchemaError(src, "total_frames", "an int >= 0", _describe(t))
    _check_shape2(rec, "img_shape", src)
    if "original_shape" in rec:
        _check_shape2(rec, "original_shape", src)
    kp = _check_array(rec, "keypoint", (None, int(t), NUM_JOINTS, 2), src, write=write, checked=checked)
    m = kp.shape[0]
    sc = _check_array(rec, "keypoint_score", (m, int(t), NUM_JOINTS), src, write=write, checked=checked)
    if sc.size and (id(sc), "keypoint_score") not in checked:
        lo, hi = float(sc.min()), float(sc.max())
        if lo < 0:
            raise SchemaError(src, "keypoint_score", "values in [0, 1]", f"min {lo:.4g}")
        if hi > 1:
            if write:
                raise SchemaError(src, "keypoint_score", "values in [0, 1]", f"max {hi:.4g}")
            log.debug("%s: keypoint_score max %.4g above 1 accepted on read", src, hi)
        checked.add((id(sc), "keypoint_score"))
    if "label" in rec and (not _is_int(rec["label"]) or rec["label"] < 0):
        raise SchemaError(src, "label", "an int >= 0", _describe(rec["label"]))
    _validate_provenance(rec, src, m=m, t=int(t), write=write, checked=checked)


def _validate_provenance(rec: Mapping, src: str, *, m: int, t: int, write: bool, checked: set) -> None:
    """Check our additions where present."""
    if "fps" in rec:
        fps = rec["fps"]
        number = isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool)
        if not number or not 0 < fps < 2**63 or not math.isfinite(fps):  # a huge int overflows float
            raise SchemaError(src, "fps", "a finite number > 0", _describe(fps))
    if "person_ids" in rec:
        _check_array(rec, "person_ids", (m,), src, write=write, checked=checked, floating=False)
    if "box" in rec:
        _check_array(rec, "box", (m, t, 4), src, write=write, checked=checked)
    if "box_score" in rec:
        _check_array(rec, "box_score", (m, t), src, write=write, checked=checked)
    if "valid" in rec:
        _check_valid(rec["valid"], src, t=t)
    if "estimator" in rec:
        est = rec["estimator"]
        keys = ("name", "weights", "version")
        if not isinstance(est, Mapping) or any(not isinstance(est.get(k), str) for k in keys):
            raise SchemaError(src, "estimator", "{name, weights, version} as str", _describe(est))
    if "detector" in rec:
        _check_detector(rec["detector"], src)
    if "schema_version" in rec:
        sv = rec["schema_version"]
        if not _is_int(sv) or not 1 <= sv <= SCHEMA_VERSION:
            raise SchemaError(src, "schema_version", f"an int in [1, {SCHEMA_VERSION}]", _describe(sv))


def _check_valid(valid: Any, src: str, *, t: int) -> None:
    """`valid` (PYSKL / MMAction2's Kinetics filter): {box_thr in (0, 1]: frames in [0, T]}."""
    ok = isinstance(valid, Mapping) and all(
        isinstance(k, (float, int)) and not isinstance(k, bool) and 0 < k <= 1 and _is_int(v) and 0 <= v <= t
        for k, v in valid.items()
    )
    if not ok:
        raise SchemaError(src, "valid", f"{{box_thr in (0, 1]: frames in [0, {t}]}}", _describe(valid))


# The detector provenance of top-down records (pose_extraction): key -> (expected, check).
_DETECTOR_FIELDS = {
    "name": ("a str", lambda v: isinstance(v, str)),
    "weights": ("a str", lambda v: isinstance(v, str)),
    "sha256": ("64 hex digits or empty", lambda v: isinstance(v, str) and (v == "" or _is_sha256(v))),
    "score_threshold": ("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
    "min_area": ("a number >= 0", lambda v: _is_number(v) and v >= 0),
    "input_size": ("an int >= 32", lambda v: _is_int(v) and v >= 32),
    "keyframe_interval": ("an int >= 1", lambda v: _is_int(v) and v >= 1),
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _is_sha256(v: str) -> bool:
    return len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _check_detector(det: Any, src: str) -> None:
    """`detector` {name, weights, sha256, score_threshold, min_area, input_size, keyframe_interval}."""
    if not isinstance(det, Mapping):
        raise SchemaError(src, "detector", "a dict of the detector's provenance", _describe(det))
    for key, (expected, ok) in _DETECTOR_FIELDS.items():
        if key not in det:
            raise SchemaError(src, f"detector.{key}", "present", "missing")
        if not ok(det[key]):
            raise SchemaError(src, f"detector.{key}", expected, _describe(det[key]))


def _validate_annotation(rec: Any, i: int, source: str, names, *, write: bool, checked: set) -> None:
    """Annotation `i` of an index: a labelled record whose label indexes `names` (when the index has them)."""
    where = f"{source} annotations[{i}]"
    _validate_record(rec, where, write=write, require_label=True, checked=checked)
    if names is not None and rec["label"] >= len(names):
        raise SchemaError(
            f"{where} [{_clip(rec['frame_dir'], 80)}]",
            "label",
            f"an index into label_names (< {len(names)})",
            _describe(rec["label"]),
        )


def validate_index(index: Any, *, source: str = "<index>", write: bool = False) -> None:
    """Check a dataset index: `split` + labelled `annotations`, splits naming existing clips.

    Also: no clip in both `<p>train` and `<p>val` of one protocol (`xsub_train` and
    `xsub_val`; `xsub_train` and `xview_val` may share clips), and where the index has
    `label_names`, every label indexes it.
    """
    if not isinstance(index, Mapping):
        raise SchemaError(source, "index", "a dict with 'split' and 'annotations'", _describe(index))
    for key in ("split", "annotations"):
        if key not in index:
            raise SchemaError(source, key, "present", "missing")
    split, anns = index["split"], index["annotations"]
    if not isinstance(anns, list):
        raise SchemaError(source, "annotations", "a list of records", _describe(anns))
    if not isinstance(split, Mapping):
        raise SchemaError(source, "split", "a dict {name: [frame_dir, ...]}", _describe(split))
    names = index.get("label_names")
    if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
        raise SchemaError(source, "label_names", "a list of class names (str)", _describe(names))
    checked: set = set()
    for i, rec in enumerate(anns):
        _validate_annotation(rec, i, source, names, write=write, checked=checked)
    validate_split(split, [rec["frame_dir"] for rec in anns], source=source)


def validate_split(split: Any, frame_dirs: list[str], *, source: str = "<index>") -> None:
    """Check an index's `split` against its clips' frame_dirs (in annotation order).

    frame_dirs are unique; every split is a list of str naming one of them; no clip is in both
    `<p>train` and `<p>val` of one protocol.
    """
    if not isinstance(split, Mapping):
        raise SchemaError(source, "split", "a dict {name: [frame_dir, ...]}", _describe(split))
    seen: set[str] = set()
    for i, fd in enumerate(frame_dirs):
        if fd in seen:
            raise SchemaError(source, f"annotations[{i}].frame_dir", "unique frame_dirs", f"duplicate {_short(fd)}")
        seen.add(fd)
    for name, clips in split.items():
        if (
            not isinstance(name, str)
            or not isinstance(clips, (list, tuple))
            or not all(isinstance(c, str) for c in clips)
        ):
            raise SchemaError(source, f"split[{_short(name)}]", "a list of frame_dir str", _describe(clips))
        missing = [c for c in clips if c not in seen]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SchemaError(
                source,
                f"split[{_short(name)}]",
                "clips present in annotations",
                f"unknown clip {_short(missing[0])}{more}",
            )
    _check_train_val(split, source)


def _check_train_val(split: Mapping, source: str) -> None:
    """No clip in both `<p>train` and `<p>val` of the same protocol prefix `p`."""
    for train in split:
        if not train.endswith("train") or train[:-5] + "val" not in split:
            continue
        val = train[:-5] + "val"
        train_clips = set(split[train])
        both = [c for c in split[val] if c in train_clips]
        if both:
            more = f" (and {len(both) - 1} more)" if len(both) > 1 else ""
            raise SchemaError(
                source,
                f"split[{_short(train)}] / split[{_short(val)}]",
                "disjoint train and val clips",
                f"clip {_short(both[0])} in both{more}",
            )


def is_index(obj: Any) -> bool:
    """True if `obj` looks like a dataset index rather than a single record."""
    return isinstance(obj, Mapping) and "annotations" in obj


# ------------------------------------------------------------------------------------------
# Reading and writing
# ------------------------------------------------------------------------------------------


def write_record(rec: Mapping, path: str | os.PathLike) -> None:
    """Validate (writer's rules) and write one pose record atomically; nothing on error."""
    validate_record(rec, source=str(path), write=True)
    save_pickle(dict(rec), path)


def read_record(path: str | os.PathLike) -> dict:
    """Read and validate one pose record."""
    rec = load_pickle(path)
    validate_record(rec, source=str(path))
    return rec


def write_index(index: Mapping, path: str | os.PathLike) -> None:
    """Validate (writer's rules) and write a dataset index atomically; nothing on error."""
    validate_index(index, source=str(path), write=True)
    save_pickle(dict(index), path)


def read_index(
    path: str | os.PathLike,
    *,
    kpfile_root: str | os.PathLike | None = None,
    box_thr: float | None = None,
    valid_ratio: float | None = None,
    max_person: int = pyskl.DEFAULT_MAX_PERSON,
) -> dict:
    """Read and validate a dataset index: ours, a published PYSKL pickle, or a compressed one.

    A compressed index (PYSKL's k400_hrnet.pkl: clips with `frame_inds`, keypoints in kpfiles)
    comes back decompressed, all in memory; `iter_records` streams it instead.

    Args:
        path: the index pickle.
        kpfile_root: folder of the kpfiles (default: the index's folder).
        box_thr, valid_ratio: PYSKL's / MMAction2's clip filter (`pipeline.pyskl`), off by
            default; for any index with `valid`.
        max_person: person slots per decompressed clip (PYSKL's DecompressPose default 10).

    Raises:
        SchemaError: the file breaks the contract or the compressed layout (one line naming
            file and clip); a bare list of records (custom_2d_skeleton.py output) says how to
            make an index of it.
        ValueError: an option out of range.
    """
    index = load_pickle(path)
    _refuse_bare_list(index, path)
    return _resolve_index(index, path, kpfile_root, box_thr, valid_ratio, max_person)


def _resolve_index(index: Any, path, kpfile_root, box_thr, valid_ratio, max_person) -> dict:
    if pyskl.is_compressed(index) or valid_ratio:
        stream = _stream(index, path, kpfile_root, box_thr, valid_ratio, max_person, True, validate=False)
        index = {**stream.header, "annotations": list(stream)}
    validate_index(index, source=str(path))
    return index


def _refuse_bare_list(obj: Any, path: str | os.PathLike) -> None:
    if isinstance(obj, list):
        raise SchemaError(
            str(path),
            "index",
            "a dict with 'split' and 'annotations'",
            f"a bare list of {len(obj)} records",
            hint=(
                "that is what PYSKL's custom_2d_skeleton.py writes; make an index of it with "
                f"`python -m pipeline index --poses {_clip(str(path), 200)} --dataset folder "
                "--labels labels.csv --out INDEX.pkl`"
            ),
        )


def read_any(path: str | os.PathLike) -> dict:
    """Read and validate a file that is either a dataset index (any `read_index` reads) or one pose record."""
    obj = load_pickle(path)
    _refuse_bare_list(obj, path)
    if is_index(obj):
        return _resolve_index(obj, path, None, None, None, pyskl.DEFAULT_MAX_PERSON)
    validate_record(obj, source=str(path))
    return obj


@dataclass
class RecordStream:
    """A dataset index read one record at a time: iterate once, in file order.

    Attributes:
        header: the index's top-level keys but `annotations` (`split`, `label_names` where
            present, ...); `split` without the dropped clips.
        dropped: frame_dirs removed by `valid_ratio`, in file order.
    """

    header: dict
    dropped: list[str]
    _records: Iterator[dict] = field(repr=False)
    _count: int = 0

    def __iter__(self) -> Iterator[dict]:
        return self._records

    def __len__(self) -> int:
        """Records the stream yields."""
        return self._count


def iter_records(
    path: str | os.PathLike,
    *,
    kpfile_root: str | os.PathLike | None = None,
    box_thr: float | None = None,
    valid_ratio: float | None = None,
    max_person: int = pyskl.DEFAULT_MAX_PERSON,
    squeeze: bool = True,
) -> RecordStream:
    """Stream a dataset index, compressed (k400_hrnet.pkl) or standard, one validated record at a time.

    Only the annotation file and the current kpfile are in memory; the structure, the splits
    (naming the clips that exist, train/val disjoint) and the filter are checked before the
    first record. Example:

        stream = iter_records("k400_hrnet.pkl")
        stream.header["split"]["train"], len(stream)
        for rec in stream: ...

    Args:
        path: the index pickle.
        kpfile_root: folder the `raw_file` paths are relative to (default: the index's folder).
        box_thr: PYSKL's box threshold, one of `pyskl.BOX_THRS`; acts only with valid_ratio.
        valid_ratio: keep clips with valid[box_thr] / total_frames >= valid_ratio and their
            instances with box_score >= box_thr; None or 0: all.
        max_person: person slots per decompressed clip (DecompressPose's max_person).
        squeeze: drop the frames without instances (DecompressPose's squeeze).

    Raises:
        SchemaError: the file, a clip or a kpfile breaks the layout, one line naming the file
            and the clip (on the call for the structure and the filter, while iterating for
            a clip's arrays and kpfile).
        ValueError: an option out of range.
    """
    index = load_pickle(path)
    _refuse_bare_list(index, path)
    return _stream(index, path, kpfile_root, box_thr, valid_ratio, max_person, squeeze, validate=True)


def _stream(index, path, kpfile_root, box_thr, valid_ratio, max_person, squeeze, *, validate: bool) -> RecordStream:
    source = str(path)
    if not isinstance(index, Mapping) or not isinstance(index.get("annotations"), list):
        raise SchemaError(source, "index", "a dict with 'split' and 'annotations' (a list)", _describe(index))
    anns = index["annotations"]
    for i, ann in enumerate(anns):
        fd = ann.get("frame_dir") if isinstance(ann, Mapping) else None
        if not isinstance(fd, str) or not fd:
            raise SchemaError(source, f"annotations[{i}].frame_dir", "a non-empty str", _describe(fd))
    validate_split(index.get("split"), [a["frame_dir"] for a in anns], source=source)
    try:
        header, dropped, pairs = pyskl.stream_clips(
            index,
            source=source,
            kpfile_root=Path(path).parent if kpfile_root is None else kpfile_root,
            load=load_pickle,
            box_thr=box_thr,
            valid_ratio=valid_ratio,
            max_person=max_person,
            squeeze=squeeze,
        )
    except pyskl.LayoutError as exc:
        raise _from_layout(exc) from None
    records = _checked(pairs, source, index.get("label_names"), validate=validate)
    return RecordStream(header=header, dropped=dropped, _records=records, _count=len(anns) - len(dropped))


def _from_layout(exc: pyskl.LayoutError) -> SchemaError:
    """A `pyskl.LayoutError` as a SchemaError with its one-line message (`<file> [clip X]: ...`)."""
    return SchemaError.plain(exc.source, exc.key, exc.message)


def _checked(pairs: Iterator[tuple[int, dict]], source: str, label_names, *, validate: bool) -> Iterator[dict]:
    checked: set = set()
    while True:
        try:
            i, rec = next(pairs)
        except StopIteration:
            return
        except pyskl.LayoutError as exc:
            raise _from_layout(exc) from None
        if validate:
            _validate_annotation(rec, i, source, label_names, write=False, checked=checked)
        yield rec


def summarize(obj: Mapping) -> str:
    """One line: clips, splits, persons and frames of an index or a record."""
    if is_index(obj):
        anns = obj["annotations"]
        splits = ", ".join(f"{k} {len(v)}" for k, v in obj["split"].items()) or "none"
        labels = {int(a["label"]) for a in anns}
        persons = [a["keypoint"].shape[0] for a in anns] or [0]
        frames = [int(a["total_frames"]) for a in anns] or [0]
        return (
            f"index: {len(anns)} clips, {len(labels)} classes, splits: {splits}; "
            f"persons {min(persons)}-{max(persons)}; frames {min(frames)}-{max(frames)} "
            f"(mean {np.mean(frames):.1f})"
        )
    m = obj["keypoint"].shape[0]
    h, w = obj["img_shape"]
    return (
        f"record {obj['frame_dir']}: 1 clip, splits: none; persons {m}; "
        f"frames {int(obj['total_frames'])}; image {w}x{h}"
    )

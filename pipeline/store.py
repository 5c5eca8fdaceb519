"""Dataset stores: a dataset index as flat memory-mapped arrays, opened in constant time (docs/architecture.md §3.4).

A PYSKL pickle is read whole by every process that opens it (NTU60, 827 MiB: about 30 s and 2.3 GiB). A store
holds the same content as one small metadata pickle plus one flat binary file per array field (nanoGPT's
`train.bin`), so opening it reads only the metadata and each clip's arrays are read when asked for:

    NAME.store/
      meta.pkl            restricted-unpickler pickle (`schema.load_pickle`), a few numpy arrays, never a dict per
                          clip: frame_dir (utf-8 bytes [N]), label, total_frames, persons M, img_shape [N, 2],
                          offset [N + 1], unusable code [N]; split {name: int32 positions}; label_names; the
                          index's other top-level keys; per-clip scalar extras as columns; sizes and sha256 of
                          every other file
      keypoint.bin        [F, 17, 2], F = sum over clips of M * T; clip i is rows offset[i]:offset[i + 1] in
                          [M, T] order; the source's dtype (published float16 stays float16), little-endian
      keypoint_score.bin  [F, 17]
      box.bin, box_score.bin   [F, 4] and [F], where every clip has them
      person_ids.bin      [P], P = sum of M, where every clip has them
      extras.pkl          per-clip values that are no column (estimator, cache, other tools' keys); read only
                          when a whole record is asked for (`clip`, `to_index`)

`pack` reads the clips twice, one at a time (a dataset larger than memory packs too): it validates every clip
(reader's rules, then `schema.validate_index`'s index-level checks) and records why a clip is unusable, then writes
the files into a hidden temporary folder renamed into place, so `NAME.store` is whole or absent. `open_dataset`
checks the metadata and that every file exists with exactly the size the metadata says (a truncated `.bin` is one
error naming the file and the first clip it cannot hold); it maps nothing: each process maps the files on first
access (`np.memmap`, read-only), and a pickled store carries its metadata, never the maps or their content.

`open_dataset` also takes a PYSKL pickle (`schema.read_index`), so both kinds answer the same `Dataset` interface.
A `Dataset` is also readable like the index dict (`ds["split"]`, `ds["annotations"]`, `ds.get("label_names")`):
code written for the dict reads a store, `ds["annotations"]` being a lazy sequence of `ds.clip(i)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import schema
from pipeline.atomic import _HOST, _pid_alive
from pipeline.progress import progress
from pipeline.unpickle import describe_value, restricted_loads

log = logging.getLogger(__name__)

FORMAT, VERSION = "skeleton-store", 1
META, EXTRAS = "meta.pkl", "extras.pkl"
UNUSABLE = (None, "no person", "zero frames", "all keypoint scores are zero")  # code -> reason
# field -> (row shape, rows per clip: "frame" = M * T or "person" = M, dtype kinds)
FIELDS = {
    "keypoint": ((schema.NUM_JOINTS, 2), "frame", "f"),
    "keypoint_score": ((schema.NUM_JOINTS,), "frame", "f"),
    "box": ((4,), "frame", "f"),
    "box_score": ((), "frame", "f"),
    "person_ids": ((), "person", "iu"),
}
_REQUIRED = ("keypoint", "keypoint_score")
_CORE = ("frame_dir", "label", "total_frames", "img_shape")
_INDEX_KEYS = ("split", "annotations", "label_names")
_ABSENT = object()
_INT64 = (-(2**63), 2**63 - 1)


class StoreError(schema.SchemaError):
    """A store is missing, truncated or inconsistent; the message names the file and what to do."""

    def __init__(self, source: str, message: str):
        ValueError.__init__(self, f"{source}: {message}")
        self.source, self.key, self.expected, self.actual = source, "", "", message


def unusable_reason(keypoint: np.ndarray, score: np.ndarray) -> str | None:
    """Why a clip holds no usable data (keypoint [M, T, 17, 2], score [M, T, 17]), or None."""
    if keypoint.shape[0] == 0:
        return "no person"
    if keypoint.shape[1] == 0:
        return "zero frames"
    if not np.any(score):
        return "all keypoint scores are zero"
    return None


# ------------------------------------------------------------------------------------------
# The interface both kinds answer
# ------------------------------------------------------------------------------------------


class Dataset:
    """A dataset's clips by position (0..len-1), for a store and a pickle alike; see the module docstring.

    Attributes:
        source: the file or folder, named in error messages.
    """

    source: str
    _position_of: dict[str, int] | None = None
    __iter__ = None  # neither a sequence of clips nor a dict of keys: use frame_dirs, clip(i) or keys()

    # --- per dataset (subclasses) ---
    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def frame_dirs(self) -> list[str]:
        raise NotImplementedError

    @property
    def labels(self) -> np.ndarray:
        """int64 [N]."""
        raise NotImplementedError

    @property
    def split(self) -> Mapping[str, list[str]]:
        raise NotImplementedError

    @property
    def label_names(self) -> list[str] | None:
        raise NotImplementedError

    @property
    def top(self) -> dict:
        """The index's top-level keys other than split, annotations and label_names."""
        raise NotImplementedError

    @property
    def dataset(self) -> str | None:
        """The dataset family (the index's `dataset` key, e.g. "ntu60"), or None."""
        name = self.top.get("dataset")
        return name if isinstance(name, str) else None

    def position(self, frame_dir: str) -> int:
        """The position of clip `frame_dir`; KeyError if there is none."""
        try:
            return self._positions()[frame_dir]
        except KeyError:
            raise KeyError(f"{self.source}: no clip {frame_dir!r}") from None

    def _positions(self) -> dict[str, int]:
        if self._position_of is None:
            self._position_of = {name: i for i, name in enumerate(self.frame_dirs)}
        return self._position_of

    # --- per clip (subclasses) ---
    def label(self, i: int) -> Any:
        raise NotImplementedError

    def pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(keypoint [M, T, 17, 2], keypoint_score [M, T, 17]) of clip i, in the source's dtype, not copied."""
        raise NotImplementedError

    def img_shape(self, i: int) -> tuple[int, int]:
        raise NotImplementedError

    def num_frames(self, i: int) -> int:
        raise NotImplementedError

    def num_persons(self, i: int) -> int:
        raise NotImplementedError

    def unusable(self, i: int) -> str | None:
        """Why clip i holds no usable data ("no person", "zero frames", "all keypoint scores are zero"), or None."""
        raise NotImplementedError

    def clip(self, i: int) -> dict:
        """The whole record of clip i (PYSKL keys + extras)."""
        raise NotImplementedError

    def to_index(self) -> dict:
        """The whole index dict (`{split, annotations, label_names?, ...}`), e.g. to write a PYSKL pickle."""
        raise NotImplementedError

    # --- read like the index dict ---
    def keys(self) -> list[str]:
        names = ["label_names"] if self.label_names is not None else []
        return ["split", "annotations", *names, *self.top]

    def __getitem__(self, key: str) -> Any:
        if key == "split":
            return self.split
        if key == "annotations":
            return Annotations(self)
        if key == "label_names" and self.label_names is not None:
            return self.label_names
        if key in self.top:
            return self.top[key]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


class Annotations(Sequence):
    """`ds["annotations"]`: the records of a Dataset, built on access (`ds.clip(i)`)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):  # noqa: ANN001
        if isinstance(i, slice):
            return [self.dataset.clip(j) for j in range(len(self))[i]]
        return self.dataset.clip(range(len(self))[i])


def as_dataset(obj: Any, *, source: str | os.PathLike | None = None) -> Dataset:
    """A Dataset from what callers hold: a Dataset, its `["annotations"]`, an index dict or a list of records."""
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, Annotations):
        return obj.dataset
    src = str(source) if source is not None else "<index>"
    if isinstance(obj, Mapping):
        return IndexDataset(obj, source=src)
    if isinstance(obj, (list, tuple)):
        return IndexDataset({"split": {}, "annotations": list(obj)}, source=src)
    raise TypeError(f"expected a dataset, an index dict or a list of records, got {type(obj).__name__}")


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a store folder (`StoreDataset`) or read a PYSKL pickle (`IndexDataset` over `schema.read_index`).

    Raises:
        SchemaError: the file or store breaks the contract (StoreError for a store), naming file and clip.
    """
    p = Path(path)
    if p.is_dir():
        return StoreDataset(p)
    return IndexDataset(schema.read_index(p), source=str(p))


def content_file(path: str | os.PathLike) -> Path:
    """The one file whose bytes identify a dataset's content: a pickle itself, or a store's meta.pkl (which holds
    the sha256 of every other file of the store), e.g. for a result cache's key."""
    p = Path(path)
    return p / META if p.is_dir() else p


# ------------------------------------------------------------------------------------------
# A pickle's content
# ------------------------------------------------------------------------------------------


class IndexDataset(Dataset):
    """An index dict behind the Dataset interface; its records and arrays are returned as they are.

    The dict may come unvalidated (tests, in-memory callers): `unusable(i)` checks the clip's shapes first and
    raises ValueError naming it.
    """

    def __init__(self, index: Mapping, *, source: str = "<index>"):
        self.index, self.source = index, source
        self._anns = index["annotations"]
        self._position_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._anns)

    @property
    def frame_dirs(self) -> list[str]:
        return [a["frame_dir"] for a in self._anns]

    def _positions(self) -> dict[str, int]:
        if self._position_of is None:
            found: dict[str, int] = {}
            for i, a in enumerate(self._anns):
                if a["frame_dir"] in found:
                    raise ValueError(f"{self.source}: duplicate annotation for clip {a['frame_dir']!r}")
                found[a["frame_dir"]] = i
            self._position_of = found
        return self._position_of

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([int(a["label"]) for a in self._anns], dtype=np.int64)

    @property
    def split(self) -> Mapping[str, list[str]]:
        return self.index["split"]

    @property
    def label_names(self) -> list[str] | None:
        names = self.index.get("label_names")
        return None if names is None else list(names)

    @property
    def top(self) -> dict:
        return {k: v for k, v in self.index.items() if k not in _INDEX_KEYS}

    def __getitem__(self, key: str) -> Any:
        return self.index[key]

    def keys(self) -> list[str]:
        return list(self.index)

    def label(self, i: int) -> Any:
        return self._anns[i].get("label")

    def pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        rec = self._anns[i]
        return rec["keypoint"], rec["keypoint_score"]

    def img_shape(self, i: int) -> tuple[int, int]:
        return tuple(int(s) for s in self._anns[i]["img_shape"])

    def num_frames(self, i: int) -> int:
        return int(np.shape(self._anns[i]["keypoint"])[1])

    def num_persons(self, i: int) -> int:
        return int(np.shape(self._anns[i]["keypoint"])[0])

    def unusable(self, i: int) -> str | None:
        rec = self._anns[i]
        kp, score = np.asarray(rec["keypoint"]), np.asarray(rec["keypoint_score"])
        name = rec["frame_dir"]
        if kp.ndim != 4 or kp.shape[2:] != (schema.NUM_JOINTS, 2) or score.shape != kp.shape[:3]:
            raise ValueError(
                f"{name}: expected keypoint [M, T, 17, 2] and keypoint_score [M, T, 17], got {kp.shape} and {score.shape}"
            )
        if kp.shape[1] != rec.get("total_frames", kp.shape[1]):
            raise ValueError(f"{name}: total_frames {rec['total_frames']} != keypoint frames {kp.shape[1]}")
        return unusable_reason(kp, score)

    def clip(self, i: int) -> dict:
        return self._anns[i]

    def to_index(self) -> dict:
        return dict(self.index)


# ------------------------------------------------------------------------------------------
# A store folder
# ------------------------------------------------------------------------------------------


class StoreDataset(Dataset):
    """A `NAME.store/` folder (module docstring): metadata read and checked at open, arrays mapped on first use."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.source = str(self.path)
        self._setup(_read_meta(self.path), None)

    def _setup(self, meta: dict, stats: dict | None) -> None:
        for a in [*meta.values(), *meta["split"].values()]:
            if isinstance(a, np.ndarray):
                a.flags.writeable = False  # `labels` and the splits are handed out: nobody edits the metadata
        self._meta = meta
        self._n = len(meta["frame_dir"])
        rows = {"frame": meta["offset"], "person": np.concatenate([[0], np.cumsum(meta["persons"])])}
        self._rows = {name: rows[FIELDS[name][1]] for name in meta["fields"]}
        self._stats = _check_files(self.path, meta, self._rows) if stats is None else stats
        self._maps: dict[str, np.ndarray] = {}
        self._names: list[str] | None = None
        self._position_of: dict[str, int] | None = None
        self._split: dict[str, list[str]] | None = None
        self._extras: dict | None = None

    def __getstate__(self) -> dict:
        """The path and the checked metadata (a few arrays); maps, caches and array content stay behind."""
        return {"path": str(self.path), "meta": self._meta, "stats": self._stats}

    def __setstate__(self, state: dict) -> None:
        self.path, self.source = Path(state["path"]), state["path"]
        self._setup(state["meta"], state["stats"])

    def __len__(self) -> int:
        return self._n

    @property
    def frame_dirs(self) -> list[str]:
        if self._names is None:
            self._names = _decode(self._meta["frame_dir"])
        return self._names

    @property
    def labels(self) -> np.ndarray:
        return self._meta["label"]

    @property
    def split(self) -> dict[str, list[str]]:
        if self._split is None:
            names = self.frame_dirs
            self._split = {k: [names[p] for p in pos.tolist()] for k, pos in self._meta["split"].items()}
        return self._split

    @property
    def label_names(self) -> list[str] | None:
        names = self._meta["label_names"]
        return None if names is None else list(names)

    @property
    def top(self) -> dict:
        return self._meta["top"]

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        """Field -> the dtype of its file."""
        return {name: np.dtype(dt) for name, dt in self._meta["fields"].items()}

    def _at(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= i < self._n:
            raise IndexError(f"{self.source}: clip position {i!r} outside [0, {self._n})")
        return int(i)

    def _map(self, name: str) -> np.ndarray:
        """The whole field `name` as a read-only array over its file, mapped once per process."""
        arr = self._maps.get(name)
        if arr is None:
            path = self.path / f"{name}.bin"
            st = path.stat()
            if (st.st_size, st.st_mtime_ns, st.st_ino) != tuple(self._stats[name]):
                raise StoreError(str(path), "changed since the store was opened (re-packed?); open it again")
            shape = (int(self._rows[name][-1]), *FIELDS[name][0])
            dtype = np.dtype(self._meta["fields"][name])
            if shape[0] == 0:  # mmap cannot map an empty file
                arr = np.empty(shape, dtype=dtype)
            else:
                arr = np.memmap(path, dtype=dtype, mode="r", shape=shape).view(np.ndarray)
            self._maps[name] = arr
        return arr

    def _field(self, name: str, i: int) -> np.ndarray:
        m, t = int(self._meta["persons"][i]), int(self._meta["total_frames"][i])
        rows = self._rows[name]
        flat = self._map(name)[rows[i] : rows[i + 1]]
        lead = (m, t) if FIELDS[name][1] == "frame" else (m,)
        return flat.reshape(*lead, *FIELDS[name][0])

    def label(self, i: int) -> int:
        return int(self._meta["label"][self._at(i)])

    def pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        i = self._at(i)
        return self._field("keypoint", i), self._field("keypoint_score", i)

    def img_shape(self, i: int) -> tuple[int, int]:
        h, w = self._meta["img_shape"][self._at(i)].tolist()
        return (h, w)

    def num_frames(self, i: int) -> int:
        return int(self._meta["total_frames"][self._at(i)])

    def num_persons(self, i: int) -> int:
        return int(self._meta["persons"][self._at(i)])

    def unusable(self, i: int) -> str | None:
        return UNUSABLE[int(self._meta["unusable"][self._at(i)])]

    def clip(self, i: int) -> dict:
        i = self._at(i)
        meta = self._meta
        values: dict[str, Any] = {
            "frame_dir": self.frame_dirs[i],
            "label": int(meta["label"][i]),
            "total_frames": int(meta["total_frames"][i]),
            "img_shape": _pair(meta["img_shape"][i], "list" if meta["img_shape_list"][i] else "tuple"),
        }
        for name in meta["fields"]:
            values[name] = self._field(name, i)
        for key, col in meta["columns"].items():
            if col["present"] is None or col["present"][i]:
                values[key] = _column_value(col, i)
        if meta["extras"]:
            for key, ex in self._load_extras().items():
                j = int(ex["index"][i])
                if j >= 0:
                    values[key] = ex["values"][j]
        return {k: values[k] for k in meta["record_keys"] if k in values}

    def _load_extras(self) -> dict:
        if self._extras is None:
            path = self.path / EXTRAS
            extras = schema.load_pickle(path)
            ok = isinstance(extras, dict) and sorted(extras) == sorted(self._meta["extras"])
            ok = ok and all(
                isinstance(e, dict) and isinstance(e.get("values"), list) and _is_int_vector(e.get("index"), self._n)
                for e in extras.values()
            )
            ok = ok and all(int(e["index"].max(initial=-1)) < len(e["values"]) for e in extras.values())
            if not ok:
                raise StoreError(str(path), f"not the extras {self._meta['extras']} of this store; re-pack it")
            self._extras = extras
        return self._extras

    def to_index(self) -> dict:
        index: dict[str, Any] = {"split": {k: list(v) for k, v in self.split.items()}}
        index["annotations"] = [self.clip(i) for i in range(self._n)]
        if self.label_names is not None:
            index["label_names"] = self.label_names
        index.update(self.top)
        return index

    def verify(self) -> None:
        """Check every file against the sha256 written at pack time (reads them all)."""
        for name, want in self._meta["files"].items():
            path = self.path / name
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            if h.hexdigest() != want["sha256"]:
                raise StoreError(str(path), "content differs from the sha256 written at pack time; re-pack it")


def _pair(v: np.ndarray, kind: str) -> tuple | list:
    a, b = v.tolist()
    return [a, b] if kind == "list" else (a, b)


def _column_value(col: dict, i: int) -> Any:
    if col["kind"] in ("tuple", "list"):
        return _pair(col["values"][i], col["kind"])
    return col["values"][i].item()


def _is_int_vector(a: Any, length: int | None = None) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind in "iu" and a.ndim == 1 and length in (None, len(a))


# ------------------------------------------------------------------------------------------
# Opening: the metadata and the files are checked before anything is used
# ------------------------------------------------------------------------------------------


def _read_meta(path: Path) -> dict:
    """meta.pkl, read with the restricted unpickler and checked for consistency."""
    src = str(path / META)
    if not (path / META).is_file():
        raise StoreError(str(path), f"not a store: no {META}; pack one with `python -m pipeline pack INDEX.pkl OUT`")
    meta = schema.load_pickle(path / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(src, f"not {FORMAT} metadata")
    if meta.get("version") != VERSION:
        raise StoreError(src, f"store version {meta.get('version')!r}; this code reads version {VERSION}; re-pack it")
    keys = ("frame_dir", "label", "total_frames", "persons", "img_shape", "img_shape_list", "offset", "unusable")
    keys += ("fields", "split", "label_names", "top", "columns", "extras", "record_keys", "files")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise StoreError(src, f"metadata lacks {missing}; re-pack it")

    def bad(key: str, expected: str) -> StoreError:
        return StoreError(src, f"{key}: expected {expected}, got {describe_value(meta[key])}; re-pack it")

    names = meta["frame_dir"]
    if not isinstance(names, np.ndarray) or names.dtype.kind != "S" or names.ndim != 1:
        raise bad("frame_dir", "a bytes array [N]")
    n = len(names)
    for key, shape, low in (("label", (n,), 0), ("total_frames", (n,), 0), ("persons", (n,), 0)):
        a = meta[key]
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.shape != shape or (n and a.min() < low):
            raise bad(key, f"ints >= {low} [{n}]")
    shapes = meta["img_shape"]
    if not isinstance(shapes, np.ndarray) or shapes.dtype.kind not in "iu" or shapes.shape != (n, 2):
        raise bad("img_shape", f"ints [{n}, 2]")
    if n and shapes.min() <= 0:
        raise bad("img_shape", "positive sizes")
    codes = meta["unusable"]
    if not isinstance(codes, np.ndarray) or codes.shape != (n,) or (n and not 0 <= codes.min() <= codes.max() < 4):
        raise bad("unusable", f"codes 0-3 [{n}]")
    offset = meta["offset"]
    sizes = meta["persons"].astype(np.int64) * meta["total_frames"]
    if (
        not isinstance(offset, np.ndarray)
        or offset.shape != (n + 1,)
        or offset[0] != 0
        or not np.array_equal(np.diff(offset), sizes)
    ):
        raise StoreError(src, "offset: not the running sum of persons x frames of the clips; re-pack it")
    fields = meta["fields"]
    if not isinstance(fields, dict) or any(k not in fields for k in _REQUIRED) or any(k not in FIELDS for k in fields):
        raise bad("fields", f"{list(_REQUIRED)} and optionally {[k for k in FIELDS if k not in _REQUIRED]}")
    for name, dt in fields.items():
        if not isinstance(dt, str) or len(dt) > 8 or np.dtype(dt).kind not in FIELDS[name][2]:
            raise StoreError(src, f"fields[{name!r}]: dtype {dt!r} is not of kind {FIELDS[name][2]}; re-pack it")
    lists = meta["img_shape_list"]
    if not isinstance(lists, np.ndarray) or lists.dtype != np.bool_ or lists.shape != (n,):
        raise bad("img_shape_list", f"bools [{n}] (True: the record's img_shape is a list)")
    _check_meta_index(meta, src, n)
    _check_meta_extras(meta, src, n)
    if len(set(names.tolist())) != n:
        raise StoreError(src, "frame_dir: duplicate clip names; re-pack it")
    return meta


def _check_meta_index(meta: dict, src: str, n: int) -> None:
    """Splits name existing positions, train/val disjoint; labels index label_names."""
    split = meta["split"]
    if not isinstance(split, dict):
        raise StoreError(src, "split: not a dict {name: positions}; re-pack it")
    names = meta["frame_dir"]
    for name, pos in split.items():
        if not isinstance(name, str) or not _is_int_vector(pos):
            raise StoreError(src, f"split[{name!r}]: not an int array of clip positions; re-pack it")
        outside = pos[(pos < 0) | (pos >= n)]
        if len(outside):
            raise StoreError(
                src, f"split[{name!r}] names clip position {int(outside[0])}, absent (the store holds {n})"
            )
    for train in split:
        val = train[:-5] + "val"
        if train.endswith("train") and val in split:
            both = np.intersect1d(split[train], split[val])
            if len(both):
                clip = names[both[0]].decode("utf-8", "replace")
                raise StoreError(src, f"split[{train!r}] and split[{val!r}] share clip {clip!r}; re-pack it")
    label_names = meta["label_names"]
    if label_names is not None:
        if not isinstance(label_names, list) or not all(isinstance(s, str) for s in label_names):
            raise StoreError(src, "label_names: not a list of str; re-pack it")
        if n and meta["label"].max() >= len(label_names):
            i = int(np.argmax(meta["label"] >= len(label_names)))
            clip = names[i].decode("utf-8", "replace")
            raise StoreError(src, f"clip {clip!r}: label {int(meta['label'][i])} >= {len(label_names)} label_names")
    if not isinstance(meta["top"], dict) or any(k in meta["top"] for k in _INDEX_KEYS):
        raise StoreError(src, "top: not a dict of the index's other keys; re-pack it")


def _check_meta_extras(meta: dict, src: str, n: int) -> None:
    """Columns [N] of a known kind, the extras' keys, record_keys, files."""
    for key, col in (meta["columns"] or {}).items():
        ok = isinstance(col, dict) and col.get("kind") in ("int", "float", "bool", "str", "tuple", "list")
        values, present = (col.get("values"), col.get("present")) if ok else (None, None)
        want = (n, 2) if ok and col["kind"] in ("tuple", "list") else (n,)
        ok = ok and isinstance(values, np.ndarray) and values.shape == want
        ok = ok and (present is None or (isinstance(present, np.ndarray) and present.shape == (n,)))
        if not ok:
            raise StoreError(src, f"columns[{key!r}]: not a column of {n} values; re-pack it")
    if not isinstance(meta["extras"], list) or not isinstance(meta["record_keys"], list):
        raise StoreError(src, "extras / record_keys: not lists; re-pack it")
    files = meta["files"]
    want_files = {f"{name}.bin" for name in meta["fields"]} | ({EXTRAS} if meta["extras"] else set())
    if not isinstance(files, dict) or set(files) != want_files:
        raise StoreError(src, f"files: expected {sorted(want_files)}; re-pack it")


def _check_files(path: Path, meta: dict, rows: dict[str, np.ndarray]) -> dict:
    """Every file exists with the size the metadata says; returns {field: (size, mtime_ns, inode)}."""
    stats = {}
    names = meta["frame_dir"]
    for name, dt in meta["fields"].items():
        file = path / f"{name}.bin"
        row_bytes = np.dtype(dt).itemsize * int(np.prod(FIELDS[name][0], dtype=np.int64))
        expected = int(rows[name][-1]) * row_bytes
        if meta["files"][file.name]["bytes"] != expected:
            raise StoreError(str(path / META), f"files[{file.name!r}]: size disagrees with the offsets; re-pack it")
        try:
            st = file.stat()
        except FileNotFoundError:
            raise StoreError(str(file), "missing; re-pack the store") from None
        if st.st_size < expected:
            first = int(np.searchsorted(rows[name][1:], st.st_size // row_bytes, side="right"))
            clip = names[first].decode("utf-8", "replace")
            raise StoreError(
                str(file),
                f"truncated ({st.st_size} bytes, expected {expected}): clip {clip} and later cannot be read; re-pack it",
            )
        if st.st_size > expected:
            raise StoreError(str(file), f"{st.st_size} bytes, expected {expected}: not this store's file; re-pack it")
        stats[name] = (st.st_size, st.st_mtime_ns, st.st_ino)
    if meta["extras"]:
        file = path / EXTRAS
        size = file.stat().st_size if file.is_file() else None
        if size != meta["files"][EXTRAS]["bytes"]:
            got = "missing" if size is None else f"{size} bytes, expected {meta['files'][EXTRAS]['bytes']}"
            raise StoreError(str(file), f"{got}; re-pack the store")
    return stats


# ------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------


def pack(index_or_records: Any, out_dir: str | os.PathLike, *, source: str | os.PathLike | None = None) -> StoreDataset:
    """Write a store from an index dict, a Dataset or a list of labelled records; atomically, nothing on error.

    Two passes over the clips, one clip in memory at a time (a Dataset larger than memory packs too): the first
    validates every clip (`schema.validate_record`, reader's rules: float16 is kept; then the index-level checks of
    `schema.validate_index`: unique names, splits naming existing clips, disjoint train/val, labels within
    label_names) and gathers the per-clip metadata, the second writes the arrays, each field in the dtype its
    clips have (numpy's common type where they differ).

    Args:
        index_or_records: the content.
        out_dir: the store folder (by convention `NAME.store`); an existing store there is replaced.
        source: where the content came from, named in errors and kept in the metadata.

    Raises:
        SchemaError: a clip breaks the contract, or `out_dir` exists and is not a store.
    """
    src = str(source) if source is not None else "<index>"
    data = as_dataset(index_or_records, source=src)
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (out / META).is_file()):
        raise StoreError(str(out), "exists and is not a store; remove it or write the store elsewhere")
    meta, values = _scan(data, src)
    position = {name: i for i, name in enumerate(_decode(meta["frame_dir"]))}
    meta.update(
        format=FORMAT,
        version=VERSION,
        split={k: np.asarray([position[c] for c in v], dtype=np.int32) for k, v in data.split.items()},
        label_names=data.label_names,
        top=dict(data.top),
        source=src,
    )
    fields = {name: np.dtype(dt) for name, dt in meta["fields"].items()}
    with _staging(out) as tmp:
        meta["files"], late = _write_fields(data, fields, tmp, collect=[k for k in FIELDS if k in values])
        meta["columns"], extras = _extra_columns({**values, **late})
        meta["extras"] = sorted(extras)
        if extras:
            meta["files"][EXTRAS] = _write_pickle(tmp / EXTRAS, extras)
        _write_pickle(tmp / META, meta)
    ds = StoreDataset(out)
    log.info("packed %d clips from %s into %s", len(ds), src, out)
    return ds


def _scan(data: Dataset, src: str) -> tuple[dict, dict[str, list]]:
    """Pass 1: every clip validated; the per-clip metadata arrays, the flat fields' dtypes, the record keys in
    first-seen order, and {key: [value or _ABSENT per clip]} of the keys that are no flat field (yet)."""
    n = len(data)
    cols: dict[str, list] = {k: [] for k in ("frame_dir", "label", "total_frames", "persons", "img_shape")}
    lists, codes = [], []
    dtypes: dict[str, set] = {name: set() for name in FIELDS}
    keys: dict[str, None] = {}
    values: dict[str, list] = {}
    stub_kp, stub_score = np.zeros((0, 0, schema.NUM_JOINTS, 2), np.float32), np.zeros((0, 0, schema.NUM_JOINTS))
    stubs = []  # what validate_index needs of each clip, no array: its index-level checks run on these
    for i in progress(range(n), desc="pack: check", disable=n < 10_000):
        rec = data.clip(i)
        schema.validate_record(rec, source=f"{src} annotations[{i}]", require_label=True)
        name = rec["frame_dir"]
        if name.endswith("\0"):
            raise StoreError(src, f"clip {name!r}: a frame_dir ending in NUL cannot be stored")
        kp = rec["keypoint"]
        for key, v in zip(cols, (name.encode("utf-8"), int(rec["label"]), int(rec["total_frames"]), kp.shape[0])):
            cols[key].append(v)
        cols["img_shape"].append([int(s) for s in rec["img_shape"]])
        lists.append(type(rec["img_shape"]) is list)
        codes.append(UNUSABLE.index(unusable_reason(kp, rec["keypoint_score"])))
        for key in rec:
            if key not in keys:
                keys[key] = None
                if key not in _CORE and key not in _REQUIRED:
                    values[key] = [_ABSENT] * i
        for key, column in values.items():
            v = rec.get(key, _ABSENT)
            if key in FIELDS:  # a flat file if every clip has it: only its dtype is needed now
                if v is not _ABSENT:
                    dtypes[key].add(v.dtype)
                v = v is not _ABSENT
            column.append(v)
        for key in _REQUIRED:
            dtypes[key].add(rec[key].dtype)
        stubs.append({"frame_dir": name, "label": rec["label"], "total_frames": 0, "img_shape": (1, 1)})
        stubs[-1].update(keypoint=stub_kp, keypoint_score=stub_score)
    index = {"split": data.split, "annotations": stubs}
    if data.label_names is not None:
        index["label_names"] = data.label_names
    schema.validate_index(index, source=src)
    fields = {}
    for name in FIELDS:
        if name in _REQUIRED or (n and name in values and all(values[name])):
            dt = np.result_type(*dtypes[name]) if dtypes[name] else np.dtype(np.float32)
            fields[name] = dt.newbyteorder("<").str
            values.pop(name, None)
    persons, frames = np.asarray(cols["persons"], np.int64), np.asarray(cols["total_frames"], np.int64)
    names = cols["frame_dir"]
    meta = {
        "frame_dir": np.asarray(names, dtype=f"S{max((len(b) for b in names), default=1)}"),
        "label": np.asarray(cols["label"], dtype=np.int64),
        "total_frames": frames,
        "persons": persons,
        "img_shape": np.asarray(cols["img_shape"], dtype=np.int64).reshape(-1, 2),
        "img_shape_list": np.asarray(lists, dtype=np.bool_),
        "offset": np.concatenate([[0], np.cumsum(persons * frames)]).astype(np.int64),
        "unusable": np.asarray(codes, dtype=np.int8),
        "fields": fields,
        "record_keys": list(keys),
    }
    return meta, values


def _decode(names: np.ndarray) -> list[str]:
    return [b.decode("utf-8") for b in names.tolist()]


def _extra_columns(values: dict[str, list]) -> tuple[dict, dict]:
    """Per-clip keys: scalar columns where their values allow, the rest (deduplicated) for extras.pkl."""
    columns, extras = {}, {}
    for key, column in values.items():
        col = _as_column(column)
        if col is not None:
            columns[key] = col
            continue
        unique: dict[bytes, int] = {}
        index = np.full(len(column), -1, dtype=np.int32)
        kept = []
        for i, v in enumerate(column):
            if v is _ABSENT:
                continue
            j = unique.setdefault(pickle.dumps(v, protocol=4), len(kept))  # equal pickles: equal values, kept once
            if j == len(kept):
                kept.append(v)
            index[i] = j
        extras[key] = {"values": kept, "index": index}
    return columns, extras


def _as_column(values: list) -> dict | None:
    """A column {kind, values [N] (or [N, 2]), present} when every present value is one builtin scalar type."""
    given = [v for v in values if v is not _ABSENT]
    present = None if len(given) == len(values) else np.asarray([v is not _ABSENT for v in values])
    types = {type(v) for v in given}
    if len(types) != 1:
        return None
    (kind,) = types
    if kind in (tuple, list):
        ok = all(len(v) == 2 and all(type(x) is int and _INT64[0] <= x <= _INT64[1] for x in v) for v in given)
        fill, dtype = (0, 0), np.int64
    elif kind is int:
        ok, fill, dtype = all(_INT64[0] <= v <= _INT64[1] for v in given), 0, np.int64
    elif kind is float:
        ok, fill, dtype = True, 0.0, np.float64
    elif kind is bool:
        ok, fill, dtype = True, False, np.bool_
    elif kind is str:
        ok, fill, dtype = not any(v.endswith("\0") for v in given), "", np.str_
    else:
        return None
    if not ok:
        return None
    full = [fill if v is _ABSENT else (list(v) if kind in (tuple, list) else v) for v in values]
    return {"kind": kind.__name__, "values": np.asarray(full, dtype=dtype), "present": present}


def _write_fields(
    data: Dataset, fields: dict[str, np.dtype], folder: Path, *, collect: list[str]
) -> tuple[dict, dict[str, list]]:
    """Pass 2: one flat file per field, clip after clip. Returns ({file: {bytes, sha256}}, {key: [value per clip]}
    of the `collect` keys, fields that only some clips have, which go to extras.pkl)."""
    files, late = {}, {key: [] for key in collect}
    with contextlib.ExitStack() as stack:
        handles = {name: stack.enter_context(open(folder / f"{name}.bin", "wb", buffering=1 << 20)) for name in fields}
        hashes = {name: hashlib.sha256() for name in fields}
        for i in progress(range(len(data)), desc="pack: write", disable=len(data) < 10_000):
            rec = data.clip(i)
            for name, dt in fields.items():
                arr = np.ascontiguousarray(rec[name], dtype=dt)
                handles[name].write(arr.data)
                hashes[name].update(arr.data)
            for key, column in late.items():
                column.append(rec.get(key, _ABSENT))
        for name, fh in handles.items():
            fh.flush()
            os.fsync(fh.fileno())
            files[f"{name}.bin"] = {"bytes": fh.tell(), "sha256": hashes[name].hexdigest()}
    return files, late


def _write_pickle(path: Path, obj: Any) -> dict:
    """`obj` pickled portably, checked to load with the restricted unpickler; returns {bytes, sha256}."""
    data = schema.dumps_portable(obj)
    restricted_loads(data)  # never write what open_dataset or export would refuse
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)@(?P<host>.*)-[A-Za-z0-9_]{8}$")


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out`, renamed to `out` on clean exit (an old store there is replaced); removed on
    error or Ctrl-C. A killed writer leaves only the hidden folder, removed by the next pack into that folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}@{_HOST}-", dir=out.parent))
    try:
        yield tmp
        _fsync_dir(tmp)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}@{_HOST}-", dir=out.parent))
            os.replace(out, old)  # onto the empty folder: the name `out` is free for the rename below
        os.rename(tmp, out)
        _fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_staging(folder: Path) -> None:
    """Remove the staging folders of packs on this host whose process is gone."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as it:
        for entry in it:
            m = _STAGING.match(entry.name)
            if m and m["host"] == _HOST and entry.is_dir(follow_symlinks=False) and not _pid_alive(int(m["pid"])):
                log.info("removing %s, left by a killed pack", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# Export and summary
# ------------------------------------------------------------------------------------------


def export_pyskl(dataset: Dataset, out: str | os.PathLike) -> None:
    """Write `dataset` as a PYSKL pickle (atomically), arrays in the store's dtypes.

    The reader's rules are checked (`schema.validate_index`), not the writer's: a store packed from a published
    float16 pickle exports float16, as the round trip pickle -> store -> pickle must give the source back.
    """
    index = dataset.to_index()
    schema.validate_index(index, source=str(out))
    schema.save_pickle(index, out)


def summarize(dataset: Dataset) -> str:
    """One line: clips, classes, splits, persons, frames (and dtypes, for a store); reads no array."""
    if not isinstance(dataset, StoreDataset):
        return schema.summarize(dataset.to_index())
    meta = dataset._meta
    splits = ", ".join(f"{k} {len(v)}" for k, v in meta["split"].items()) or "none"
    persons, frames = meta["persons"], meta["total_frames"]
    n = len(dataset)
    span = lambda a: f"{a.min()}-{a.max()}" if n else "0-0"
    dtypes = ", ".join(f"{k} {np.dtype(v).name}" for k, v in meta["fields"].items())
    return (
        f"store: {n} clips, {len(np.unique(meta['label']))} classes, splits: {splits}; persons {span(persons)}; "
        f"frames {span(frames)} (mean {frames.mean() if n else 0:.1f}); {dtypes}"
    )

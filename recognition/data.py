"""Torch dataset over a dataset's clips (a store or a PYSKL pickle), docs/method.md §2 applied per item.

The clips come from the object `pipeline.store.open_dataset` returns (or an index dict, or a list of records): the
dataset keeps only each clip's position, label and image size, and reads the clip's keypoint/score arrays in
`__getitem__` (from the memory-mapped store, or the pickle's arrays in memory), keeps the two highest-scoring persons
(`select_two_persons`) and runs `recognition.preprocess.preprocess_clip`, so memory stays at the raw size (or at the
metadata, for a store) rather than a dense [N, 2, 243, 17, 3] tensor. Randomness is a pure function of
(seed, epoch, index): results do not depend on the number of DataLoader workers and a resumed run replays the same
draws.

`make_dataset` builds a split's dataset from a run config (train, evaluate); `require_clips` and
`no_clips_message` say why a split holds no usable clip; `label_names_of` names the classes of an index.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline import store
from recognition.config import TrainConfig
from recognition.preprocess import PreprocessOptions, preprocess_clip, resample_indices, select_two_persons

log = logging.getLogger(__name__)


def split_frame_dirs(index: Any, split: str, *, source: str | Path | None = None) -> list[str]:
    """The clip names of split `split` (e.g. "xsub_train") of a dataset.

    Args:
        index: what `pipeline.store.open_dataset` returns, or an index dict `{split, annotations}`.
        split: the split name.
        source: the dataset file's path, named in the error messages.

    Raises:
        ValueError: the split does not exist (the message lists the available ones), or it names a clip that has
            no annotation.
    """
    data = store.as_dataset(index, source=source)
    where = f" of {source}" if source is not None else ""
    splits = data.split
    if split not in splits:
        raise ValueError(f"unknown split {split!r}{where}; available: {sorted(splits)}")
    names = list(splits[split])
    missing = [n for n in names if not _has_clip(data, n)]
    if missing:
        raise ValueError(
            f"split {split!r}{where} names {len(missing)} clip(s) with no annotation, first: {missing[0]!r}"
        )
    return names


def _has_clip(data: store.Dataset, name: str) -> bool:
    try:
        data.position(name)
    except KeyError:
        return False
    return True


def _check_label(name: str, label: Any, num_classes: int) -> None:
    if (
        label is None
        or isinstance(label, bool)
        or not isinstance(label, (int, np.integer))
        or not 0 <= label < num_classes
    ):
        raise ValueError(f"{name}: label {label!r} is not an int in [0, {num_classes})")


class _PoseColumn:
    """`ds.keypoints[i]` / `ds.scores[i]`: one array of item i's (two kept persons'), read on access."""

    def __init__(self, ds: SkeletonDataset, which: int) -> None:
        self.ds, self.which = ds, which

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ds.pose(index)[self.which]


class SkeletonDataset(Dataset):
    """Clips named by `frame_dirs` -> (float32 tensor [M=2, T=clip_len, V=17, C=3], label).

    Args:
        annotations: the clips: what `pipeline.store.open_dataset` returns (a store or a pickle), an index dict, or
            PYSKL records (`frame_dir`, `label`, `img_shape`, `keypoint`, `keypoint_score`, ...).
        frame_dirs: the clips to use, in this order (see `split_frame_dirs`).
        train: training path (random draws per item) or deterministic test path.
        opts: preprocessing switches.
        seed: base of every random draw.
        num_classes: labels must lie in [0, num_classes).
        noise_sigma: Gaussian noise of docs/method.md §8(a) (0: none).
        noise_per_person: independent noise per person (False: official broadcast, F6).
        skip_bad: skip clips with no data (zero persons or frames, all-zero scores) instead of raising; their names
            go to `self.skipped`.

    Attributes:
        skipped: names of the skipped clips.
        positions: each item's position in the source dataset.
        crowded: names of the clips with more than 2 persons (`person_selection` says which two are kept).
        keypoints, scores: `keypoints[i]` [M<=2, T0, 17, 2] and `scores[i]` [M<=2, T0, 17] float32 of item i, the
            two kept persons, read on access.
    """

    def __init__(
        self,
        *,
        annotations: Any,
        frame_dirs: list[str],
        train: bool,
        opts: PreprocessOptions,
        seed: int,
        num_classes: int,
        noise_sigma: float = 0.0,
        noise_per_person: bool = True,
        skip_bad: bool = False,
    ) -> None:
        data = store.as_dataset(annotations)
        self.data = data
        self.train, self.opts, self.seed = train, opts, seed
        self.noise_sigma, self.noise_per_person = noise_sigma, noise_per_person
        self.epoch = 0
        self.skipped: list[str] = []
        self.names: list[str] = []
        self.labels: list[int] = []
        self.img_shapes: list[tuple[int, int]] = []
        self.positions: list[int] = []
        for name in frame_dirs:
            try:
                pos = data.position(name)
            except KeyError:
                raise ValueError(f"clip {name!r} has no annotation") from None
            label = data.label(pos)
            _check_label(name, label, num_classes)
            bad = data.unusable(pos)
            if bad is not None:
                if not skip_bad:
                    raise ValueError(f"{name}: {bad}; pass skip_bad=True to skip such clips")
                log.warning("skipping clip %s: %s", name, bad)
                self.skipped.append(name)
                continue
            self.names.append(name)
            self.labels.append(int(label))
            self.img_shapes.append(data.img_shape(pos))
            self.positions.append(pos)
        self.crowded = [n for n, p in zip(self.names, self.positions) if data.num_persons(p) > 2]
        self.keypoints, self.scores = _PoseColumn(self, 0), _PoseColumn(self, 1)
        # F5 (official): training frame indices drawn once, here, and reused every epoch.
        self.fixed_indices: list[np.ndarray] | None = None
        if train and not opts.resample_per_item:
            rng = np.random.default_rng([seed])
            self.fixed_indices = [
                resample_indices(data.num_frames(p), opts.clip_len, train=True, rng=rng) for p in self.positions
            ]

    def pose(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Item `index`'s (keypoint [M<=2, T0, 17, 2], score [M<=2, T0, 17]) float32, raw pixels, two persons kept."""
        kp, score = self.data.pose(self.positions[index])
        kp = np.asarray(kp, dtype=np.float32)  # no copy when already float32
        score = np.asarray(score, dtype=np.float32)
        kp, score, _ = select_two_persons(kp, score)
        return kp, score

    @property
    def person_selection(self) -> dict[str, list[int]]:
        """frame_dir -> kept person slots, for the clips that have more than 2 persons (reads their scores)."""
        crowded, out = set(self.crowded), {}
        for name, pos in zip(self.names, self.positions):
            if name in crowded:
                kp, score = self.data.pose(pos)
                out[name] = select_two_persons(np.asarray(kp, np.float32), np.asarray(score, np.float32))[2].tolist()
        return out

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of `epoch` (call before iterating each training epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def item_rng(self, index: int) -> np.random.Generator | None:
        """The generator of item `index`: (seed, epoch, index) in training, (seed, index) for test noise."""
        if self.train:
            return np.random.default_rng([self.seed, self.epoch, index])
        if self.noise_sigma > 0:
            return np.random.default_rng([self.seed, index])
        return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        kp, score = self.pose(index)
        x = preprocess_clip(
            kp,
            score,
            self.img_shapes[index],
            train=self.train,
            opts=self.opts,
            rng=self.item_rng(index),
            noise_sigma=self.noise_sigma,
            noise_per_person=self.noise_per_person,
            indices=None if self.fixed_indices is None else self.fixed_indices[index],
            clip_name=self.names[index],
        )  # [2, T, 17, 3]
        return torch.from_numpy(x), self.labels[index]


def label_names_of(index: Any) -> list[str]:
    """Class names from the dataset (`label_names`), else "class_<i>" up to the largest label."""
    data = store.as_dataset(index)
    if data.label_names is not None:
        return [str(n) for n in data.label_names]
    labels = data.labels
    top = int(labels.max()) if len(labels) else -1
    return [f"class_{i}" for i in range(top + 1)]


def make_dataset(
    cfg: TrainConfig,
    index: Any,
    split: str,
    *,
    train: bool,
    num_classes: int,
    noise_sigma: float = 0.0,
    source: str | Path | None = None,
) -> SkeletonDataset:
    """The dataset of split `split` of `index` (`open_dataset`'s object or an index dict); `source` (the file) is
    named in the error messages."""
    data = store.as_dataset(index, source=source)
    ds = SkeletonDataset(
        annotations=data,
        frame_dirs=split_frame_dirs(data, split, source=source),
        train=train,
        opts=cfg.data,
        seed=cfg.seed,
        num_classes=num_classes,
        noise_sigma=noise_sigma,
        noise_per_person=cfg.noise_per_person,
        skip_bad=cfg.optim.skip_bad,
    )
    if ds.skipped:
        log.warning("%s: skipped %d clips with no data (skip_bad): %s", split, len(ds.skipped), ds.skipped[:5])
    if ds.crowded:
        log.info("%s: %d clips had more than 2 persons; kept the 2 highest-scoring", split, len(ds.crowded))
    return ds


def no_clips_message(ds: SkeletonDataset, split: str, source: str | Path, *, usable: str) -> str:
    """Why `ds` (of split `split` of file `source`) is empty, in one line; `usable` names the clips' role."""
    if ds.skipped:
        first = ", ".join(ds.skipped[:5]) + (", ..." if len(ds.skipped) > 5 else "")
        return f"no usable {usable} in split {split!r} of {source} ({len(ds.skipped)} skipped by skip_bad: {first})"
    return f"split {split!r} of {source} lists no clips"


def require_clips(ds: SkeletonDataset, split: str, source: str | Path, *, usable: str) -> None:
    """Raise ValueError when `ds` holds no clip: its split lists none, or `skip_bad` skipped them all."""
    if len(ds):
        return
    todo = (
        "their poses hold no person, no frame or only zero scores: re-extract them, or use another split"
        if ds.skipped
        else "rebuild the index (python -m pipeline index) or use another split"
    )
    raise ValueError(f"{no_clips_message(ds, split, source, usable=usable)}; {todo}")

"""Torch dataset over PYSKL-format pose records: raw clips in memory, docs/method.md §2 applied per item.

The dataset keeps each record's keypoint/score arrays as they are (compact, variable length) and runs
`recognition.preprocess.preprocess_clip` in `__getitem__`, so memory stays at the raw size rather than a dense
[N, 2, 243, 17, 3] tensor. Randomness is a pure function of (seed, epoch, index): results do not depend on the number
of DataLoader workers and a resumed run replays the same draws.

`make_dataset` builds a split's dataset from a run config (train, evaluate); `require_clips` and
`no_clips_message` say why a split holds no usable clip; `label_names_of` names the classes of an index.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from recognition.config import TrainConfig
from recognition.preprocess import PreprocessOptions, preprocess_clip, resample_indices, select_two_persons

log = logging.getLogger(__name__)


def split_frame_dirs(index: dict, split: str, *, source: str | Path | None = None) -> list[str]:
    """The clip names of split `split` (e.g. "xsub_train") of a dataset file `{split, annotations}`.

    Args:
        index: the dataset file's content.
        split: the split name.
        source: the dataset file's path, named in the error messages.

    Raises:
        ValueError: the split does not exist (the message lists the available ones), or it names a clip that has
            no annotation.
    """
    where = f" of {source}" if source is not None else ""
    splits = index["split"]
    if split not in splits:
        raise ValueError(f"unknown split {split!r}{where}; available: {sorted(splits)}")
    names = list(splits[split])
    known = {a["frame_dir"] for a in index["annotations"]}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(
            f"split {split!r}{where} names {len(missing)} clip(s) with no annotation, first: {missing[0]!r}"
        )
    return names


def _check_record(rec: dict, num_classes: int) -> str | None:
    """Raise on malformed input; return why a clip holds no usable data (skippable), or None when it is usable."""
    name = rec["frame_dir"]
    label = rec.get("label")
    if (
        label is None
        or isinstance(label, bool)
        or not isinstance(label, (int, np.integer))
        or not 0 <= label < num_classes
    ):
        raise ValueError(f"{name}: label {label!r} is not an int in [0, {num_classes})")
    kp, score = rec["keypoint"], rec["keypoint_score"]
    if kp.ndim != 4 or kp.shape[2:] != (17, 2) or score.shape != kp.shape[:3]:
        raise ValueError(
            f"{name}: expected keypoint [M, T, 17, 2] and keypoint_score [M, T, 17], got {kp.shape} and {score.shape}"
        )
    if kp.shape[1] != rec.get("total_frames", kp.shape[1]):
        raise ValueError(f"{name}: total_frames {rec['total_frames']} != keypoint frames {kp.shape[1]}")
    if kp.shape[0] == 0:
        return "no person"
    if kp.shape[1] == 0:
        return "zero frames"
    if not np.any(score):
        return "all keypoint scores are zero"
    return None


class SkeletonDataset(Dataset):
    """Clips named by `frame_dirs` -> (float32 tensor [M=2, T=clip_len, V=17, C=3], label).

    Args:
        annotations: PYSKL records (`frame_dir`, `label`, `img_shape`, `keypoint`, `keypoint_score`, ...).
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
        person_selection: frame_dir -> kept person slots, for clips that had more than 2 persons.
    """

    def __init__(
        self,
        *,
        annotations: list[dict],
        frame_dirs: list[str],
        train: bool,
        opts: PreprocessOptions,
        seed: int,
        num_classes: int,
        noise_sigma: float = 0.0,
        noise_per_person: bool = True,
        skip_bad: bool = False,
    ) -> None:
        by_name: dict[str, dict] = {}
        for rec in annotations:
            if rec["frame_dir"] in by_name:
                raise ValueError(f"duplicate annotation for clip {rec['frame_dir']!r}")
            by_name[rec["frame_dir"]] = rec
        self.train, self.opts, self.seed = train, opts, seed
        self.noise_sigma, self.noise_per_person = noise_sigma, noise_per_person
        self.epoch = 0
        self.skipped: list[str] = []
        self.person_selection: dict[str, list[int]] = {}
        self.names: list[str] = []
        self.labels: list[int] = []
        self.img_shapes: list[tuple[int, int]] = []
        self.keypoints: list[np.ndarray] = []  # each [M<=2, T0, 17, 2] float32, raw pixels
        self.scores: list[np.ndarray] = []  # each [M<=2, T0, 17] float32
        for name in frame_dirs:
            if name not in by_name:
                raise ValueError(f"clip {name!r} has no annotation")
            rec = by_name[name]
            kp = np.asarray(rec["keypoint"], dtype=np.float32)  # no copy when already float32
            score = np.asarray(rec["keypoint_score"], dtype=np.float32)
            bad = _check_record({**rec, "keypoint": kp, "keypoint_score": score}, num_classes)
            if bad is not None:
                if not skip_bad:
                    raise ValueError(f"{name}: {bad}; pass skip_bad=True to skip such clips")
                log.warning("skipping clip %s: %s", name, bad)
                self.skipped.append(name)
                continue
            m_raw = kp.shape[0]
            kp, score, kept = select_two_persons(kp, score)
            if len(kept) < m_raw:
                self.person_selection[name] = kept.tolist()
            self.names.append(name)
            self.labels.append(int(rec["label"]))
            self.img_shapes.append(tuple(int(s) for s in rec["img_shape"]))
            self.keypoints.append(kp)
            self.scores.append(score)
        # F5 (official): training frame indices drawn once, here, and reused every epoch.
        self.fixed_indices: list[np.ndarray] | None = None
        if train and not opts.resample_per_item:
            rng = np.random.default_rng([seed])
            self.fixed_indices = [
                resample_indices(kp.shape[1], opts.clip_len, train=True, rng=rng) for kp in self.keypoints
            ]

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
        x = preprocess_clip(
            self.keypoints[index],
            self.scores[index],
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


def label_names_of(index: dict) -> list[str]:
    """Class names from the index (`label_names`), else "class_<i>" up to the largest label."""
    if "label_names" in index:
        return [str(n) for n in index["label_names"]]
    top = max((int(a["label"]) for a in index["annotations"]), default=-1)
    return [f"class_{i}" for i in range(top + 1)]


def make_dataset(
    cfg: TrainConfig,
    index: dict,
    split: str,
    *,
    train: bool,
    num_classes: int,
    noise_sigma: float = 0.0,
    source: str | Path | None = None,
) -> SkeletonDataset:
    """The dataset of split `split`; `source` (the index file) is named in the error messages."""
    ds = SkeletonDataset(
        annotations=index["annotations"],
        frame_dirs=split_frame_dirs(index, split, source=source),
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
    if ds.person_selection:
        log.info("%s: %d clips had more than 2 persons; kept the 2 highest-scoring", split, len(ds.person_selection))
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

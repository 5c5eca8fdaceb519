"""Estimator registry: a short name -> the lazily imported class that turns frames into poses.

Every registered class satisfies `PoseEstimator` (checked when it is built): one `estimate`
signature for top-down and bottom-up models, and the attributes stage 1 reads instead of
probing. Constructors are keyword-only and take `weights` (a checkpoint path, or None: random
weights in tests, or no file at all for models that ship theirs), `device`, and their settings,
the keys of `configs/estimators/<name>.yaml` (`batch_size`, `flip_test`, codec and sizes).
`pose_extraction/build.py` builds them from a `PoseConfig`.

Adding an estimator: its module with a class satisfying `PoseEstimator`, one line in
`ESTIMATORS`, and (optionally) `configs/estimators/<name>.yaml`; the registry-wide tests
(tests/pose_extraction/test_registry.py) then build and check it with no test edit.

Importing this module imports no torch, transformers or timm: `get_estimator_class` imports
the one adapter asked for.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.config import did_you_mean

ESTIMATORS: dict[str, str] = {
    "vitpose": "pose_extraction.estimators.vitpose:ViTPoseEstimator",
    "hrnet": "pose_extraction.estimators.hrnet:HRNetEstimator",
    "openpifpaf": "pose_extraction.estimators.openpifpaf:OpenPifPafEstimator",  # bottom-up; make install-openpifpaf
    "blazepose": "pose_extraction.estimators.blazepose:BlazePoseEstimator",  # .venv-mediapipe; one person (M = 1)
    "standin": "pose_extraction.estimators.standin:StandInEstimator",  # tests only: no model
}

SETTINGS_DIR = Path(__file__).resolve().parents[2] / "configs" / "estimators"
# Arguments build_estimator sets itself; a settings file may hold batch_size and flip_test.
_BUILD_ARGS = ("weights", "device")


class EstimatorError(RuntimeError):
    """An estimator cannot be built: missing weights file, checkpoint of another architecture,
    unknown setting, a class that breaks the `PoseEstimator` contract."""


Poses = list[tuple[np.ndarray, np.ndarray]]


@runtime_checkable
class PoseEstimator(Protocol):
    """What stage 1 needs of an estimator.

    Attributes:
        name: its registry key (the record's `estimator.name`).
        needs_boxes: True for a top-down model: `estimate` takes the detector's boxes per frame;
            False for a bottom-up one (or one with its own detector): boxes must be None.
        needs_weights: False where no weights file is read (the model ships in its package, or
            there is no model: the stand-in); `make weights` is then not needed.
        max_persons: the most persons it reports in a frame (BlazePose: 1), or None for any;
            tracking keeps at most this many (`tracking.max_persons` is capped to it).
        weights: provenance: the weights file, or what the model is ("random" in tests).
        version: provenance: architecture/codec or package version.
    """

    name: str
    needs_boxes: bool
    needs_weights: bool
    max_persons: int | None
    weights: str
    version: str

    def estimate(
        self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray] | None = None, *, start_index: int = 0
    ) -> Poses:
        """Poses of consecutive frames of one video.

        Args:
            frames: RGB uint8 [H, W, 3] images.
            boxes: top-down: per frame float32 [k_i, 4] person boxes (x1, y1, x2, y2), k_i >= 0;
                bottom-up: None.
            start_index: index of frames[0] in its video (0 starts a new video: trackers reset).

        Returns:
            per frame (keypoints float32 [k, 17, 2] image pixels, COCO-17 order; scores float32
            [k, 17], >= 0; callers clip them to [0, 1]); top-down: k = k_i, box order kept.
        """
        ...


def check_estimator(obj: Any, name: str) -> None:
    """Raise EstimatorError unless `obj` satisfies `PoseEstimator` with values of the right types."""
    types = {"name": str, "needs_boxes": bool, "needs_weights": bool, "weights": str, "version": str}
    bad = [a for a, t in types.items() if not isinstance(getattr(obj, a, None), t)]
    mp = getattr(obj, "max_persons", "absent")
    if not (mp is None or (isinstance(mp, int) and not isinstance(mp, bool) and mp >= 1)):
        bad.append("max_persons")
    if not callable(getattr(obj, "estimate", None)):
        bad.append("estimate")
    elif "start_index" not in inspect.signature(obj.estimate).parameters:
        bad.append("estimate(..., start_index=)")
    if bad:
        raise EstimatorError(
            f"estimator {name!r} ({type(obj).__name__}) breaks the PoseEstimator contract: "
            f"{', '.join(bad)} missing or of the wrong type"
        )
    if obj.name != name:
        raise EstimatorError(f"estimator registered as {name!r} calls itself {obj.name!r}")


def missing_weights_message(name: str, path: str | os.PathLike) -> str:
    return (
        f"{name} weights file {path} not found: download the official checkpoint with "
        f"`make weights ESTIMATOR={name}` (or `python -m pose_extraction weights {name}`)"
    )


def get_estimator_class(name: str) -> type:
    """The class registered as `name` (imports its module).

    Raises:
        KeyError: unknown name (the message lists the valid ones).
    """
    if name not in ESTIMATORS:
        raise KeyError(f"unknown estimator {name!r}; valid: {', '.join(sorted(ESTIMATORS))}")
    module, _, attr = ESTIMATORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def settings_keys(cls: type) -> list[str]:
    """The keyword arguments of `cls` a settings file may set."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in _BUILD_ARGS]


def load_settings(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read an estimator settings YAML (default `configs/estimators/<name>.yaml`; {} if absent).

    Lists become tuples (input_size, heatmap_size). Keys are checked by `build_estimator`.
    """
    from pipeline.config import read_yaml

    p = Path(path) if path is not None else SETTINGS_DIR / f"{name}.yaml"
    if path is None and not p.is_file():
        return {}
    data = read_yaml(p)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) == len(default) and all(map(_same_type, value, default))
    return isinstance(value, type(default))


def build_estimator(
    name: str,
    *,
    weights: str | os.PathLike | None,
    device: str = "cpu",
    batch_size: int | None = None,
    flip_test: bool | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Any:
    """Build estimator `name`.

    Precedence: explicit `batch_size` / `flip_test` > `settings` > the class defaults. With
    `settings=None` the defaults file `configs/estimators/<name>.yaml` is read; pass a
    mapping (e.g. `{**load_settings(name), "hidden_size": 32}`) to change codec or size.

    Raises:
        KeyError: unknown estimator name.
        EstimatorError: unknown setting (naming the closest valid one), missing weights file
            (naming `make weights ESTIMATOR=<name>`), checkpoint of another architecture
            (listing the mismatched keys).
    """
    cls = get_estimator_class(name)
    kwargs = dict(load_settings(name) if settings is None else settings)
    valid = settings_keys(cls)
    defaults = {p: v.default for p, v in inspect.signature(cls.__init__).parameters.items()}
    for key, value in kwargs.items():
        if key not in valid:
            hint = did_you_mean(key, valid)
            raise EstimatorError(f"unknown {name} setting {key!r}{hint} (valid: {', '.join(sorted(valid))})")
        default = defaults[key]
        if default is not inspect.Parameter.empty and default is not None and not _same_type(value, default):
            raise EstimatorError(
                f"{name} setting {key!r}: expected {type(default).__name__} like {default!r}, got {value!r}"
            )
    for key, value in (("batch_size", batch_size), ("flip_test", flip_test)):
        if value is not None:
            if key not in valid:
                raise EstimatorError(f"{name} has no {key} setting (valid: {', '.join(sorted(valid))})")
            kwargs[key] = value
    estimator = cls(weights=weights, device=device, **kwargs)
    check_estimator(estimator, name)
    return estimator

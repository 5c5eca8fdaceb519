"""Estimator registry: a short name -> the lazily imported class that turns frames into poses.

Contract (top-down estimators, `pose_extraction.topdown.TopDownEstimator`):
`estimate(frames, boxes)` takes RGB uint8 frames [H, W, 3] and per frame float32 boxes
[k_i, 4] (x1, y1, x2, y2) and returns per frame (keypoints float32 [k_i, 17, 2] in image
pixels, COCO-17 order; scores float32 [k_i, 17] in [0, 1]). Constructors are keyword-only
and take `weights` (a checkpoint path, or None for random weights in tests), `device`,
`batch_size`, `flip_test` and their codec/size settings, the keys of
`configs/estimators/<name>.yaml`.

Importing this module imports no torch, transformers or timm: `get_estimator_class` imports
the one adapter asked for.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    unknown setting."""


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
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EstimatorError(f"unknown {name} setting {key!r}{hint} (valid: {', '.join(sorted(valid))})")
        default = defaults[key]
        if default is not inspect.Parameter.empty and default is not None and not _same_type(value, default):
            raise EstimatorError(
                f"{name} setting {key!r}: expected {type(default).__name__} like {default!r}, got {value!r}"
            )
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if flip_test is not None:
        kwargs["flip_test"] = flip_test
    return cls(weights=weights, device=device, **kwargs)

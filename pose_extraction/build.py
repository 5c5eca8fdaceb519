"""Stage 1's models from a `PoseConfig`: the estimator, the person detector a top-down one needs,
and the extractor that runs them. The command line and the benches build through here.

One settings path for every estimator: its settings file (`estimator_settings`, default
`configs/estimators/<name>.yaml`), then `batch_size` / `flip_test` of the config only where they
are given; weights from `weights` or the local cache (`make weights`) when the class reads a file.
The device follows `pipeline.devices.choose_device`; under `torchrun` "auto" and "cuda" mean this
process's GPU, `cuda:$LOCAL_RANK`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.devices import choose_device
from pose_extraction.estimators import PoseEstimator, build_estimator, get_estimator_class, load_settings
from pose_extraction.extract import DEFAULT_DETECTOR_INPUT, PoseConfig, VideoExtractor

log = logging.getLogger(__name__)

MAX_SIZE_AT_800 = 1333  # torchvision Faster R-CNN: longer-side cap at min_size 800


def resolve_device(name: str) -> str:
    """The device string for `name` ("auto", "cpu", "cuda", "cuda:N") on this machine and rank."""
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # an estimator environment without torch (BlazePose): CPU only
        gpus = 0
    device = choose_device(name, gpus=gpus)
    local = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local is not None:
        device = choose_device(f"cuda:{int(local)}", gpus=gpus)
    return device


def _weights(cfg: PoseConfig, role: str, explicit: str, *, random_if_missing: bool) -> str | None:
    from pose_extraction import weights as wcache

    try:
        return str(wcache.resolve(cfg.estimator, role, explicit or None))
    except wcache.WeightsError:
        if not random_if_missing or explicit:
            raise
        log.warning("no cached %s weights for %s: random weights (timings only)", role, cfg.estimator)
        return None


def build_estimator_from(cfg: PoseConfig, *, random_if_missing: bool = False) -> PoseEstimator:
    """The estimator named in `cfg` (checked against `PoseEstimator`).

    Args:
        random_if_missing: benches: random weights when the cache has none (never for results).
    """
    cls = get_estimator_class(cfg.estimator)
    weights = (
        _weights(cfg, "estimator", cfg.weights, random_if_missing=random_if_missing) if cls.needs_weights else None
    )
    return build_estimator(
        cfg.estimator,
        weights=weights,
        device=resolve_device(cfg.device),
        batch_size=cfg.batch_size,
        flip_test=cfg.flip_test,
        settings=load_settings(cfg.estimator, cfg.estimator_settings or None),
    )


def build_detector_from(cfg: PoseConfig, *, random_if_missing: bool = False, **options: Any) -> Any:
    """The person detector of `cfg.detector` (weights from the config or the cache); `options`
    are further `PersonDetector` arguments (benches: input size)."""
    from pose_extraction.detect import PersonDetector

    d = cfg.detector
    kwargs: dict[str, Any] = {
        "weights": _weights(cfg, "detector", d.weights, random_if_missing=random_if_missing),
        "device": resolve_device(cfg.device),
        "score_threshold": d.score_threshold,
        "min_area": d.min_area,
        "batch_size": d.batch_size,
        "min_size": d.input_size,
        "max_size": round(MAX_SIZE_AT_800 * d.input_size / DEFAULT_DETECTOR_INPUT),  # torchvision's ratio
    }
    return PersonDetector(**{**kwargs, **options})


def build_extractor(cfg: PoseConfig) -> VideoExtractor:
    """Estimator, and detector where it is top-down, in one extractor."""
    estimator = build_estimator_from(cfg)
    detector = build_detector_from(cfg) if estimator.needs_boxes else None
    return VideoExtractor(cfg=cfg, estimator=estimator, detector=detector)

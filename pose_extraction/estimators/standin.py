"""A deterministic stand-in estimator: keypoints computed from the frame index and image size.

No weights and no model, so the whole stage-1 machinery (reading, batching, tracking, caching,
sharding, failure handling, Make targets) can be tested end to end on any video in seconds.
It "sees" two persons in every frame of a video whose mean brightness is above a threshold and
none in darker frames, which lets tests make frames without persons. Never use it for results.
"""

from __future__ import annotations

import os
import time

import numpy as np

# A standing skeleton in a unit box (x right, y down), COCO-17 order.
_TEMPLATE = np.array(
    [
        [0.50, 0.08],
        [0.53, 0.06],
        [0.47, 0.06],
        [0.56, 0.08],
        [0.44, 0.08],
        [0.62, 0.22],
        [0.38, 0.22],
        [0.68, 0.38],
        [0.32, 0.38],
        [0.70, 0.52],
        [0.30, 0.52],
        [0.58, 0.55],
        [0.42, 0.55],
        [0.60, 0.76],
        [0.40, 0.76],
        [0.60, 0.96],
        [0.40, 0.96],
    ],
    dtype=np.float32,
)


def _mean_brightness(frame: np.ndarray) -> float:
    """The frame's mean over pixels and channels: cv2's SIMD sums where cv2 is there (7x numpy's mean on a
    640x360 frame, equal to float rounding), so the stand-in costs next to nothing beside decoding."""
    try:
        import cv2
    except ImportError:
        return float(frame.mean())
    return float(np.mean(cv2.mean(frame)[: frame.shape[2] if frame.ndim == 3 else 1]))


class StandInEstimator:
    """Bottom-up-style stand-in: `estimate(frames, boxes=None, start_index=0)` -> per frame ([k,17,2], [k,17])."""

    needs_boxes = False
    needs_weights = False
    name = "standin"
    weights = ""
    version = "1"
    max_persons = None

    def __init__(self, *, weights: str | None = None, device: str = "cpu", brightness_threshold: float = 8.0) -> None:
        if weights:
            raise ValueError(f"the stand-in takes no weights (got {weights})")
        self.brightness_threshold = brightness_threshold

    def estimate(
        self, frames: list[np.ndarray], boxes: list[np.ndarray] | None = None, *, start_index: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        delay = float(os.environ.get("RSA_EXTRACT_SLEEP", "0"))  # tests slow it down to kill it mid-video
        if delay:
            time.sleep(delay)
        out = []
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            if _mean_brightness(frame) < self.brightness_threshold:
                out.append((np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)))
                continue
            t = start_index + i
            persons = []
            for p, cx in enumerate((0.3, 0.7)):
                shift = 0.05 * np.sin(0.2 * t + p)
                box_w, box_h = 0.25 * w, 0.8 * h
                x0 = (cx + shift) * w - box_w / 2
                y0 = 0.1 * h
                persons.append(_TEMPLATE * np.array([box_w, box_h], np.float32) + np.array([x0, y0], np.float32))
            kp = np.stack(persons).astype(np.float32)  # [2, 17, 2]
            score = np.full((2, 17), 0.9, np.float32)
            out.append((kp, score))
        return out

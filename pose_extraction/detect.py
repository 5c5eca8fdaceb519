"""Person detection for the top-down estimators: RGB frames in, person boxes per frame out.

Any object with `detect(frames) -> [(boxes [k, 4], scores [k]), ...]` is a detector
(`BoxDetector`); the extract stage accepts any of them and checks the result with
`check_detections`. Three are provided:

    PersonDetector   torchvision Faster R-CNN R50-FPN v2 (COCO, 91 classes, person = label 1),
                     weights from a local state-dict file; the default
    StaticDetector   the same boxes in every frame (a deterministic stand-in for tests)
    FnDetector       boxes from a function of (frame index, frame) (a stand-in for tests)

Default thresholds, in the field's spirit: a box is kept when its person score is >= 0.5 and
its area (after clipping to the image) is >= 1600 px^2 (40 x 40). MMAction2's NTU pose
extraction script (`tools/data/skeleton/ntu_pose_extraction.py`, the one behind PYSKL's NTU
skeletons) keeps person boxes with score >= 0.5; PYSKL's `custom_2d_skeleton.py` uses an area
threshold of 1600 (with a stricter score of 0.7); mmpose's top-down demos default to a box
threshold of 0.3. Lower the score for small or occluded people, raise it for cleaner tracks.

The detector weights (`fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth`, torchvision's own
file) are fetched together with the top-down estimators' weights by
`make weights ESTIMATOR=<estimator>`; nothing downloads at run time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

PERSON_LABEL = 1  # COCO category id of "person" in torchvision's 91-class layout
NUM_COCO_CLASSES = 91
WEIGHTS_FILENAME = "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
DETECTOR_NAME = "fasterrcnn_resnet50_fpn_v2"

Detection = tuple[np.ndarray, np.ndarray]  # boxes float32 [k, 4] xyxy pixels, scores float32 [k]


class DetectorError(RuntimeError):
    """The detector cannot be built (missing or wrong weights) or returned malformed output."""


@runtime_checkable
class BoxDetector(Protocol):
    """A person detector.

    `detect(frames)` takes a list of RGB uint8 frames [H, W, 3] (sizes may differ) and returns
    one `(boxes, scores)` per frame: boxes float32 [k, 4] as (x1, y1, x2, y2) in pixels inside
    the image, scores float32 [k] in [0, 1]; k may be 0. `PersonDetector` sorts by descending
    score; stand-ins keep the order they are given.
    """

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]: ...


def check_detections(detections: Sequence[Detection], n_frames: int, *, source: str = "detector") -> list[Detection]:
    """Validate a detector's output against the `BoxDetector` contract; return it as float32.

    Raises:
        DetectorError: wrong number of frames, shapes, or non-finite values (names the frame).
    """
    if len(detections) != n_frames:
        raise DetectorError(f"{source}: returned {len(detections)} results for {n_frames} frames")
    out = []
    for i, det in enumerate(detections):
        try:
            boxes, scores = det
        except (TypeError, ValueError) as e:
            raise DetectorError(f"{source}: frame {i}: expected (boxes, scores), got {type(det).__name__}") from e
        boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32).reshape(-1)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(scores) != len(boxes):
            raise DetectorError(
                f"{source}: frame {i}: expected boxes [k, 4] and scores [k], got {boxes.shape} and {scores.shape}"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise DetectorError(f"{source}: frame {i}: non-finite box or score")
        if len(scores) and (scores.min() < 0 or scores.max() > 1):
            raise DetectorError(
                f"{source}: frame {i}: scores must be in [0, 1], got [{scores.min():g}, {scores.max():g}]"
            )
        out.append((boxes, scores))
    return out


def filter_person_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    image_size: tuple[int, int],
    score_threshold: float,
    min_area: float,
    person_label: int = PERSON_LABEL,
) -> Detection:
    """Post-process raw detector output for one image: persons only, clipped, thresholded, sorted.

    Args:
        boxes: [n, 4] (x1, y1, x2, y2) pixels, any class.
        labels: [n] class ids.
        scores: [n].
        image_size: (H, W); boxes are clipped to [0, W] x [0, H] before the area test.
        score_threshold: keep scores >= this.
        min_area: keep clipped boxes with area >= this (px^2).
        person_label: the class id to keep.

    Returns:
        boxes float32 [k, 4] and scores float32 [k], highest score first.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores, np.float32).reshape(-1)
    h, w = image_size
    boxes = np.stack(
        [boxes[:, 0].clip(0, w), boxes[:, 1].clip(0, h), boxes[:, 2].clip(0, w), boxes[:, 3].clip(0, h)], axis=1
    )
    area = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    keep = (labels == person_label) & (scores >= score_threshold) & (area >= min_area)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    return np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order])


def _check_frames(frames: Sequence[np.ndarray]) -> None:
    for i, f in enumerate(frames):
        if not (isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3):
            desc = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"frame {i}: expected an RGB uint8 array [H, W, 3], got {desc}")


def resolve_weights(weights: str | os.PathLike, *, estimator: str | None = None) -> Path:
    """The detector weights file: `weights` itself, or `weights/WEIGHTS_FILENAME` for a folder.

    Raises:
        DetectorError: the file does not exist; the message names the command that fetches it.
    """
    path = Path(weights)
    if path.is_dir():
        path = path / WEIGHTS_FILENAME
    if not path.is_file():
        name = estimator or "<top-down estimator, e.g. vitpose>"
        raise DetectorError(
            f"{path}: person detector weights not found ({WEIGHTS_FILENAME}); "
            f"fetch them with `make weights ESTIMATOR={name}` (the detector comes "
            "with the top-down estimators' weights)"
        )
    return path


class PersonDetector:
    """torchvision Faster R-CNN R50-FPN v2 (COCO) as a person detector.

    Args:
        weights: torchvision's COCO state dict file (`fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth`)
            or a folder holding it; loaded with `weights_only=True` and strict key matching.
            None builds random weights: for tests only (a warning is logged).
        device: torch device string.
        score_threshold: minimum person score (default 0.5, see the module docstring).
        min_area: minimum box area in px^2 after clipping (default 1600 = 40 x 40).
        batch_size: frames per forward pass.
        min_size: torchvision's resize target for the shorter side (default 800: frames are
            resized so the short side is 800, capped by `max_size`; tests use tiny values).
        max_size: cap on the longer side after resizing (torchvision default 1333).
        rpn_post_nms_top_n_test: region proposals kept per image (torchvision default 1000;
            the box head's cost grows with it, so tests lower it).
        estimator: the estimator this detector serves, named in the missing-weights message.
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None,
        device: str = "cpu",
        score_threshold: float = 0.5,
        min_area: float = 1600.0,
        batch_size: int = 8,
        min_size: int = 800,
        max_size: int = 1333,
        rpn_post_nms_top_n_test: int = 1000,
        estimator: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.weights = None if weights is None else resolve_weights(weights, estimator=estimator)
        self.device, self.batch_size = device, batch_size
        self.score_threshold, self.min_area = float(score_threshold), float(min_area)
        self.min_size, self.max_size = int(min_size), int(max_size)
        self._torch = _import_torch()
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        # box_score_thresh prunes low-scoring boxes of every class before NMS and the
        # 100-detections cap, so persons are not crowded out by other classes.
        model = fasterrcnn_resnet50_fpn_v2(
            weights=None,
            weights_backbone=None,
            num_classes=NUM_COCO_CLASSES,
            min_size=min_size,
            max_size=max_size,
            box_score_thresh=self.score_threshold,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        )
        if self.weights is None:
            log.warning(
                "PersonDetector built with random weights (weights=None): for tests only, its boxes are meaningless"
            )
        else:
            self._load(model, self.weights)
        self.model = model.eval().to(device)

    def _load(self, model: Any, path: Path) -> None:
        torch = self._torch
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- any unreadable file is the same user error
            raise DetectorError(f"{path}: cannot load detector weights: {e}") from e
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # a torchvision training checkpoint
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise DetectorError(f"{path}: not a torchvision {DETECTOR_NAME} COCO state dict: {e}") from e

    def describe(self) -> dict[str, Any]:
        """Plain-type provenance for the pose record and the frozen config."""
        return {
            "name": DETECTOR_NAME,
            "weights": "" if self.weights is None else self.weights.name,
            "score_threshold": self.score_threshold,
            "min_area": self.min_area,
            "input_size": self.min_size,
        }

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        """Detect persons in RGB uint8 frames [H, W, 3], `batch_size` frames per forward pass.

        Returns:
            One (boxes float32 [k, 4] xyxy pixels, scores float32 [k]) per frame, highest first.
        """
        _check_frames(frames)
        torch = self._torch
        out: list[Detection] = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size]
            # uint8 [H, W, 3] -> float [3, H, W] in [0, 1], moved to the device as uint8 (4x less)
            images = [
                torch.from_numpy(np.ascontiguousarray(f)).to(self.device).permute(2, 0, 1).float().div_(255.0)
                for f in batch
            ]
            with torch.inference_mode():
                preds = self.model(images)  # the model normalises and resizes internally
            for f, p in zip(batch, preds):
                raw = (p["boxes"].cpu().numpy(), p["labels"].cpu().numpy(), p["scores"].cpu().numpy())
                out.append(
                    filter_person_boxes(
                        *raw, image_size=f.shape[:2], score_threshold=self.score_threshold, min_area=self.min_area
                    )
                )
        return out


def _import_torch() -> Any:
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "PersonDetector needs torch and torchvision: "
            "pip install torch torchvision (see the Makefile for the pinned pair)"
        ) from e
    return torch


class StaticDetector:
    """A stand-in detector returning the same boxes for every frame.

    Args:
        boxes: [k, 4] (x1, y1, x2, y2) pixels.
        scores: [k]; ones when omitted.
    """

    def __init__(
        self, boxes: np.ndarray | Sequence[Sequence[float]], scores: np.ndarray | Sequence[float] | None = None
    ):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.ones(len(boxes), np.float32) if scores is None else np.asarray(scores, np.float32)
        ((self.boxes, self.scores),) = check_detections([(boxes, scores)], 1, source="StaticDetector")

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        return [(self.boxes.copy(), self.scores.copy()) for _ in frames]


class FnDetector:
    """A stand-in detector: `fn(index, frame) -> (boxes, scores)` for each frame.

    `index` counts the frames seen since construction or `reset()`, so a video fed in chunks
    gets its true frame indices (e.g. `FnDetector(lambda i, f: per_frame[i])`); `fn` may also
    read the frame itself (e.g. find bright regions in a synthetic video).
    """

    def __init__(self, fn: Callable[[int, np.ndarray], Detection]):
        self.fn = fn
        self.frames_seen = 0

    def reset(self) -> None:
        self.frames_seen = 0

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        dets = [self.fn(self.frames_seen + i, f) for i, f in enumerate(frames)]
        self.frames_seen += len(frames)
        return check_detections(dets, len(frames), source="FnDetector")

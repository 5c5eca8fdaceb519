"""BlazePose (mediapipe 0.10.21's legacy pose solution), mapped to COCO-17.

The one estimator whose real pretrained weights ship inside a pip package: the wheel of
mediapipe 0.10.21 (the last release with `mp.solutions`) carries the person detector and
`pose_landmark_full.tflite`, so this runs offline, and it is `make demo`'s stage-1 estimator.
Only `model_complexity=1` (full) works offline: 0 (lite) and 2 (heavy) download their model
on first use. mediapipe 0.10.21 needs numpy<2, so this adapter runs in its own virtual
environment `.venv-mediapipe` (`scripts/make_mediapipe_venv.sh`); the Makefile picks it for
`ESTIMATOR=blazepose`.

**Single person.** BlazePose finds at most one person per frame (its detector seeds one
region, which it then tracks), so a record from it holds M <= 1: its `max_persons = 1` caps
`tracking.max_persons` in the driver, whatever the config says. In a crowd it follows whoever
it locked on to.

Bottom-up interface (no boxes): `estimate(frames, None, start_index=i)` takes consecutive RGB
uint8 frames [H, W, 3] of one video, chunk by chunk, and returns per frame (keypoints float32
[k, 17, 2] in image pixels, COCO-17 order; scores float32 [k, 17] in [0, 1]) with k in {0, 1}.
The solution runs in tracking mode (`static_image_mode=False`: the landmarks of one frame
seed the next); `start_index == 0` marks a new video and resets it.

BlazePose-33 -> COCO-17 takes, in COCO order, BlazePose indices 0 (nose), 2 (left eye),
5 (right eye), 7, 8 (ears), 11-16 (shoulders, elbows, wrists), 23-28 (hips, knees, ankles);
both use the person's own left/right. Coordinates: mediapipe's normalised [0, 1] x, y times
(W, H); joints it places outside the image keep their (out-of-range) coordinates and their
low visibility. Score: the landmark's `visibility`, clipped to [0, 1].
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pose_extraction.estimators import EstimatorError

log = logging.getLogger(__name__)

# COCO-17 joint j is BlazePose landmark BLAZEPOSE_TO_COCO[j].
BLAZEPOSE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
MODEL_COMPLEXITY = 1  # pose_landmark_full: the only model in the wheel


def _import_mediapipe() -> Any:
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise ImportError(
            "the blazepose estimator needs mediapipe 0.10.21, which needs numpy<2 and so lives in its "
            "own venv: run `make .venv-mediapipe/.installed` and use `.venv-mediapipe/bin/python` "
            "(`make poses ESTIMATOR=blazepose` does both)"
        ) from exc
    if not hasattr(mp, "solutions"):
        raise ImportError(
            f"mediapipe {mp.__version__} has no legacy `solutions` (and no pose model in its "
            "wheel); the blazepose estimator needs mediapipe==0.10.21"
        )
    return mp


def landmarks_to_coco(landmarks: Any, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """mediapipe's 33 normalised landmarks -> COCO-17 pixels [17, 2] and scores [17] (float32)."""
    picked = [landmarks.landmark[i] for i in BLAZEPOSE_TO_COCO]
    kp = np.array([[lm.x * width, lm.y * height] for lm in picked], dtype=np.float32)  # [17, 2]
    score = np.clip(np.array([lm.visibility for lm in picked], dtype=np.float32), 0.0, 1.0)  # [17]
    return kp, score


class BlazePoseEstimator:
    """BlazePose full (mediapipe 0.10.21), one person per frame, tracking within a video.

    Args:
        weights: must be None (the model ships in the wheel).
        device: only the CPU is used.
        min_detection_confidence: the person detector's threshold (mediapipe's default 0.5).
        min_tracking_confidence: below this the landmarks of the previous frame are not
            trusted and the detector runs again (default 0.5).
        smooth_landmarks: mediapipe's temporal filter across frames of a video.
    """

    needs_boxes = False
    needs_weights = False  # the model ships in the mediapipe wheel
    name = "blazepose"
    weights = "mediapipe 0.10.21 pose_landmark_full"
    max_persons = 1

    def __init__(
        self,
        *,
        weights: str | None = None,
        device: str = "cpu",
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        smooth_landmarks: bool = True,
    ) -> None:
        if weights:  # `weights` and `device` exist only so that build_estimator can call every class alike
            raise EstimatorError(
                f"blazepose takes no weights file (got {weights}): its model ships in the mediapipe 0.10.21 wheel"
            )
        if device != "cpu":
            log.info("blazepose runs on the CPU (mediapipe's TFLite runtime); device=%r ignored", device)
        self._mp = _import_mediapipe()
        self.version = str(self._mp.__version__)
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.smooth_landmarks = smooth_landmarks
        self._pose: Any = None
        self._next_index = 0  # the frame index the running solution expects next

    def _new_solution(self) -> Any:
        self.close()
        return self._mp.solutions.pose.Pose(
            static_image_mode=False,
            model_complexity=MODEL_COMPLEXITY,
            smooth_landmarks=self.smooth_landmarks,
            enable_segmentation=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def close(self) -> None:
        """Release the mediapipe graph (a new one is made on the next video)."""
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def estimate(
        self, frames: list[np.ndarray], boxes: list[np.ndarray] | None = None, *, start_index: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Poses of consecutive frames of one video; `start_index == 0` starts a new video.

        Args:
            frames: RGB uint8 [H, W, 3] each.
            boxes: ignored (bottom-up interface; must be None).
            start_index: index of frames[0] in its video.

        Returns:
            per frame (keypoints float32 [k, 17, 2] pixels, scores float32 [k, 17]), k in {0, 1}.
        """
        if boxes is not None:
            raise ValueError("blazepose finds its own person: call estimate(frames, None)")
        if start_index == 0 or self._pose is None or start_index != self._next_index:
            if start_index not in (0, self._next_index):
                log.warning(
                    "blazepose: frames jump from %d to %d; restarting the tracker", self._next_index, start_index
                )
            self._pose = self._new_solution()
        out = []
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"blazepose expects RGB uint8 [H, W, 3] frames, got {frame.dtype} {frame.shape}")
            h, w = frame.shape[:2]
            result = self._pose.process(np.ascontiguousarray(frame))
            if result.pose_landmarks is None:
                out.append((np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)))
                continue
            kp, score = landmarks_to_coco(result.pose_landmarks, w, h)
            out.append((kp[None], score[None]))  # [1, 17, 2], [1, 17]
        self._next_index = start_index + len(frames)
        return out

"""Stage 1 driver: videos -> one pose record per video, `OUT/<video_id>.pkl`.

Per video: stream frames in chunks (background decode), detect persons (top-down estimators),
estimate keypoints for all boxes of a chunk in batched forwards, then track persons across the
whole video and keep the M best tracks (`tracking.py`). The record is validated and written
atomically, so a killed run leaves no partial record.

The output folder is a cache keyed on content (`pose_extraction/cache.py`): a record is reused
only if it was made from the same video with the same estimator, weights and settings; anything
else is extracted again (or, with `overwrite=False`, kept and reported with what differs). Two
videos with one id (`clip.mp4`, `clip.avi`) are an error before any work. A failing video gets a
failure marker and a line in `OUT/failures.jsonl`, and is not retried on resume unless
`retry_failed`; the run fails at the end if more than `max_failures` of its videos have failed.
Any number of processes may share one folder (per-video claims); under `torchrun` (or with
`shard=(i, n)`) each rank also takes only every n-th video.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.atomic import remove_orphaned_temps
from pipeline.config import to_dict
from pipeline.datasets import check_unique_video_ids
from pipeline.progress import progress as progress_bar
from pipeline.schema import SCHEMA_VERSION
from pose_extraction import cache
from pose_extraction.estimators import check_estimator
from pose_extraction.jobs import extract_one
from pose_extraction.tracking import TrackingConfig, track_persons

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = 1  # bump when the records' meaning changes (Make re-extracts on it)
DEFAULT_DETECTOR_INPUT = 800  # torchvision Faster R-CNN's min_size
KEYFRAME_JOINT_SCORE = 0.3  # joints that span a box carried over from the previous frame
KEYFRAME_BOX_GROWTH = 1.2  # that box, grown about its center (keypoints lie inside a person's box)
MAX_PENDING_DECODES = 4  # batches of heatmaps waiting for the engine's decode thread


class NoPersonError(RuntimeError):
    """A video in which no frame has a person: no record is written (a failure line instead)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Person detector (torchvision Faster R-CNN R50-FPN v2, COCO) settings."""

    score_threshold: float = 0.5
    min_area: float = 1600.0
    batch_size: int = 8
    weights: str = ""  # empty: the local cache (make weights)
    input_size: int = DEFAULT_DETECTOR_INPUT  # shorter side the detector resizes frames to
    keyframe_interval: int = 1  # detect every k-th frame; between, boxes from the last frame's keypoints


@dataclass(frozen=True)
class PoseConfig:
    """Everything stage 1 needs besides its paths."""

    estimator: str = "vitpose"
    weights: str = ""  # empty: the local cache (make weights ESTIMATOR=...)
    device: str = "auto"
    reader: Literal["opencv", "pyav", "decord"] = "opencv"
    chunk_size: int = 32
    batch_size: int | None = None  # None: the estimator's settings file (or its default)
    flip_test: bool | None = None  # None: likewise
    estimator_settings: str = ""  # YAML of estimator settings; empty: configs/estimators/<estimator>.yaml
    max_failures: int = 0  # failed videos tolerated before the run exits non-zero
    video_key: Literal["stat", "sha256"] = "stat"  # a video's identity in the cache key (cache.py)
    extractor_version: int = EXTRACTOR_VERSION
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:  # bad settings fail before any video is read
        for name, value in (("chunk_size", self.chunk_size), ("batch_size", self.batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {self.max_failures}")
        d = self.detector
        if not 0.0 <= d.score_threshold <= 1.0:
            raise ValueError(f"detector.score_threshold must be in [0, 1], got {d.score_threshold}")
        if d.min_area < 0 or d.batch_size < 1:
            raise ValueError(f"detector: need min_area >= 0 and batch_size >= 1, got {d.min_area}, {d.batch_size}")
        if d.input_size < 32 or d.keyframe_interval < 1:
            raise ValueError(
                f"detector: need input_size >= 32 and keyframe_interval >= 1, got {d.input_size}, {d.keyframe_interval}"
            )
        if self.tracking.max_persons < 1:
            raise ValueError(f"tracking.max_persons must be >= 1, got {self.tracking.max_persons}")


def shard_of(items: list, shard: tuple[int, int]) -> list:
    """Every n-th item starting at i, for shard (i, n)."""
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return items[i::n]


class VideoExtractor:
    """Runs one estimator (and the detector it needs) over videos."""

    def __init__(self, *, cfg: PoseConfig, estimator: Any, detector: Any | None) -> None:
        check_estimator(estimator, cfg.estimator)
        if estimator.needs_boxes and detector is None:
            raise ValueError(f"estimator {cfg.estimator!r} is top-down and needs a person detector")
        self.cfg, self.estimator, self.detector = cfg, estimator, detector
        self.tracking = cfg.tracking
        cap = estimator.max_persons  # single-person models (BlazePose): M = 1, whatever the config says
        if cap is not None and self.tracking.max_persons > cap:
            self.tracking = dataclasses.replace(self.tracking, max_persons=cap)
        self.detector_info = self._detector_info()
        self.settings = self._content_settings()
        self.decoder: Executor | None = None  # the engine sets one: heatmaps decoded off the device loop
        self._pending: list[Future] = []

    def _content_settings(self) -> dict:
        """Every setting that changes a record's content, at its effective value (cache.py)."""
        from pose_extraction.estimators import load_settings

        cfg, est = self.cfg, self.estimator
        try:
            est_settings = load_settings(cfg.estimator, cfg.estimator_settings or None)
        except Exception:  # noqa: BLE001 -- estimators built without a settings file (tests)
            est_settings = {}
        est_settings = {k: v for k, v in est_settings.items() if k not in ("batch_size", "device", "crop")}
        if getattr(est, "crop_backend", "cv2") != "cv2":  # the crop as run ("auto" is per device); cv2 = keys before
            est_settings["crop"] = est.crop_backend
        settings = {
            "estimator": cfg.estimator,
            "estimator_version": est.version,
            "weights": cache.file_identity(est.weights),
            "estimator_settings": est_settings,
            "flip_test": bool(getattr(est, "flip_test", False)),  # models without a flip test: False
            "reader": cfg.reader,
            "extractor_version": cfg.extractor_version,
            "tracking": asdict(self.tracking),
        }
        if self.detector is not None:
            settings["detector"] = {k: v for k, v in self.detector_info.items() if k not in ("name", "sha256")}
            settings["detector"]["weights"] = cache.file_identity(getattr(self.detector, "weights", None))
            for k, default in (("input_size", DEFAULT_DETECTOR_INPUT), ("keyframe_interval", 1)):
                if settings["detector"][k] == default:  # at today's value: keys (and records) made before stay valid
                    del settings["detector"][k]
        return settings

    def _detector_info(self) -> dict | None:
        """The record's `detector` provenance: name, weights file and SHA-256, thresholds, input size, keyframes."""
        d, c = self.detector, self.cfg.detector
        if d is None:
            return None
        ident = cache.file_identity(getattr(d, "weights", None))
        describe = getattr(d, "describe", None)
        return {
            "name": describe()["name"] if callable(describe) else type(d).__name__,
            "weights": ident["name"],
            "sha256": ident.get("sha256", ""),
            "score_threshold": float(getattr(d, "score_threshold", c.score_threshold)),
            "min_area": float(getattr(d, "min_area", c.min_area)),
            "input_size": int(getattr(d, "min_size", c.input_size)),
            "keyframe_interval": int(c.keyframe_interval),
        }

    def effective_config(self) -> dict:
        """The config as applied (tracking capped by the estimator), for `OUT/pose_config.yaml`."""
        return {**to_dict(self.cfg), "tracking": asdict(self.tracking)}

    def key_for(self, video: Path) -> dict:
        """The cache key a record of `video` made by this extractor carries."""
        return cache.make_key(cache.video_identity(video, self.cfg.video_key), self.settings)

    def extract(self, video: Path) -> dict:
        """One video -> a pose record (not yet written)."""
        from pose_extraction.video import open_video

        with open_video(video, backend=self.cfg.reader, chunk_size=self.cfg.chunk_size) as reader:
            state = self.start(video, size=reader.size, fps=reader.fps)
            for start, chunk in reader.iter_chunks():
                self.add_chunk(state, start, chunk)
        return self.finish(state)

    def start(self, video: Path, *, size: tuple[int, int], fps: float) -> VideoState:
        """A new video's accumulators; then `add_chunk` for each chunk in order, then `finish`."""
        return VideoState(video=video, size=(int(size[0]), int(size[1])), fps=float(fps))

    def add_chunk(self, state: VideoState, start: int, chunk: np.ndarray) -> None:
        """Detect and estimate the frames uint8 [K, H, W, 3] starting at frame `start` of `state`'s video."""
        self._settle(state)  # chunks of this video still decoding come first
        frames = list(chunk)
        if self.detector is not None and self.cfg.detector.keyframe_interval > 1:
            fb, fs, poses = self._keyframe_chunk(state, start, frames)
        elif self.detector is not None:
            dets = self.detector.detect(frames)
            fb = [d[0] for d in dets]
            fs = [d[1] for d in dets]
            poses = self.estimator.estimate(frames, fb, start_index=start)
        else:
            poses = self.estimator.estimate(frames, None, start_index=start)
            fb, fs = [None] * len(frames), [None] * len(frames)
        self._append(state, poses, list(zip(fb, fs)))

    def add_chunks(self, items: list[tuple[VideoState, int, np.ndarray]]) -> list[BaseException | None]:
        """`add_chunk` for chunks of several videos, the top-down models' forwards shared across them.

        Detection and pose crops of all the chunks go through the detector and the estimator together (their own
        batch sizes split them), so short videos and the tail chunks of long ones fill a batch. With a `decoder`
        (an executor: the engine's), the heatmaps are decoded there while the device runs the next chunks; at most
        `MAX_PENDING_DECODES` batches wait, so memory stays bounded. Bottom-up and stand-in estimators, and keyframe
        detection (per-video state), take the chunks one by one. Returns, per item, None or the exception that
        chunk raised (a batched forward that fails is redone chunk by chunk, so an error belongs to its video
        only; a failed decode, which no input causes, fails the videos of its batch).
        """
        shared = self.detector is not None and self.cfg.detector.keyframe_interval == 1 and len(items) > 1
        forward = getattr(self.estimator, "forward_crops", None)
        if shared:
            try:
                frames = [f for _, _, chunk in items for f in chunk]
                dets = self.detector.detect(frames)
                boxes = [d[0] for d in dets]
                if self.decoder is not None and forward is not None:
                    self._bound_pending()
                    poses: Any = self.decoder.submit(self.estimator.decode_heatmaps, forward(frames, boxes))
                    self._pending.append(poses)
                else:
                    poses = self.estimator.estimate(frames, boxes)
            except Exception:  # noqa: BLE001 -- find the chunk it belongs to, below
                shared = False
        if not shared:
            errors: list[BaseException | None] = []
            for state, start, chunk in items:
                try:
                    self.add_chunk(state, start, chunk)
                    errors.append(None)
                except Exception as exc:  # noqa: BLE001 -- that video's failure
                    errors.append(exc)
            return errors
        offset = 0
        for state, _, chunk in items:
            part = slice(offset, offset + len(chunk))
            offset = part.stop
            if isinstance(poses, Future):  # decoding: appended in order once done (`_settle`)
                state.pending.append((poses, part, dets[part]))
            else:
                self._settle(state)
                self._append(state, poses[part], dets[part])
        return [None] * len(items)

    def _bound_pending(self) -> None:
        """Wait for the oldest decodes until fewer than MAX_PENDING_DECODES are outstanding."""
        self._pending = [f for f in self._pending if not f.done()]
        while len(self._pending) >= MAX_PENDING_DECODES:
            wait_futures([self._pending.pop(0)])

    def _settle(self, state: VideoState) -> None:
        """Append the poses of `state`'s chunks still decoding in `decoder`, in order (a decode error is re-raised
        here: the video's failure)."""
        for future, part, dets in state.pending:
            self._append(state, future.result()[part], dets)
        state.pending.clear()

    def _append(self, state: VideoState, poses: list, dets: list) -> None:
        for (kp, sc), (b, bs) in zip(poses, dets):
            state.kps.append(kp)
            state.scores.append(np.clip(sc, 0.0, 1.0))  # heatmap maxima can exceed 1
            state.boxes.append(b)
            state.box_scores.append(bs)

    def _keyframe_chunk(self, state: VideoState, start: int, frames: list[np.ndarray]) -> tuple[list, list, list]:
        """Boxes, box scores and poses of a chunk, detecting only every k-th frame of the video.

        Frame t with t % k == 0 gets the detector's boxes; frame t + j (0 < j < k) gets, per person
        of frame t + j - 1, the box around its joints scored >= KEYFRAME_JOINT_SCORE, grown by
        KEYFRAME_BOX_GROWTH (a person with fewer than 2 such joints is dropped), with that person's
        box score. The frames at one offset j share a forward pass.
        """
        k, n = self.cfg.detector.keyframe_interval, len(frames)
        boxes: list = [None] * n
        box_scores: list = [None] * n
        poses: list = [None] * n
        keys = [i for i in range(n) if (start + i) % k == 0]
        if keys:
            for i, (b, s) in zip(keys, self.detector.detect([frames[i] for i in keys])):
                boxes[i], box_scores[i] = b, s
        for j in range(k):
            idx = [i for i in range(n) if (start + i) % k == j]
            if not idx:
                continue
            if j:
                for i in idx:  # frame i - 1 (or the previous chunk's last frame) is done
                    kp, sc = poses[i - 1] if i else (state.kps[-1], state.scores[-1])
                    prev_scores = box_scores[i - 1] if i else state.box_scores[-1]
                    boxes[i], box_scores[i] = boxes_from_keypoints(kp, sc, prev_scores, frames[i].shape[:2])
            for i, pose in zip(idx, self.estimator.estimate([frames[i] for i in idx], [boxes[i] for i in idx])):
                poses[i] = pose
        return boxes, box_scores, poses

    def finish(self, state: VideoState) -> dict:
        """Track persons over the whole video and build its record (not yet written)."""
        self._settle(state)
        video, kps, (h, w) = state.video, state.kps, state.size
        has_boxes = self.detector is not None
        if not any(len(k) for k in kps):
            raise NoPersonError(f"no person detected in any of the {len(kps)} frames")
        tracked = track_persons(
            state.boxes if has_boxes else None,
            state.box_scores if has_boxes else None,
            kps,
            state.scores,
            cfg=self.tracking,
        )
        rec = {
            "frame_dir": video.stem,
            "total_frames": len(kps),
            "img_shape": (h, w),
            "original_shape": (h, w),
            "keypoint": tracked["keypoint"],
            "keypoint_score": tracked["keypoint_score"],
            "fps": state.fps,
            "person_ids": tracked["person_ids"],
            "estimator": {
                "name": self.cfg.estimator,
                "weights": self.estimator.weights,
                "version": self.estimator.version,
            },
            "schema_version": SCHEMA_VERSION,
            "extractor_version": EXTRACTOR_VERSION,
            "tracking": tracked["tracking"],
            "source": str(video),
        }
        if has_boxes:
            rec["box"], rec["box_score"] = tracked["box"], tracked["box_score"]
            rec["detector"] = dict(self.detector_info)
        return rec


def boxes_from_keypoints(
    kp: np.ndarray, scores: np.ndarray, box_scores: np.ndarray, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per person, the box (x1, y1, x2, y2) around its confident joints, grown and clipped to the image.

    Args:
        kp: keypoints [k, V, 2] pixels; scores: [k, V]; box_scores: [k].
        image_size: (H, W).

    Returns:
        boxes float32 [k', 4] and their scores float32 [k'] (k' <= k: persons with < 2 confident joints dropped).
    """
    h, w = image_size
    out, kept = [], []
    for p in range(len(kp)):
        pts = kp[p][scores[p] >= KEYFRAME_JOINT_SCORE]  # [n, 2]
        if len(pts) < 2:
            continue
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        center, half = (lo + hi) / 2, np.maximum((hi - lo) * KEYFRAME_BOX_GROWTH / 2, 1.0)
        x1, y1 = np.maximum(center - half, 0.0)
        x2, y2 = np.minimum(center + half, (w, h))
        if x2 > x1 and y2 > y1:
            out.append((x1, y1, x2, y2))
            kept.append(box_scores[p])
    return np.asarray(out, np.float32).reshape(-1, 4), np.asarray(kept, np.float32)


@dataclass
class VideoState:
    """One video's per-frame detections and poses so far (`VideoExtractor.start`)."""

    video: Path
    size: tuple[int, int]  # (H, W)
    fps: float
    boxes: list = field(default_factory=list)
    box_scores: list = field(default_factory=list)
    kps: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    pending: list = field(default_factory=list)  # per chunk still decoding: (its Future, its slice, detections)


def run_extract(
    extractor: VideoExtractor,
    videos: list[Path],
    out: Path,
    *,
    shard: tuple[int, int] = (0, 1),
    max_failures: int = 0,
    progress: bool = True,
    overwrite: bool = True,
    retry_failed: bool = False,
    workers: int = 1,
) -> dict:
    """Extract `videos` (this shard) into `out`; returns counts.

    Args:
        overwrite: re-extract a record made from another video or with other settings; with
            False it is kept, reported (what differs) and the run fails at the end.
        retry_failed: extract again videos that failed before (their marker names the error).
        workers: decode processes; 1 decodes in this process (a background thread), N >= 2
            runs the pipelined engine (`pose_extraction/engine.py`), same records.

    Raises:
        ValueError: two videos share an id (before any work).
        RuntimeError: more than `max_failures` of this shard's videos failed, or records were
            refused (`overwrite=False`).
    """
    check_unique_video_ids(videos)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / cache.FAILED_DIR):  # leftovers of killed writers, also where this run may not write
        remove_orphaned_temps(folder)
    mine = shard_of(videos, shard)
    counts: Counter = Counter()
    refused: list[str] = []
    busy: list[Path] = []

    def visit(video: Path, *, wait: bool) -> None:
        outcome = extract_one(extractor, video, out, overwrite=overwrite, retry_failed=retry_failed, wait=wait)
        if outcome == "busy":
            busy.append(video)
            return
        counts[outcome if isinstance(outcome, str) else "refused"] += 1
        if not isinstance(outcome, str):
            refused.append(outcome[1])

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and len(mine) > 1:
        from pose_extraction.engine import Engine

        n = min(workers, len(mine))
        engine = Engine(extractor, out, workers=n, overwrite=overwrite, retry_failed=retry_failed)
        engine.run(progress_bar(mine, desc=f"extract {shard[0]}/{shard[1]}", disable=not progress, leave=True))
        counts.update(engine.counts)
        refused += engine.refused
        busy += engine.busy
    else:
        for video in progress_bar(mine, desc=f"extract {shard[0]}/{shard[1]}", disable=not progress, leave=True):
            visit(video, wait=False)
    for video in list(busy):  # claimed by another process: wait for it, then take over what it left
        busy.remove(video)
        visit(video, wait=True)
    cache.sweep_claims(out)
    failures_path = cache.write_failures_file(out)
    failed = sum(cache.read_failure(out, v.stem) is not None for v in mine)
    summary = {
        "videos": len(mine),
        "extracted": counts["extracted"],
        "skipped_existing": counts["skipped"],
        "skipped_failed": counts["skipped_failed"],
        "done_by_another_process": counts["done_by_other"],
        "failed": failed,
        "refused": len(refused),
        "failures_file": str(failures_path),
    }
    log.info("extract: %s", summary)
    if refused:
        raise RuntimeError(
            f"{len(refused)} of {len(mine)} existing records differ from this run and were kept "
            f"(--no-overwrite); first: {refused[0]}; rerun without --no-overwrite to re-extract"
        )
    if failed > max_failures:
        raise RuntimeError(
            f"{failed} of {len(mine)} videos failed (see {failures_path}); the others are "
            f"written and will be skipped on the next run (failed ones too, unless --retry-failed)"
        )
    return summary


def distributed_shard() -> tuple[int, int] | None:
    """(rank, world) under torchrun, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None

"""Stage 1 driver: videos -> one pose record per video, `OUT/<video_id>.pkl`.

Per video: stream frames in chunks (background decode), detect persons (top-down estimators),
estimate keypoints for all boxes of a chunk in batched forwards, then track persons across the
whole video and keep the M best tracks (`tracking.py`). The record is validated and written
atomically, so a killed run leaves no partial record; an existing record that validates is
skipped (resume). A failing video is logged to `OUT/failures.jsonl` and the run goes on; the
run fails at the end if any video failed beyond `max_failures`. Under `torchrun` (or with
`shard=(i, n)`) each rank takes every n-th video.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import atomic_write_text
from pipeline.schema import SCHEMA_VERSION, SchemaError, read_record, write_record
from pose_extraction.tracking import TrackingConfig, track_persons

log = logging.getLogger(__name__)

EXTRACTOR_VERSION = 1  # bump when the records' meaning changes (Make re-extracts on it)


class NoPersonError(RuntimeError):
    """A video in which no frame has a person: no record is written (a failure line instead)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Person detector (torchvision Faster R-CNN R50-FPN v2, COCO) settings."""

    score_threshold: float = 0.5
    min_area: float = 1600.0
    batch_size: int = 8
    weights: str = ""  # empty: the local cache (make weights)


@dataclass(frozen=True)
class PoseConfig:
    """Everything stage 1 needs besides its paths."""

    estimator: str = "vitpose"
    weights: str = ""  # empty: the local cache (make weights ESTIMATOR=...)
    device: str = "auto"
    reader: str = "opencv"
    chunk_size: int = 32
    batch_size: int = 32
    flip_test: bool = True
    estimator_settings: str = ""  # YAML of estimator settings; empty: configs/estimators/<estimator>.yaml
    max_failures: int = 0  # failed videos tolerated before the run exits non-zero
    extractor_version: int = EXTRACTOR_VERSION
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def shard_of(items: list, shard: tuple[int, int]) -> list:
    """Every n-th item starting at i, for shard (i, n)."""
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: need 0 <= i < n")
    return items[i::n]


def record_is_done(path: Path) -> bool:
    """True if `path` holds a valid record (a corrupt or partial one is redone)."""
    if not path.is_file():
        return False
    try:
        read_record(path)
    except (SchemaError, Exception) as exc:  # unreadable: extract again
        log.warning("%s exists but is invalid (%s); extracting again", path, str(exc).splitlines()[0])
        return False
    return True


class VideoExtractor:
    """Runs one estimator (and the detector it needs) over videos."""

    def __init__(self, *, cfg: PoseConfig, estimator: Any, detector: Any | None) -> None:
        if getattr(estimator, "needs_boxes", True) and detector is None:
            raise ValueError(f"estimator {cfg.estimator!r} is top-down and needs a person detector")
        self.cfg, self.estimator, self.detector = cfg, estimator, detector

    def extract(self, video: Path) -> dict:
        """One video -> a pose record (not yet written)."""
        from pose_extraction.video import open_video

        boxes, box_scores, kps, scores = [], [], [], []
        with open_video(video, backend=self.cfg.reader, chunk_size=self.cfg.chunk_size) as reader:
            h, w = reader.size
            fps = reader.fps
            for start, chunk in reader.iter_chunks():
                frames = list(chunk)
                if self.detector is not None:
                    dets = self.detector.detect(frames)
                    fb = [d[0] for d in dets]
                    fs = [d[1] for d in dets]
                    poses = self.estimator.estimate(frames, fb)
                else:
                    poses = self.estimator.estimate(frames, None, start_index=start)
                    fb, fs = [None] * len(frames), [None] * len(frames)
                for (kp, sc), b, bs in zip(poses, fb, fs):
                    kps.append(kp)
                    scores.append(np.clip(sc, 0.0, 1.0))  # heatmap maxima can exceed 1
                    boxes.append(b)
                    box_scores.append(bs)
        has_boxes = self.detector is not None
        if not any(len(k) for k in kps):
            raise NoPersonError(f"no person detected in any of the {len(kps)} frames")
        tracking = self.cfg.tracking
        cap = getattr(self.estimator, "max_persons", None)  # single-person models (BlazePose): M = 1
        if cap is not None and tracking.max_persons > cap:
            tracking = dataclasses.replace(tracking, max_persons=cap)
        tracked = track_persons(boxes if has_boxes else None, box_scores if has_boxes else None, kps, scores,
                                cfg=tracking)  # fmt: skip
        rec = {
            "frame_dir": video.stem, "total_frames": len(kps), "img_shape": (int(h), int(w)),
            "original_shape": (int(h), int(w)), "keypoint": tracked["keypoint"],
            "keypoint_score": tracked["keypoint_score"], "fps": float(fps), "person_ids": tracked["person_ids"],
            "estimator": {"name": self.cfg.estimator, "weights": str(getattr(self.estimator, "weights", "")),
                          "version": str(getattr(self.estimator, "version", ""))},
            "schema_version": SCHEMA_VERSION, "extractor_version": EXTRACTOR_VERSION,
            "tracking": tracked["tracking"], "source": str(video),
        }  # fmt: skip
        if has_boxes:
            rec["box"], rec["box_score"] = tracked["box"], tracked["box_score"]
        return rec


def run_extract(extractor: VideoExtractor, videos: list[Path], out: Path, *, shard: tuple[int, int] = (0, 1),
                max_failures: int = 0, progress: bool = True) -> dict:  # fmt: skip
    """Extract `videos` (this shard) into `out`; returns counts. Raises RuntimeError past max_failures."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    mine = shard_of(videos, shard)
    tag = f".rank{shard[0]}" if shard[1] > 1 else ""
    failures_path = out / f"failures{tag}.jsonl"
    failures: list[dict] = []
    done = skipped = 0
    for video in tqdm(mine, desc=f"extract {shard[0]}/{shard[1]}", disable=not progress, dynamic_ncols=True):
        dest = out / f"{video.stem}.pkl"
        if record_is_done(dest):
            skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            rec = extractor.extract(video)
            write_record(rec, dest)
            done += 1
            log.info("%s: %d frames, %d persons kept, %.1f s", video.name, rec["total_frames"],
                     rec["keypoint"].shape[0], time.perf_counter() - t0)  # fmt: skip
        except Exception as exc:  # one bad video must not stop the others: logged, counted, reported
            log.error("%s: %s", video, exc)
            log.debug("%s", traceback.format_exc())
            failures.append({"video": str(video), "error": f"{type(exc).__name__}: {exc}"})
    # the failures file describes the latest run of this shard
    atomic_write_text(failures_path, "".join(json.dumps(f) + "\n" for f in failures))
    summary = {"videos": len(mine), "extracted": done, "skipped_existing": skipped, "failed": len(failures),
               "failures_file": str(failures_path)}  # fmt: skip
    log.info("extract: %s", summary)
    if len(failures) > max_failures:
        raise RuntimeError(f"{len(failures)} of {len(mine)} videos failed (see {failures_path}); "
                           f"the others are written and will be skipped on the next run")  # fmt: skip
    return summary


def config_summary(cfg: PoseConfig) -> dict:
    return asdict(cfg)


def distributed_shard() -> tuple[int, int] | None:
    """(rank, world) under torchrun, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None

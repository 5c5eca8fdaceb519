"""Overlay a pose record on its video: skeletons, joints and track ids (and optional labels)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.schema import COCO17_EDGES

log = logging.getLogger(__name__)

_COLORS = ((66, 135, 245), (245, 96, 66), (80, 200, 120), (230, 200, 40))  # RGB per person slot


def draw_poses(
    frame: np.ndarray, kp: np.ndarray, score: np.ndarray, ids: np.ndarray, *, min_score: float = 0.05
) -> np.ndarray:
    """Draw persons kp [M, 17, 2] / score [M, 17] on an RGB frame (returns a copy)."""
    import cv2

    img = np.ascontiguousarray(frame.copy())
    thick = max(1, round(min(img.shape[:2]) / 240))
    for m in range(kp.shape[0]):
        if score[m].max() <= min_score:
            continue
        color = _COLORS[m % len(_COLORS)]
        pts = kp[m].round().astype(int)
        for a, b in COCO17_EDGES:
            if score[m, a] > min_score and score[m, b] > min_score:
                cv2.line(img, tuple(pts[a]), tuple(pts[b]), color, thick, cv2.LINE_AA)
        for j in range(17):
            if score[m, j] > min_score:
                cv2.circle(img, tuple(pts[j]), thick + 1, color, -1, cv2.LINE_AA)
        visible = pts[score[m] > min_score]
        top = visible[visible[:, 1].argmin()]
        cv2.putText(
            img,
            f"id {int(ids[m])}",
            (int(top[0]), max(12, int(top[1]) - 6)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            color,
            thick,
            cv2.LINE_AA,
        )
    return img


def render_video(
    record: dict, video: str | Path, out: str | Path, *, caption: Callable[[int], str] | None = None
) -> int:
    """Write `out` (mp4v) with the record's skeletons over `video`; returns frames written.

    Args:
        caption: optional text per frame index (e.g. the predicted label of its window).
    """
    import cv2

    from pose_extraction.video import open_video

    out = Path(out)
    kp, score = record["keypoint"], record["keypoint_score"]
    ids = record.get("person_ids", np.arange(kp.shape[0]))
    n = 0
    with open_video(video) as reader:
        h, w = reader.size
        # cv2 needs a real file name with the extension: write beside, then rename atomically
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.rendering{out.suffix}")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), reader.fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"cannot open a video writer for {out}")
        try:
            for start, chunk in reader.iter_chunks():
                for i, frame in enumerate(chunk):
                    t = start + i
                    img = draw_poses(frame, kp[:, t], score[:, t], ids) if t < kp.shape[1] else frame
                    if caption is not None:
                        cv2.putText(
                            img, caption(t), (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
                        )
                    writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                    n += 1
        except BaseException:
            writer.release()
            tmp.unlink(missing_ok=True)
            raise
        writer.release()
        tmp.replace(out)
    log.info("wrote %s (%d frames)", out, n)
    return n

"""Person tracking and selection: per-frame detections in, M identity-consistent person slots out.

Input, per frame t (k_t detections, any k_t >= 0): boxes [k, 4] (x1, y1, x2, y2), box scores
[k], keypoints [k, V, 2] pixels and keypoint scores [k, V]. Bottom-up estimators have no boxes:
pass `boxes=None` and each detection's box becomes the min/max of its keypoints with score > 0
(a detection with no such keypoint is dropped), its box score the mean keypoint score.

Association, frame by frame (greedy in time, optimal within a frame):
    cost(track, det) = iou_weight * (1 - IoU(last box, box))
                     + kp_weight * min(1, mean_j |last kp_j - kp_j| / box diagonal)
over the joints scored > 0 in both (no common joint: distance term 1); the diagonal is the mean
of the two boxes' diagonals. Tracks last seen at most `max_age` frames ago (up to max_age
missed frames) are matched to the frame's detections by the Hungarian algorithm
(scipy.optimize.linear_sum_assignment); a pair costing more than `max_cost` is not a match;
unmatched detections start new tracks (ids 0, 1, ... in order of creation). The cost uses the
track's last observation only (no motion model): two people of the same size and pose whose
boxes coincide exactly can swap ids; different sizes or poses keep them apart.

Selection: each track's rank = frames present x mean keypoint score (over its frames and
joints); the `max_persons` best are kept, best first (ties: earlier start, then lower id).
MMAction2's NTU extraction script (tools/data/skeleton/ntu_pose_extraction.py) similarly
builds IoU tracklets and keeps the long, large ones; here the rule is one number per track.

Output (the data contract's arrays, M = min(max_persons, tracks found), 0 with no detection):
    keypoint float32 [M, T, V, 2], keypoint_score float32 [M, T, V], box float32 [M, T, 4],
    box_score float32 [M, T] (zeros where a track is absent), person_ids int64 [M] (track ids),
    tracking: a dict of plain Python values (rule, thresholds, tracks found, kept ids with their
    frame counts and scores) for the pose record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NUM_JOINTS = 17  # V when there is no detection to read it from (COCO-17)
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackingConfig:
    """Association and selection settings (see the module docstring for the rule).

    Attributes:
        iou_weight: weight of (1 - IoU) in the cost.
        kp_weight: weight of the normalised keypoint distance in the cost.
        max_cost: pairs costing more are never matched (with weights summing to 1 the cost is
            in [0, 1]; 0.8 allows e.g. IoU 0.2 with 40 % of a diagonal of keypoint motion).
        max_age: frames a track may go unseen and still be matched.
        max_persons: M, the tracks kept.
    """

    iou_weight: float = 0.5
    kp_weight: float = 0.5
    max_cost: float = 0.8
    max_age: int = 5
    max_persons: int = 2

    def __post_init__(self) -> None:
        if self.iou_weight < 0 or self.kp_weight < 0 or self.iou_weight + self.kp_weight <= 0:
            raise ValueError(
                f"tracking: iou_weight and kp_weight must be >= 0 and not both 0, "
                f"got {self.iou_weight}, {self.kp_weight}"
            )
        if self.max_age < 0 or self.max_persons < 0:
            raise ValueError(f"tracking: max_age and max_persons must be >= 0, got {self.max_age}, {self.max_persons}")


@dataclass
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)  # frame indices, increasing
    dets: list[int] = field(default_factory=list)  # detection index in each of those frames
    score_sum: float = 0.0  # sum over frames of the mean keypoint score
    box: np.ndarray | None = None  # last observation: [4], [V, 2], [V]
    kp: np.ndarray | None = None
    kp_score: np.ndarray | None = None

    def add(self, t: int, d: int, box: np.ndarray, kp: np.ndarray, kp_score: np.ndarray) -> None:
        self.frames.append(t)
        self.dets.append(d)
        self.score_sum += float(kp_score.mean()) if kp_score.size else 0.0
        self.box, self.kp, self.kp_score = box, kp, kp_score

    @property
    def mean_score(self) -> float:
        return self.score_sum / len(self.frames)

    @property
    def rank(self) -> float:
        return len(self.frames) * self.mean_score  # frames present x mean keypoint score


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a [n, 4] and b [m, 4] (x1, y1, x2, y2) -> [n, m]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [n, m, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # [n, m, 2]
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)  # [n, m]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)  # [n]
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)  # [m]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def keypoint_distance(
    kp_a: np.ndarray, sc_a: np.ndarray, box_a: np.ndarray, kp_b: np.ndarray, sc_b: np.ndarray, box_b: np.ndarray
) -> np.ndarray:
    """Mean distance of the joints scored > 0 in both, over the mean box diagonal, clipped to 1.

    Shapes: kp_a [n, V, 2], sc_a [n, V], box_a [n, 4]; the same with m for b. Returns [n, m];
    1 where two detections share no scored joint.
    """
    both = (sc_a[:, None, :] > 0) & (sc_b[None, :, :] > 0)  # [n, m, V]
    dist = np.linalg.norm(kp_a[:, None] - kp_b[None], axis=-1)  # [n, m, V]
    count = both.sum(axis=2)  # [n, m]
    mean = np.where(both, dist, 0.0).sum(axis=2) / np.maximum(count, 1)
    diag_a = np.linalg.norm(box_a[:, 2:] - box_a[:, :2], axis=1)  # [n]
    diag_b = np.linalg.norm(box_b[:, 2:] - box_b[:, :2], axis=1)  # [m]
    diag = (diag_a[:, None] + diag_b[None, :]) / 2  # [n, m]
    norm = np.where(diag > 0, mean / np.where(diag > 0, diag, 1), 1.0)
    return np.where(count > 0, np.minimum(norm, 1.0), 1.0)


def boxes_from_keypoints(kp: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [k, 4] spanning each detection's keypoints with score > 0, and which are valid [k]."""
    visible = sc > 0  # [k, V]
    valid = visible.any(axis=1)
    big = np.float32(np.finfo(np.float32).max)
    lo = np.where(visible[..., None], kp, big).min(axis=1)  # [k, 2]
    hi = np.where(visible[..., None], kp, -big).max(axis=1)  # [k, 2]
    boxes = np.where(valid[:, None], np.concatenate([lo, hi], axis=1), 0.0)  # [k, 4]
    return boxes.astype(np.float32), valid


def _frames(boxes, box_scores, keypoints, scores) -> list[tuple[np.ndarray, ...]]:
    """Validate per-frame inputs; return [(box [k,4], box_score [k], kp [k,V,2], kp_score [k,V])]."""
    t_len = len(keypoints)
    for name, seq in (("boxes", boxes), ("box_scores", box_scores), ("scores", scores)):
        if seq is not None and len(seq) != t_len:
            raise ValueError(f"tracking: {name} has {len(seq)} frames, keypoints has {t_len}")
    out = []
    for t in range(t_len):
        kp = np.asarray(keypoints[t], np.float32)
        sc = np.asarray(scores[t], np.float32)
        if kp.size == 0:
            kp = kp.reshape(0, NUM_JOINTS, 2)
        if sc.size == 0:
            sc = sc.reshape(0, kp.shape[1])
        if kp.ndim != 3 or kp.shape[2] != 2 or sc.shape != kp.shape[:2]:
            raise ValueError(
                f"tracking: frame {t}: expected keypoints [k, V, 2] and scores [k, V], got {kp.shape} and {sc.shape}"
            )
        if boxes is None:
            box, valid = boxes_from_keypoints(kp, sc)
            bs = sc.mean(axis=1) if box_scores is None else np.asarray(box_scores[t], np.float32).reshape(-1)
            box, bs, kp, sc = box[valid], bs[valid], kp[valid], sc[valid]
        else:
            box = np.asarray(boxes[t], np.float32).reshape(-1, 4)
            bs = (
                np.ones(len(box), np.float32)
                if box_scores is None
                else np.asarray(box_scores[t], np.float32).reshape(-1)
            )
        if not len(box) == len(bs) == len(kp):
            raise ValueError(f"tracking: frame {t}: {len(box)} boxes, {len(bs)} box scores and {len(kp)} keypoint sets")
        out.append((box, bs.astype(np.float32), kp, sc))
    return out


def _associate(
    active: list[_Track], box: np.ndarray, kp: np.ndarray, sc: np.ndarray, cfg: TrackingConfig
) -> list[tuple[int, int]]:
    """Hungarian matching of active tracks to this frame's detections; returns (track, det) pairs."""
    if not active or not len(box):
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:
        raise ImportError("tracking needs scipy: pip install scipy") from e
    t_box = np.stack([tr.box for tr in active])  # [n, 4]
    t_kp = np.stack([tr.kp for tr in active])  # [n, V, 2]
    t_sc = np.stack([tr.kp_score for tr in active])  # [n, V]
    cost = cfg.iou_weight * (1.0 - box_iou(t_box, box)) + cfg.kp_weight * keypoint_distance(
        t_kp, t_sc, t_box, kp, sc, box
    )  # [n, m]
    rows, cols = linear_sum_assignment(np.where(cost <= cfg.max_cost, cost, _INFEASIBLE))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if cost[r, c] <= cfg.max_cost]


def track_persons(
    boxes: Sequence[np.ndarray] | None,
    box_scores: Sequence[np.ndarray] | None,
    keypoints: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    cfg: TrackingConfig = TrackingConfig(),
) -> dict[str, Any]:
    """Link per-frame detections into tracks and keep the `cfg.max_persons` best.

    Args:
        boxes: per frame [k, 4] (x1, y1, x2, y2) pixels, or None to derive boxes from keypoints.
        box_scores: per frame [k], or None (ones with boxes, mean keypoint score without).
        keypoints: per frame [k, V, 2] pixels.
        scores: per frame [k, V] keypoint scores; a joint scored 0 is missing.
        cfg: the association and selection settings.

    Returns:
        {"keypoint" [M, T, V, 2], "keypoint_score" [M, T, V], "box" [M, T, 4],
        "box_score" [M, T] (float32, zeros where absent), "person_ids" int64 [M],
        "tracking": plain-type summary}.
    """
    frames = _frames(boxes, box_scores, keypoints, scores)
    t_len = len(frames)
    tracks: list[_Track] = []
    for t, (box, _, kp, sc) in enumerate(frames):
        active = [tr for tr in tracks if t - tr.frames[-1] - 1 <= cfg.max_age]
        pairs = _associate(active, box, kp, sc, cfg)
        for ti, d in pairs:
            active[ti].add(t, d, box[d], kp[d], sc[d])
        matched = {d for _, d in pairs}
        for d in range(len(box)):
            if d not in matched:
                tracks.append(_Track(id=len(tracks)))
                tracks[-1].add(t, d, box[d], kp[d], sc[d])

    ranked = sorted(tracks, key=lambda tr: (-tr.rank, tr.frames[0], tr.id))
    kept = ranked[: cfg.max_persons]
    n_joints = next((f[2].shape[1] for f in frames if len(f[2])), NUM_JOINTS)
    m = len(kept)
    out = {
        "keypoint": np.zeros((m, t_len, n_joints, 2), np.float32),
        "keypoint_score": np.zeros((m, t_len, n_joints), np.float32),
        "box": np.zeros((m, t_len, 4), np.float32),
        "box_score": np.zeros((m, t_len), np.float32),
        "person_ids": np.array([tr.id for tr in kept], np.int64),
    }
    for slot, tr in enumerate(kept):
        for t, d in zip(tr.frames, tr.dets):
            box, bs, kp, sc = frames[t]
            out["keypoint"][slot, t], out["keypoint_score"][slot, t] = kp[d], sc[d]
            out["box"][slot, t], out["box_score"][slot, t] = box[d], bs[d]
    out["tracking"] = _summary(cfg, tracks, kept, ranked[cfg.max_persons :], boxes is None)
    return out


def _summary(
    cfg: TrackingConfig, tracks: list[_Track], kept: list[_Track], dropped: list[_Track], from_keypoints: bool
) -> dict[str, Any]:
    def info(tr: _Track) -> dict[str, Any]:
        return {
            "id": tr.id,
            "frames": len(tr.frames),
            "first_frame": tr.frames[0],
            "last_frame": tr.frames[-1],
            "mean_score": round(tr.mean_score, 6),
            "rank_score": round(tr.rank, 6),
        }

    summary = {
        "rule": "hungarian: iou_weight*(1-IoU) + kp_weight*min(1, keypoint distance / box diagonal), "
        "gated by max_cost; keep max_persons tracks by frames x mean keypoint score",
        **asdict(cfg),
        "box_source": "keypoints" if from_keypoints else "detector",
        "num_tracks": len(tracks),
        "kept": [info(tr) for tr in kept],
        "best_dropped": info(dropped[0]) if dropped else None,
    }

    def brief(tr: _Track) -> str:
        return f"id {tr.id} ({len(tr.frames)} frames x score {tr.mean_score:.2f})"

    log.info(
        "tracking: %d tracks found; kept %s; best dropped: %s",
        len(tracks),
        ", ".join(map(brief, kept)) or "none",
        brief(dropped[0]) if dropped else "none",
    )
    return summary

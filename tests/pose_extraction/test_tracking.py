"""Tracking: identities through crossings and gaps, top-M selection, the output contract."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.schema import validate_record
from pose_extraction.tracking import TrackingConfig, box_iou, boxes_from_keypoints, keypoint_distance, track_persons

pytest.importorskip("scipy")

# A standing person in unit coordinates (COCO-17 order), about 0.5 wide and 1.0 tall.
_STAND = np.array(
    [
        [0.00, -0.45],
        [-0.03, -0.48],
        [0.03, -0.48],
        [-0.07, -0.46],
        [0.07, -0.46],  # face
        [-0.15, -0.30],
        [0.15, -0.30],
        [-0.20, -0.10],
        [0.20, -0.10],
        [-0.22, 0.08],
        [0.22, 0.08],  # arms
        [-0.10, 0.05],
        [0.10, 0.05],
        [-0.11, 0.28],
        [0.11, 0.28],
        [-0.12, 0.50],
        [0.12, 0.50],  # legs
    ],
    np.float32,
)
_ARMS_UP = _STAND.copy()
_ARMS_UP[7:11] = [[-0.22, -0.50], [0.22, -0.50], [-0.25, -0.72], [0.25, -0.72]]  # elbows, wrists


def person(cx: float, cy: float, height: float = 160.0, pose: np.ndarray = _STAND, score: float = 0.9):
    """One detection: (box [4], keypoints [17, 2], scores [17])."""
    kp = pose * height + np.array([cx, cy], np.float32)
    box = np.concatenate([kp.min(axis=0) - 5, kp.max(axis=0) + 5]).astype(np.float32)
    return box, kp.astype(np.float32), np.full(17, score, np.float32)


def frames_of(per_frame: list[list[tuple]]) -> tuple[list, list, list, list]:
    """[[detection, ...] per frame] -> the four per-frame lists track_persons takes."""
    boxes, bscores, kps, scores = [], [], [], []
    for dets in per_frame:
        boxes.append(np.array([d[0] for d in dets], np.float32).reshape(-1, 4))
        bscores.append(np.full(len(dets), 0.95, np.float32))
        kps.append(np.array([d[1] for d in dets], np.float32).reshape(-1, 17, 2))
        scores.append(np.array([d[2] for d in dets], np.float32).reshape(-1, 17))
    return boxes, bscores, kps, scores


def slot_of(out: dict, kp_at_t: np.ndarray, t: int) -> int:
    """The output slot holding these keypoints at frame t."""
    hits = [m for m in range(len(out["person_ids"])) if np.allclose(out["keypoint"][m, t], kp_at_t)]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("variant", ["different_size", "same_size_different_pose"])
def test_crossing_paths_keep_ids(variant):
    """A walks right, B walks left; their boxes overlap (or coincide) mid-way."""
    T = 31
    a_track, b_track, per_frame = [], [], []
    for t in range(T):
        x_a, x_b = 100 + 10 * t, 400 - 10 * t  # meet at t = 15
        if variant == "different_size":
            a, b = person(x_a, 200, 160), person(x_b, 190, 120)  # B is farther away
        else:
            a, b = person(x_a, 200, 160, _STAND), person(x_b, 200, 160, _ARMS_UP)
        a_track.append(a)
        b_track.append(b)
        per_frame.append([a, b] if t % 2 else [b, a])  # detection order carries no identity
    out = track_persons(*frames_of(per_frame), cfg=TrackingConfig())
    assert out["tracking"]["num_tracks"] == 2
    sa, sb = slot_of(out, a_track[0][1], 0), slot_of(out, b_track[0][1], 0)
    for t in range(T):
        np.testing.assert_allclose(out["keypoint"][sa, t], a_track[t][1])
        np.testing.assert_allclose(out["keypoint"][sb, t], b_track[t][1])
    if variant == "same_size_different_pose":
        assert box_iou(a_track[15][0][None], b_track[15][0][None])[0, 0] > 0.6  # they really overlap


def _gap_video(gap: int, T: int = 25):
    """A person present in frames 0-9 and from 10 + gap on, absent in between; a second one always."""
    per_frame = []
    for t in range(T):
        dets = [person(400, 200, pose=_ARMS_UP)]
        if t < 10 or t >= 10 + gap:
            dets.append(person(100 + 2 * t, 200))
        per_frame.append(dets)
    return per_frame


def test_reentry_within_max_age_keeps_id():
    out = track_persons(*frames_of(_gap_video(gap=5)), cfg=TrackingConfig(max_age=5))
    assert out["tracking"]["num_tracks"] == 2
    slot = slot_of(out, person(100, 200)[1], 0)
    present = out["keypoint_score"][slot].max(axis=1) > 0
    assert present.tolist() == [True] * 10 + [False] * 5 + [True] * 10
    assert (out["keypoint"][slot, 10:15] == 0).all() and (out["box"][slot, 10:15] == 0).all()
    assert (out["box_score"][slot, 10:15] == 0).all() and (out["box_score"][slot, :10] == 0.95).all()


def test_reentry_beyond_max_age_gets_new_id():
    out = track_persons(*frames_of(_gap_video(gap=6)), cfg=TrackingConfig(max_age=5, max_persons=3))
    assert out["tracking"]["num_tracks"] == 3
    first, second = slot_of(out, person(100, 200)[1], 0), slot_of(out, person(132, 200)[1], 16)
    assert out["person_ids"][first] != out["person_ids"][second]
    assert out["keypoint_score"][first, 16:].max() == 0 and out["keypoint_score"][second, :16].max() == 0


def test_top_m_by_frames_times_score(caplog):
    """A: 20 frames x 0.9 = 18; B: 10 x 0.9 = 9; C: 20 x 0.3 = 6. Keep A then B; C is dropped."""
    per_frame = []
    for t in range(20):
        dets = [person(100, 200, score=0.9), person(500, 200, score=0.3)]  # A, C
        if t >= 10:
            dets.append(person(300, 200, score=0.9))  # B
        per_frame.append(dets)
    with caplog.at_level(logging.INFO, logger="pose_extraction.tracking"):
        out = track_persons(*frames_of(per_frame), cfg=TrackingConfig(max_persons=2))
    ids = {"A": 0, "C": 1, "B": 2}  # creation order: A, C in frame 0, B in frame 10
    assert out["person_ids"].tolist() == [ids["A"], ids["B"]]  # best first
    info = out["tracking"]
    assert info["num_tracks"] == 3 and info["max_persons"] == 2
    assert [(k["id"], k["frames"]) for k in info["kept"]] == [(0, 20), (2, 10)]
    assert info["kept"][0]["mean_score"] == pytest.approx(0.9)
    assert info["kept"][0]["rank_score"] == pytest.approx(18)
    assert info["best_dropped"]["id"] == 1 and info["best_dropped"]["rank_score"] == pytest.approx(6)
    assert "kept id 0 (20 frames" in caplog.text and "best dropped: id 1" in caplog.text


def test_tracking_summary_is_plain_python():
    out = track_persons(*frames_of([[person(100, 100)]] * 3), cfg=TrackingConfig())

    def check(v):
        if isinstance(v, dict):
            for k, x in v.items():
                assert isinstance(k, str)
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)
        else:
            assert v is None or type(v) in (int, float, str, bool), (v, type(v))

    check(out["tracking"])


@pytest.mark.parametrize("with_boxes", [True, False])
def test_zero_detections_gives_m0(with_boxes):
    T = 7
    empty = [np.zeros((0, 4), np.float32)] * T
    out = track_persons(
        empty if with_boxes else None,
        [np.zeros(0, np.float32)] * T if with_boxes else None,
        [np.zeros((0, 17, 2), np.float32)] * T,
        [np.zeros((0, 17), np.float32)] * T,
        cfg=TrackingConfig(),
    )
    assert out["keypoint"].shape == (0, T, 17, 2) and out["keypoint_score"].shape == (0, T, 17)
    assert out["box"].shape == (0, T, 4) and out["box_score"].shape == (0, T)
    assert out["person_ids"].shape == (0,) and out["person_ids"].dtype == np.int64
    assert out["tracking"]["num_tracks"] == 0 and out["tracking"]["kept"] == []
    # Lists of plain [] per frame work too.
    out = track_persons([[]] * T, [[]] * T, [[]] * T, [[]] * T, cfg=TrackingConfig())
    assert out["keypoint"].shape == (0, T, 17, 2)


def test_output_contract_dtypes_and_schema():
    per_frame = [[person(100 + t, 200), person(400 - t, 200, pose=_ARMS_UP)] for t in range(9)]
    out = track_persons(*frames_of(per_frame), cfg=TrackingConfig())
    M, T = 2, 9
    expect = {
        "keypoint": ((M, T, 17, 2), np.float32),
        "keypoint_score": ((M, T, 17), np.float32),
        "box": ((M, T, 4), np.float32),
        "box_score": ((M, T), np.float32),
        "person_ids": ((M,), np.int64),
    }
    for key, (shape, dtype) in expect.items():
        assert out[key].shape == shape and out[key].dtype == dtype, key
    rec = {"frame_dir": "clip", "total_frames": T, "img_shape": (480, 640), "fps": 30.0, **{k: out[k] for k in expect}}
    validate_record(rec, write=True)


def test_keypoint_only_path_derives_boxes():
    """Bottom-up input: boxes from keypoints scored > 0; an all-zero detection is dropped."""
    T = 6
    kps, scores = [], []
    for t in range(T):
        _, kp_a, sc_a = person(100 + 3 * t, 200)
        sc_a = sc_a.copy()
        kp_a = kp_a.copy()
        kp_a[16] = (900, 900)  # a far-off joint with score 0 must not stretch the box
        sc_a[16] = 0.0
        _, kp_b, sc_b = person(400, 200, pose=_ARMS_UP, score=0.6)
        ghost_kp, ghost_sc = np.full((17, 2), 50, np.float32), np.zeros(17, np.float32)
        kps.append(np.stack([kp_a, kp_b, ghost_kp]))
        scores.append(np.stack([sc_a, sc_b, ghost_sc]))
    out = track_persons(None, None, kps, scores, cfg=TrackingConfig())
    assert out["tracking"]["box_source"] == "keypoints" and out["tracking"]["num_tracks"] == 2
    a = slot_of(out, kps[0][0], 0)
    visible = kps[2][0][:16]
    np.testing.assert_allclose(out["box"][a, 2], [*visible.min(axis=0), *visible.max(axis=0)])
    np.testing.assert_allclose(out["box_score"][a], scores[0][0].mean())
    np.testing.assert_allclose(out["keypoint"][a, 5], kps[5][0])


def test_gating_far_detection_starts_new_track():
    per_frame = [[person(100, 200)], [person(100, 200)], [person(600, 200)]]  # a jump across the frame
    out = track_persons(*frames_of(per_frame), cfg=TrackingConfig(max_persons=3))
    assert out["tracking"]["num_tracks"] == 2
    permissive = track_persons(*frames_of(per_frame), cfg=TrackingConfig(max_cost=1.0))
    assert permissive["tracking"]["num_tracks"] == 1


def test_hungarian_is_globally_optimal():
    """Tracks at x = 100, 140; detections at 118, 70. Greedy lowest-cost-first takes 100->118
    (shift 18), leaving 140->70 (shift 70); the optimum is 100->70 + 140->118 (30 + 22)."""
    t0 = [person(100, 200), person(140, 200)]
    t1 = [person(118, 200), person(70, 200)]
    out = track_persons(*frames_of([t0, t1]), cfg=TrackingConfig())
    assert out["tracking"]["num_tracks"] == 2
    np.testing.assert_allclose(out["keypoint"][slot_of(out, t0[0][1], 0), 1], t1[1][1])
    np.testing.assert_allclose(out["keypoint"][slot_of(out, t0[1][1], 0), 1], t1[0][1])


def test_geometry_helpers():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    kp = np.zeros((1, 17, 2), np.float32)
    sc = np.ones((1, 17), np.float32)
    d = keypoint_distance(kp, sc, a, kp + [3, 4], sc, a)  # 5 px over a diagonal of 14.14
    np.testing.assert_allclose(d, [[5 / np.sqrt(200)]], rtol=1e-6)
    assert keypoint_distance(kp, sc, a, kp, np.zeros_like(sc), a)[0, 0] == 1.0  # no common joint
    assert keypoint_distance(kp, sc, a, kp + 100, sc, a)[0, 0] == 1.0  # clipped
    boxes, valid = boxes_from_keypoints(
        np.array([[[1, 2], [5, 9]], [[0, 0], [0, 0]]], np.float32), np.array([[1, 1], [0, 0]], np.float32)
    )
    np.testing.assert_allclose(boxes, [[1, 2, 5, 9], [0, 0, 0, 0]])
    assert valid.tolist() == [True, False]


def test_input_validation():
    kp, sc = [np.zeros((1, 17, 2))], [np.zeros((1, 17))]
    with pytest.raises(ValueError, match="boxes has 2 frames, keypoints has 1"):
        track_persons([np.zeros((1, 4))] * 2, None, kp, sc)
    with pytest.raises(ValueError, match=r"frame 0: expected keypoints \[k, V, 2\]"):
        track_persons(None, None, [np.zeros((1, 17, 3))], sc)
    with pytest.raises(ValueError, match="frame 0: 2 boxes, 2 box scores and 1 keypoint sets"):
        track_persons([np.zeros((2, 4))], [np.zeros(2)], kp, sc)
    with pytest.raises(ValueError, match="max_age and max_persons"):
        TrackingConfig(max_age=-1)
    with pytest.raises(ValueError, match="iou_weight and kp_weight"):
        TrackingConfig(iou_weight=0, kp_weight=0)

"""AUCs on known curves, confusion pairs on a hand-made matrix, class-wise accuracy, pose quality, t-SNE."""

from __future__ import annotations

import numpy as np
import pytest

from recognition import diagnostics as dg
from tests.helpers import make_record


def test_rise_auc_matches_hand_values():
    assert dg.rise_auc([1.0, 0.5, 0.0]) == pytest.approx((1.5 - 0.5 - 0.0) / 2)  # = 0.5, the straight line
    assert dg.rise_auc([1.0, 1.0, 1.0, 1.0]) == pytest.approx(1.0)
    # (0.8 + 0.4 + 0.2 + 0.1 - 0.4 - 0.05) / 3 = 1.05 / 3
    assert dg.rise_auc([0.8, 0.4, 0.2, 0.1]) == pytest.approx(0.35)
    np.testing.assert_allclose(dg.rise_auc(np.array([[1.0, 0.0], [1.0, 1.0]])), [0.5, 1.0])
    with pytest.raises(ValueError):
        dg.rise_auc([1.0])


def test_curve_auc_equals_rise_formula_on_even_steps_and_handles_uneven():
    y = [0.9, 0.7, 0.2, 0.1, 0.05]
    assert dg.curve_auc([0, 1, 2, 3, 4], y) == pytest.approx(dg.rise_auc(y))
    # uneven: x = 0, 1, 4 -> t = 0, .25, 1; area = .25 * (1 + .5) / 2 + .75 * (.5 + 0) / 2 = .1875 + .1875
    assert dg.curve_auc([0, 1, 4], [1.0, 0.5, 0.0]) == pytest.approx(0.375)
    with pytest.raises(ValueError):
        dg.curve_auc([0, 0, 1], [1, 1, 1])


def test_confusion_pairs_on_a_hand_made_matrix():
    conf = np.array(
        [
            [10, 3, 0, 1],
            [4, 8, 0, 0],
            [0, 2, 9, 5],
            [1, 0, 6, 7],
        ]
    )
    s = dg.confusion_scores(conf)
    assert s[0, 1] == s[1, 0] == 7 and s[2, 3] == 11 and s[1, 2] == 2 and s[0, 3] == 2 and np.all(np.diag(s) == 0)
    pairs = dg.top_confused_pairs(conf, 3)
    assert pairs == [(2, 3, 11), (0, 1, 7), (0, 3, 2)]  # the tie (0, 3) vs (1, 2) goes to the lower i
    failures = conf.sum() - np.trace(conf)  # 22
    assert dg.failure_share(conf, pairs[:2]) == pytest.approx(100 * 18 / failures)
    assert dg.top_confused_pairs(np.eye(3, dtype=int), 5) == []
    assert dg.failure_share(np.eye(3, dtype=int), []) == 0.0
    labels, pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    np.testing.assert_array_equal(dg.confusion_matrix(labels, pred, 3), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_class_accuracy():
    conf = np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]])
    acc = dg.class_accuracy(conf)
    assert acc[0] == pytest.approx(75.0) and np.isnan(acc[1]) and acc[2] == pytest.approx(50.0)


def test_expected_persons_rules():
    rec = make_record(M=1, T=4, frame_dir="S001C002P003R002A050", label=49)
    assert dg.expected_persons({}, rec) == 2
    assert dg.expected_persons({}, {**rec, "frame_dir": "S001C002P003R002A049"}) == 1
    assert dg.expected_persons({}, {**rec, "frame_dir": "S018C001P008R001A120"}) == 2
    assert dg.expected_persons({"expected_persons": 3}, rec) == 3
    assert dg.expected_persons({"expected_persons": {"hug": 2}, "label_names": ["a"] * 49 + ["hug"]}, rec) == 2
    other = {**rec, "frame_dir": "clip_x"}
    assert dg.expected_persons({}, other) is None
    assert dg.expected_persons({"mocap15": {"samples": {"clip_x": {"persons": 2}}}}, other) == 2


def test_pose_quality_counts_missing_keypoints_and_persons():
    a = make_record(M=2, T=4, frame_dir="S001C001P001R001A050", label=49)  # expects 2 persons
    a["keypoint_score"][:] = 0.5
    a["keypoint_score"][1, 2:] = 0.0  # person 1 missing in frames 2, 3
    a["keypoint_score"][0, 0, :3] = 0.0  # 3 missing joints of a detected person
    b = make_record(M=1, T=2, frame_dir="S001C001P001R001A001", label=0)  # expects 1
    b["keypoint_score"][:] = 0.9
    c = make_record(M=1, T=2, frame_dir="unknown_clip", label=0)
    index = {"annotations": [a, b, c], "split": {"all": ["S001C001P001R001A050", "S001C001P001R001A001"]}}
    q = dg.pose_quality(index, ["S001C001P001R001A050", "S001C001P001R001A001"])
    assert q["person_frames"] == 6 + 2
    assert q["missing_keypoints_pct"] == pytest.approx(100 * 3 / (8 * 17))
    assert q["expected_person_frames"] == 2 * 4 + 1 * 2
    assert q["missing_persons_pct"] == pytest.approx(100 * 2 / 10)
    q2 = dg.pose_quality(index, ["unknown_clip"])
    assert q2["missing_persons_pct"] is None and q2["unknown_expected"] == 1


def test_tsne_embedding_shape_and_determinism():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (15, 8)), rng.normal(6, 1, (15, 8))])
    a = dg.tsne_embedding(feats, perplexity=5, seed=0)
    b = dg.tsne_embedding(feats, perplexity=5, seed=0)
    assert a.shape == (30, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert dg.tsne_embedding(feats[:2]).shape == (2, 2)

"""Person detection: post-processing, the output contract, stand-ins, and the torchvision model
built with random weights on tiny frames (no download, no real weights)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pose_extraction.detect import (
    PERSON_LABEL,
    WEIGHTS_FILENAME,
    BoxDetector,
    DetectorError,
    FnDetector,
    PersonDetector,
    StaticDetector,
    check_detections,
    filter_person_boxes,
)
from tests.pose_extraction.conftest import two_person_frames

TINY = dict(min_size=48, max_size=64, rpn_post_nms_top_n_test=50)  # keeps a forward pass well under 1 s


def test_filter_person_boxes_thresholds_clip_sort():
    boxes = np.array(
        [
            [10, 10, 60, 90],  # person, 0.9, area 4000           -> kept
            [0, 0, 30, 30],  # person, 0.95, area 900 < 1600   -> dropped (area)
            [5, 5, 80, 80],  # label 3 (car), 0.99             -> dropped (class)
            [20, 20, 70, 70],  # person, 0.49 < 0.5              -> dropped (score)
            [-50, 40, 30, 120],  # person, 0.7, clipped to [0, 40, 30, 100]: area 1800 -> kept
            [90, 0, 150, 60],  # person, 0.8, clipped to [90, 0, 100, 60]: area 600 -> dropped
            [40, 40, 80, 80],  # person, exactly 0.5, area exactly 1600 -> kept (inclusive)
        ],
        np.float32,
    )
    labels = np.array([1, 1, 3, 1, 1, 1, 1])
    scores = np.array([0.9, 0.95, 0.99, 0.49, 0.7, 0.8, 0.5], np.float32)
    out_b, out_s = filter_person_boxes(
        boxes, labels, scores, image_size=(100, 100), score_threshold=0.5, min_area=1600.0
    )
    assert out_b.dtype == np.float32 and out_s.dtype == np.float32
    np.testing.assert_allclose(out_s, [0.9, 0.7, 0.5])  # sorted, highest first
    np.testing.assert_allclose(out_b, [[10, 10, 60, 90], [0, 40, 30, 100], [40, 40, 80, 80]])


def test_filter_person_boxes_empty():
    b, s = filter_person_boxes(
        np.zeros((0, 4)), np.zeros(0), np.zeros(0), image_size=(48, 64), score_threshold=0.5, min_area=0.0
    )
    assert b.shape == (0, 4) and s.shape == (0,) and b.dtype == np.float32


def test_check_detections_errors():
    good = (np.zeros((1, 4)), np.ones(1))
    assert check_detections([good], 1)[0][0].dtype == np.float32
    assert check_detections([([], [])], 1)[0][0].shape == (0, 4)
    with pytest.raises(DetectorError, match="returned 1 results for 2 frames"):
        check_detections([good], 2)
    with pytest.raises(DetectorError, match=r"frame 0: expected boxes \[k, 4\]"):
        check_detections([(np.zeros((2, 3)), np.ones(2))], 1)
    with pytest.raises(DetectorError, match="frame 1: non-finite"):
        check_detections([good, (np.full((1, 4), np.nan), np.ones(1))], 2)
    with pytest.raises(DetectorError, match=r"scores must be in \[0, 1\]"):
        check_detections([(np.zeros((1, 4)), [1.5])], 1)
    with pytest.raises(DetectorError, match="expected \\(boxes, scores\\)"):
        check_detections([None], 1)


def test_static_detector():
    det = StaticDetector([[1, 2, 30, 40]])
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    out = det.detect(frames)
    assert len(out) == 3 and isinstance(det, BoxDetector)
    for boxes, scores in out:
        np.testing.assert_array_equal(boxes, [[1, 2, 30, 40]])
        np.testing.assert_array_equal(scores, [1.0])
    out[0][0][0, 0] = 99  # callers cannot corrupt the detector's boxes
    assert det.detect(frames[:1])[0][0][0, 0] == 1


def test_fn_detector_counts_frames_across_chunks():
    frames, gt = two_person_frames(12)
    det = FnDetector(lambda i, f: (gt[i], np.array([0.9, 0.8])))
    out = det.detect(list(frames[:5])) + det.detect(list(frames[5:]))  # two chunks
    assert len(out) == 12 and det.frames_seen == 12
    for i, (boxes, _scores) in enumerate(out):
        np.testing.assert_array_equal(boxes, gt[i])
    det.reset()
    np.testing.assert_array_equal(det.detect(list(frames[:1]))[0][0], gt[0])


def test_fn_detector_from_frame_content():
    """A stand-in that finds the bright rectangles of the synthetic video by thresholding."""
    frames, gt = two_person_frames(6)

    def bright_boxes(i, frame):
        out = []
        for level in (230, 150):
            ys, xs = np.nonzero(frame[..., 0] == level)
            out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return np.array(out), np.array([0.9, 0.8])

    for (boxes, _), truth in zip(FnDetector(bright_boxes).detect(list(frames)), gt):
        np.testing.assert_array_equal(boxes, truth)


def test_fn_detector_checks_output():
    det = FnDetector(lambda i, f: (np.zeros((1, 5)), np.ones(1)))
    with pytest.raises(DetectorError, match="FnDetector: frame 0"):
        det.detect([np.zeros((4, 4, 3), np.uint8)])


def test_missing_weights_names_make_command(tmp_path):
    with pytest.raises(DetectorError, match=r"make weights ESTIMATOR=vitpose"):
        PersonDetector(weights=tmp_path / "nope.pth", estimator="vitpose")
    with pytest.raises(DetectorError, match=rf"{WEIGHTS_FILENAME}.*make weights ESTIMATOR=<"):
        PersonDetector(weights=tmp_path)  # a folder without the file


@pytest.fixture(scope="module")
def random_detector():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    det = PersonDetector(weights=None, score_threshold=0.0, min_area=0.0, batch_size=1, **TINY)
    with torch.no_grad():  # random weights almost never say "person": make them, so boxes exist
        det.model.roi_heads.box_predictor.cls_score.bias[PERSON_LABEL] += 20.0
    return det


def test_random_detector_warns(caplog):
    pytest.importorskip("torchvision")
    with caplog.at_level(logging.WARNING, logger="pose_extraction.detect"):
        PersonDetector(weights=None, **TINY)
    assert "random weights" in caplog.text


def test_random_detector_shapes_and_batching(random_detector):
    frames = list(two_person_frames(2)[0])
    out = random_detector.detect(frames)  # batch_size=1: two forward passes
    assert isinstance(random_detector, BoxDetector) and len(out) == 2
    for boxes, scores in out:
        assert len(boxes) > 0
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= 64).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= 48).all()
        assert (np.diff(scores) <= 0).all()
    random_detector.batch_size = 2  # one forward pass over both frames gives the same result
    try:
        again = random_detector.detect(frames)
    finally:
        random_detector.batch_size = 1
    for (b1, s1), (b2, s2) in zip(out, again):
        np.testing.assert_allclose(b1, b2, atol=1e-3)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert random_detector.detect([]) == []


def test_detect_rejects_bad_frames(random_detector):
    with pytest.raises(ValueError, match=r"frame 1: expected an RGB uint8 array \[H, W, 3\]"):
        random_detector.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)])


def test_weights_round_trip_strict(tmp_path, random_detector):
    """A state dict in torchvision's format loads strictly (a 175 MB file; about 4 s here)."""
    torch = pytest.importorskip("torch")
    path = tmp_path / WEIGHTS_FILENAME
    try:
        torch.save(random_detector.model.state_dict(), path)
        det = PersonDetector(weights=tmp_path, score_threshold=0.0, min_area=0.0, **TINY)
        assert det.describe()["weights"] == WEIGHTS_FILENAME
        frames = list(two_person_frames(1)[0])
        ((b1, s1),) = det.detect(frames)
        ((b2, s2),) = random_detector.detect(frames)
        np.testing.assert_allclose(b1, b2, atol=1e-3)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
        sd = random_detector.model.state_dict()
        sd.pop("roi_heads.box_predictor.cls_score.bias")
        torch.save(sd, path)
        with pytest.raises(DetectorError, match="not a torchvision fasterrcnn_resnet50_fpn_v2 COCO"):
            PersonDetector(weights=path, **TINY)
    finally:
        path.unlink(missing_ok=True)  # pytest keeps the last runs' tmp dirs: don't leave 175 MB


def test_unreadable_weights(tmp_path):
    pytest.importorskip("torchvision")
    path = tmp_path / WEIGHTS_FILENAME
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorError, match="cannot load detector weights"):
        PersonDetector(weights=path, **TINY)

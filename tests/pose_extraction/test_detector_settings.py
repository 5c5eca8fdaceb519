"""Top-down records carry the detector's provenance; its input size and keyframe interval are
settings that enter the cache key only when changed (pose_extraction/extract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.schema import read_record
from pose_extraction.extract import DetectorConfig, PoseConfig, VideoExtractor, boxes_from_keypoints, run_extract
from tests.pose_extraction.conftest import two_person_frames, write_video

UNIT = np.stack(np.meshgrid(np.linspace(0.2, 0.8, 17), [0.5], indexing="ij"), -1).reshape(17, 2)  # [17, 2]


class BoxEstimator:
    """A top-down stand-in: joints on a horizontal line through each box (box order kept)."""

    name, needs_boxes, needs_weights, max_persons, weights, version = "boxfake", True, False, None, "", "1"

    def __init__(self) -> None:
        self.frames_seen = 0

    def estimate(self, frames, boxes=None, *, start_index=0):
        self.frames_seen += len(frames)
        out = []
        for b in boxes:
            lo, size = b[:, None, :2], b[:, None, 2:] - b[:, None, :2]  # [k, 1, 2]
            out.append(((lo + UNIT * size).astype(np.float32), np.full((len(b), 17), 0.9, np.float32)))
        return out


class BrightDetector:
    """Boxes of the two bright figures of `two_person_frames`; counts the frames it sees."""

    weights = None

    def __init__(self) -> None:
        self.frames_seen = 0

    def detect(self, frames):
        self.frames_seen += len(frames)
        out = []
        for f in frames:
            boxes = []
            for level in (230, 150):
                ys, xs = np.nonzero(np.abs(f[:, :, 0].astype(int) - level) < 30)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            out.append((np.asarray(boxes, np.float32), np.array([0.9, 0.8], np.float32)))
        return out


@pytest.fixture
def video(tmp_path):
    frames, _ = two_person_frames(14)
    d = tmp_path / "videos"
    d.mkdir()
    return write_video(d / "two.mp4", frames)


def extract(video, out, **detector):
    cfg = PoseConfig(estimator="boxfake", chunk_size=4, detector=DetectorConfig(**detector))
    ex = VideoExtractor(cfg=cfg, estimator=BoxEstimator(), detector=BrightDetector())
    summary = run_extract(ex, [video], out, progress=False)
    return ex, summary, read_record(out / "two.pkl")


def test_record_carries_detector_provenance(tmp_path, video):
    ex, _, rec = extract(video, tmp_path / "o")
    assert rec["detector"] == {
        "name": "BrightDetector",
        "weights": "",
        "sha256": "",
        "score_threshold": 0.5,
        "min_area": 1600.0,
        "input_size": 800,
        "keyframe_interval": 1,
    }
    # at the defaults the key is today's: records made before these settings existed stay valid
    assert set(rec["cache"]["settings"]["detector"]) == {"score_threshold", "min_area", "weights"}
    assert ex.detector.frames_seen == 14


def test_changed_detector_settings_re_extract(tmp_path, video):
    out = tmp_path / "o"
    _, _, first = extract(video, out)
    _, again, _ = extract(video, out)
    assert again["extracted"] == 0 and again["skipped_existing"] == 1
    _, summary, rec = extract(video, out, input_size=480)
    assert summary["extracted"] == 1 and rec["detector"]["input_size"] == 480
    assert rec["cache"]["digest"] != first["cache"]["digest"]
    _, summary, rec = extract(video, out, input_size=480, keyframe_interval=3)
    assert summary["extracted"] == 1 and rec["cache"]["settings"]["detector"]["keyframe_interval"] == 3


def test_keyframes_detect_every_kth_frame_and_follow_the_persons(tmp_path, video):
    _, _, every = extract(video, tmp_path / "every")
    ex, _, key = extract(video, tmp_path / "key", keyframe_interval=3)
    assert ex.detector.frames_seen == 5  # frames 0, 3, 6, 9, 12 (chunks of 4 cross the segments)
    assert ex.estimator.frames_seen == 14 and key["keypoint"].shape == every["keypoint"].shape
    # boxes from the previous frame's joints drift at most the figures' motion per frame
    assert np.abs(key["keypoint"][..., 0] - every["keypoint"][..., 0]).max() < 12
    np.testing.assert_array_equal(key["keypoint"][:, ::3], every["keypoint"][:, ::3])  # the keyframes


def test_boxes_from_keypoints():
    kp = np.array([[[10, 20], [30, 60]] + [[0, 0]] * 15, [[5, 5]] * 17], np.float32)  # [2, 17, 2]
    sc = np.zeros((2, 17), np.float32)
    sc[0, :2] = 0.9  # person 0: two confident joints; person 1: none
    boxes, scores = boxes_from_keypoints(kp, sc, np.array([0.7, 0.6], np.float32), (50, 100))
    # center (20, 40), half size 1.2 x (10, 20) = (12, 24); y clipped to the image height 50
    np.testing.assert_allclose(boxes, [[8, 16, 32, 50]])
    np.testing.assert_allclose(scores, [0.7])


def test_bad_detector_settings():
    with pytest.raises(ValueError, match="keyframe_interval"):
        PoseConfig(detector=DetectorConfig(keyframe_interval=0))


def test_detector_input_size_reaches_the_detector():
    pytest.importorskip("torchvision")
    from pose_extraction.build import build_detector_from

    cfg = PoseConfig(estimator="hrnet", device="cpu", detector=DetectorConfig(input_size=400))
    det = build_detector_from(cfg, random_if_missing=True)
    assert (det.min_size, det.max_size) == (400, 666) and det.describe()["input_size"] == 400
    assert det.model.transform.min_size == (400,) and det.model.transform.max_size == 666


def test_crop_backend_as_run_is_in_the_cache_key(tmp_path, video):
    """`crop: auto` is per device: the key holds the crop as run; the cv2 crop (today's) leaves the key as before."""

    def key(crop_backend):
        est = BoxEstimator()
        if crop_backend is not None:
            est.crop_backend = crop_backend
        ex = VideoExtractor(cfg=PoseConfig(estimator="boxfake"), estimator=est, detector=BrightDetector())
        return ex.key_for(video)

    assert key("cv2") == key(None) and "crop" not in key("cv2")["settings"]["estimator_settings"]
    assert key("device")["settings"]["estimator_settings"]["crop"] == "device"
    assert key("device")["digest"] != key("cv2")["digest"]

"""OpenPifPaf adapter: checkpoint layout and cache path, preprocessing geometry, decoding, the driver.

The network is a randomly initialised `shufflenetv2k16` saved in the published checkpoint
layout (`{'model': <pickled Shell>, 'epoch': 0, 'meta': None}`), imported into a temporary
weights cache with `python -m pose_extraction weights openpifpaf --from FILE`. Random weights
give confidences of a few hundredths, so the end-to-end test sets every decoder threshold to
0 to get annotations out. Tests that need the built package skip with the Make target that
builds it (a failure instead when RSA_REQUIRE_ESTIMATOR_ENVS=1, as in CI); the error-path tests
run everywhere.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from pose_extraction.estimators import EstimatorError, build_estimator
from pose_extraction.estimators.openpifpaf import (
    COCO_KEYPOINTS,
    OpenPifPafEstimator,
    annotations_to_arrays,
    import_openpifpaf,
    pad_geometry,
)

ZERO_THRESHOLDS = {
    "seed_threshold": 0.0,
    "instance_threshold": 0.0,
    "keypoint_threshold": 0.0,
    "cif_threshold": 0.0,
    "caf_threshold": 0.0,
}


@pytest.fixture(scope="module")
def opp():
    try:
        return import_openpifpaf()
    except ImportError as exc:
        reason = f"openpifpaf is not built in this venv: run `make install-openpifpaf` ({exc})"
        if os.environ.get("RSA_REQUIRE_ESTIMATOR_ENVS"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def checkpoint(opp, tmp_path_factory):
    """A random shufflenetv2k16 in the published layout: (path, the network)."""
    import torch

    torch.manual_seed(0)
    factory = opp.network.Factory(base_name="shufflenetv2k16", checkpoint=None)
    net, _ = factory.factory(head_metas=opp.datasets.factory("cocokp").head_metas)
    path = tmp_path_factory.mktemp("opp") / "shufflenetv2k16-random.pkl"
    torch.save({"model": net, "epoch": 0, "meta": None}, path)
    return path, net


@pytest.fixture
def weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSA_WEIGHTS_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- without the package


def test_annotations_to_arrays_maps_back_and_zeroes_missing_joints():
    pose = np.zeros((17, 3), np.float32)
    pose[:, 0], pose[:, 1] = np.arange(17) * 2 + 10, np.arange(17) + 20
    pose[:, 2] = np.linspace(0.0, 1.2, 17)  # joint 0 undetected (c = 0), the last ones above 1
    kp, score = annotations_to_arrays([pose], offset=(10, 20), scale=0.5)
    assert kp.shape == (1, 17, 2) and score.shape == (1, 17) and kp.dtype == score.dtype == np.float32
    np.testing.assert_array_equal(kp[0, 0], [0, 0])
    np.testing.assert_array_equal(score[0, 0], 0)
    np.testing.assert_allclose(kp[0, 1:, 0], (np.arange(1, 17) * 2) / 0.5)
    np.testing.assert_allclose(kp[0, 1:, 1], np.arange(1, 17) / 0.5)
    assert score.max() == 1.0
    kp0, s0 = annotations_to_arrays([], offset=(0, 0), scale=1.0)
    assert kp0.shape == (0, 17, 2) and s0.shape == (0, 17)


@pytest.mark.parametrize("hw", [(48, 64), (100, 100), (144, 176), (272, 640), (1080, 1920)])
def test_pad_geometry_is_16k_plus_1_centred(hw):
    h, w = hw
    sh, sw, left, top = pad_geometry(h, w, 1.0)
    th, tw = -(-(h - 1) // 16) * 16 + 1, -(-(w - 1) // 16) * 16 + 1
    assert (sh, sw) == (h, w) and left == (tw - w) // 2 and top == (th - h) // 2


def test_missing_package_names_the_make_target(monkeypatch):
    monkeypatch.setitem(sys.modules, "openpifpaf", None)  # `import openpifpaf` raises ImportError
    with pytest.raises(ImportError, match="make install-openpifpaf"):
        import_openpifpaf()


def test_missing_checkpoint_names_the_make_target(weights_cache, tmp_path):
    from pose_extraction.weights import WeightsError, resolve

    with pytest.raises(WeightsError, match="make weights ESTIMATOR=openpifpaf"):
        resolve("openpifpaf", "estimator", None)
    with pytest.raises(EstimatorError, match="make weights ESTIMATOR=openpifpaf"):
        OpenPifPafEstimator(weights=tmp_path / "nope.pkl")


def test_cli_extract_without_checkpoint_names_the_make_target(weights_cache, two_person_video, tmp_path, capsys):
    from pose_extraction.__main__ import main

    path, _ = two_person_video
    assert (
        main(["extract", "--estimator", "openpifpaf", "--videos", str(path.parent), "--out", str(tmp_path / "out")])
        == 1
    )
    assert "make weights ESTIMATOR=openpifpaf" in capsys.readouterr().err


# ----------------------------------------------------------------------------- with the package


def test_pad_geometry_matches_openpifpaf(opp):
    import PIL.Image

    for h, w in [(48, 64), (100, 100), (144, 176), (90, 37)]:
        _, _, ltrb = opp.transforms.CenterPadTight(16).center_pad(PIL.Image.new("RGB", (w, h)), [])
        assert pad_geometry(h, w, 1.0)[2:] == (ltrb[0], ltrb[1])


def test_checkpoint_loads_through_the_cache_and_extract_writes_a_record(
    checkpoint, weights_cache, two_person_video, tmp_path, monkeypatch
):
    from pipeline.schema import read_record
    from pose_extraction.__main__ import main
    from pose_extraction.extract import PoseConfig, VideoExtractor, run_extract
    from pose_extraction.weights import resolve

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)  # our loader needs no override
    path, _ = checkpoint
    assert main(["weights", "openpifpaf", "--from", str(path)]) == 0
    cached = resolve("openpifpaf", "estimator", None)
    assert cached.parent == weights_cache and cached.name == path.name

    est = build_estimator("openpifpaf", weights=cached, device="cpu", batch_size=4, settings=ZERO_THRESHOLDS)
    video, _ = two_person_video
    cfg = PoseConfig(estimator="openpifpaf", device="cpu")
    summary = run_extract(
        VideoExtractor(cfg=cfg, estimator=est, detector=None), [video], tmp_path / "out", progress=False
    )
    assert summary["extracted"] == 1 and summary["failed"] == 0
    rec = read_record(tmp_path / "out" / f"{video.stem}.pkl")
    M = rec["keypoint"].shape[0]
    assert 1 <= M <= cfg.tracking.max_persons and rec["keypoint"].shape[1:] == (12, 17, 2)
    assert rec["img_shape"] == (48, 64) and rec["person_ids"].shape == (M,)
    assert rec["estimator"]["name"] == "openpifpaf" and rec["estimator"]["weights"] == path.name
    assert "shufflenetv2k16" in rec["estimator"]["version"] and "box" not in rec
    kp, score = rec["keypoint"], rec["keypoint_score"]
    assert np.all(kp[score == 0] == 0)
    seen = score > 0
    assert seen.any() and np.all((kp[seen] >= -1) & (kp[seen] <= [65, 49]))


def test_batched_forward_matches_one_frame_at_a_time(checkpoint, two_person_video):
    import cv2

    path, _ = checkpoint
    cap = cv2.VideoCapture(str(two_person_video[0]))
    frames = []
    while len(frames) < 5:
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    one = OpenPifPafEstimator(weights=path, batch_size=1, **ZERO_THRESHOLDS).estimate(frames, None)
    many = OpenPifPafEstimator(weights=path, batch_size=4, **ZERO_THRESHOLDS).estimate(frames, None)
    assert len(one) == len(many) == 5
    for (k1, s1), (k4, s4) in zip(one, many):
        assert k1.shape == k4.shape and len(k1) > 0
        np.testing.assert_allclose(k1, k4, atol=1e-2)
        np.testing.assert_allclose(s1, s4, atol=1e-4)


def test_thresholds_belong_to_each_instance(checkpoint):
    path, _ = checkpoint
    frame = [np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)]
    strict = OpenPifPafEstimator(weights=path)  # OpenPifPaf's defaults: nothing from random weights
    loose = OpenPifPafEstimator(weights=path, **ZERO_THRESHOLDS)
    for _ in range(2):  # the C++ thresholds are process-wide; each call sets its own
        assert len(strict.estimate(frame, None)[0][0]) == 0
        assert len(loose.estimate(frame, None)[0][0]) > 0


def test_checkpoint_layouts(checkpoint, tmp_path):
    import torch

    path, net = checkpoint
    bare = tmp_path / "bare.pkl"
    torch.save(net, bare)  # a pickled model without the dict around it
    est = OpenPifPafEstimator(weights=bare)
    assert tuple(est.model.head_metas[0].keypoints) == COCO_KEYPOINTS
    sd = tmp_path / "state_dict.pth"
    torch.save(net.state_dict(), sd)
    with pytest.raises(EstimatorError, match="not an OpenPifPaf checkpoint"):
        OpenPifPafEstimator(weights=sd)
    with pytest.raises(ValueError, match="bottom-up"):
        est.estimate([np.zeros((48, 64, 3), np.uint8)], [np.zeros((1, 4), np.float32)])

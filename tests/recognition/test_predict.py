"""Raw video -> labels: `recognition predict` on generated videos with a tiny model and the
stand-in estimator (stage 1 runs in a subprocess, as with a real estimator's interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import to_dict
from recognition.checkpoint import save_checkpoint
from recognition.config import ModelConfig, TrainConfig
from recognition.models.action import build_action_model
from recognition.predict import window_starts
from recognition.preprocess import PreprocessOptions
from tests.pose_extraction.test_extract import write_video

REPO = Path(__file__).resolve().parents[2]
NAMES = ["walk", "run", "jump", "kick"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"))


def write_tiny_run(run: Path) -> Path:
    """A run folder whose best.pt is a random tiny DSTFormer over NAMES (clip length 16)."""
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    mcfg = dict(
        num_classes=4, backbone="dstformer", preset="tiny", hidden_dim=32, dropout=0.5, maxlen=16, use_mask_token=False
    )
    model = build_action_model(**mcfg)
    cfg = TrainConfig(model=ModelConfig(preset="tiny", hidden_dim=32, maxlen=16), data=PreprocessOptions(clip_len=16))
    save_checkpoint(
        run / "best.pt",
        {
            "model_state": model.state_dict(),
            "model_config": mcfg,
            "run_config": to_dict(cfg),
            "label_names": NAMES,
            "epoch": 0,
        },
    )
    return run


def test_window_starts():
    assert window_starts(10, 16) == [0]
    assert window_starts(16, 16) == [0]
    assert window_starts(50, 16) == [0, 8, 16, 24, 32, 34]
    assert window_starts(40, 16) == [0, 8, 16, 24]


def predict(video: Path, run: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "recognition",
            "predict",
            "--video",
            str(video),
            "--run",
            str(run),
            "--out",
            str(out),
            "--estimator",
            "standin",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )


def test_predict_long_video_json_windows_and_overlay(tmp_path, tiny_run):
    import cv2

    video = write_video(tmp_path / "long.mp4", 50)
    res = predict(video, tiny_run, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    labels = json.loads((tmp_path / "out/labels.json").read_text())
    assert labels == json.loads((tmp_path / "out/long.labels.json").read_text())
    assert labels["total_frames"] == 50 and labels["clip_len"] == 16 and labels["persons"] == 2
    assert [w["start_frame"] for w in labels["windows"]] == [0, 8, 16, 24, 32, 34]
    for entry in [labels["clip"], *labels["windows"]]:
        top = entry["top"]
        assert len(top) == 4 and {t["label"] for t in top} == set(NAMES)
        probs = [t["prob"] for t in top]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
    w = labels["windows"][2]
    assert w["end_frame"] - w["start_frame"] == 16 and w["start_s"] == pytest.approx(16 / 25)
    cap = cv2.VideoCapture(str(tmp_path / "out/long.overlay.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 50
    csv_lines = (tmp_path / "out/labels.csv").read_text().splitlines()
    assert csv_lines[0] == "video,top1,prob,top5,error" and len(csv_lines) == 2


def test_predict_folder_and_errors(tmp_path, tiny_run):
    d = tmp_path / "videos"
    d.mkdir()
    write_video(d / "a.mp4", 10)
    write_video(d / "b.mp4", 20)
    write_video(d / "dark.mp4", 10, bright=False)
    res = predict(d, tiny_run, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (tmp_path / "out/labels.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[1].split(",")[0].endswith("a.mp4")
    assert "no person" in next(r for r in rows if "dark.mp4" in r)
    assert len(json.loads((tmp_path / "out/labels.json").read_text())) == 2
    res = predict(tmp_path / "missing.mp4", tiny_run, tmp_path / "o2")
    assert res.returncode == 1 and "no such video" in res.stderr
    res = predict(d, tmp_path / "norun", tmp_path / "o3")
    assert res.returncode == 1 and "train a model first" in res.stderr


def test_predict_after_the_video_is_replaced(tmp_path, tiny_run):
    """Same name, same --out: the new video's label (or its failure), never the old one's."""
    video = write_video(tmp_path / "clip.mp4", 20)
    out = tmp_path / "out"
    assert predict(video, tiny_run, out).returncode == 0
    first = json.loads((out / "clip.labels.json").read_text())
    assert first["total_frames"] == 20
    write_video(video, 30)  # another clip under the same name
    res = predict(video, tiny_run, out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "re-extracting, the record differs" in res.stderr
    assert json.loads((out / "clip.labels.json").read_text())["total_frames"] == 30
    write_video(video, 12, bright=False)  # nobody in it
    res = predict(video, tiny_run, out)
    assert res.returncode == 1 and "no video could be classified" in res.stderr.strip().splitlines()[-1]
    assert not (out / "clip.labels.json").exists() and not (out / "labels.json").exists()
    assert not (out / "clip.overlay.mp4").exists()
    assert "no person" in (out / "labels.csv").read_text()


def test_predict_does_not_reuse_another_estimators_records(tmp_path, tiny_run):
    from pipeline.schema import read_record, write_record

    video = write_video(tmp_path / "clip.mp4", 20)
    poses = tmp_path / "poses"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "recognition",
            "predict",
            "--video",
            str(video),
            "--run",
            str(tiny_run),
            "--out",
            str(tmp_path / "out"),
            "--estimator",
            "standin",
            "--device",
            "cpu",
            "--poses",
            str(poses),
            "--no-overlay",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rec = read_record(poses / "clip.pkl")
    rec["keypoint"][:] = 0.0  # what "another estimator" saw, stored under its key
    rec["keypoint_score"][:] = 0.0
    rec["total_frames"] = 20
    rec["estimator"]["name"] = "blazepose"
    rec["cache"]["settings"]["estimator"] = "blazepose"
    rec["cache"]["digest"] = "f" * 64
    write_record(rec, poses / "clip.pkl")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "recognition",
            "predict",
            "--video",
            str(video),
            "--run",
            str(tiny_run),
            "--out",
            str(tmp_path / "out"),
            "--estimator",
            "standin",
            "--device",
            "cpu",
            "--poses",
            str(poses),
            "--no-overlay",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert 'settings.estimator "blazepose" -> "standin"' in res.stderr
    again = read_record(poses / "clip.pkl")
    assert again["estimator"]["name"] == "standin" and float(again["keypoint_score"].max()) > 0
    labels = json.loads((tmp_path / "out/clip.labels.json").read_text())
    assert labels["estimator"] == "standin" and labels["persons"] == 2


def test_predict_default_poses_folder_is_per_estimator(tmp_path, tiny_run):
    video = write_video(tmp_path / "clip.mp4", 10)
    assert predict(video, tiny_run, tmp_path / "out").returncode == 0
    assert (tmp_path / "out/poses/standin/clip.pkl").is_file()


def test_predict_same_id_twice_is_an_error(tmp_path, tiny_run):
    d = tmp_path / "videos"
    d.mkdir()
    write_video(d / "clip.mp4", 10)
    write_video(d / "clip.avi", 10)
    res = predict(d, tiny_run, tmp_path / "out")
    assert res.returncode == 1 and "clip.avi" in res.stderr and "clip.mp4" in res.stderr
    assert not (tmp_path / "out").exists()


def test_predict_keeps_the_persons_training_keeps(tiny_run):
    """Three persons: predict feeds the model the same two, in the same order, as the training data."""
    from recognition.checkpoint import build_model_from_checkpoint
    from recognition.evaluate import eval_config
    from recognition.predict import predict_record
    from recognition.preprocess import preprocess_clip, select_two_persons
    from tests.helpers import make_record

    rec = make_record(M=3, T=16, seed=3)
    rec["keypoint_score"][0] *= 0.2  # slot 0 weakest, slot 2 strongest: kept (2, 1), best first
    rec["keypoint_score"][1] *= 0.9
    model, meta = build_model_from_checkpoint(tiny_run / "best.pt")
    opts = eval_config(meta, faithful=None).data
    got = predict_record(model, rec, opts=opts, names=NAMES, device=torch.device("cpu"))
    kp, sc, kept = select_two_persons(rec["keypoint"], rec["keypoint_score"])
    assert list(kept) == [2, 1]

    def probs(kp, sc):
        x = preprocess_clip(kp, sc, rec["img_shape"], train=False, opts=opts, rng=None)[None]
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(x)).logits.float(), dim=1)[0].numpy()

    want = probs(kp, sc)
    slot_order = probs(rec["keypoint"][[1, 2]], rec["keypoint_score"][[1, 2]])  # what predict used to feed
    assert np.abs(want - slot_order).max() > 2e-6  # the order matters to the model: the test can tell
    got_probs = np.zeros(4)
    for t in got["clip"]["top"]:
        got_probs[t["index"]] = t["prob"]  # rounded to 6 decimals
    assert np.abs(got_probs - want).max() <= 6e-7

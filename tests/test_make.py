"""The Makefile: help lists every verb, unbuilt verbs fail clearly, and a second run changes
no artifact (checked by modification times, not `make -q`)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERBS = [
    "demo",
    "test",
    "lint",
    "poses",
    "dataset",
    "train",
    "configs",
    "report",
    "predict",
    "weights",
    "fetch",
    "bench",
    "bench-gpu",
    "help",
]


def make(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_help_lists_every_verb():
    res = make("help")
    assert res.returncode == 0
    for verb in VERBS:
        line = next((ln for ln in res.stdout.splitlines() if re.match(rf"\s+make {verb}\s", ln)), None)
        assert line is not None and len(line.split(None, 2)) == 3, f"make help lacks a line for {verb}"


def test_newcomer_errors_are_one_line():
    res = make("poses")
    assert res.returncode != 0 and "set VIDEOS=" in res.stderr
    res = make("predict")
    assert res.returncode != 0 and "set VIDEO=" in res.stderr
    res = make("predict", "VIDEO=x.mp4", "RUN=/nonexistent/run")
    assert res.returncode != 0 and "no trained model at /nonexistent/run" in res.stderr
    res = make("train", "MODEL=bogus")
    assert res.returncode != 0 and "unknown MODEL=bogus" in res.stderr
    res = make("train", "DATASET=nope")
    assert res.returncode != 0 and "no shipped config for MODEL=motionbert BACKBONE=dstformer on nope" in res.stderr


def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    """DEVICE=cuda with no visible GPU: training and extraction stop at once with one line
    saying what to do (CUDA_VISIBLE_DEVICES='' hides any GPU, so this holds on GPU machines)."""
    import sys

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    (tmp_path / "w.pth").write_bytes(b"")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos/a.mp4").write_bytes(b"")
    for argv in (
        [
            "recognition",
            "train",
            "--config",
            "configs/recognition/motionbert_mocap15.yaml",
            "--data",
            str(tmp_path / "none.pkl"),
            "--split",
            "xview",
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cuda",
        ],
        [
            "pose_extraction",
            "extract",
            "--estimator",
            "hrnet",
            "--videos",
            str(tmp_path / "videos"),
            "--out",
            str(tmp_path / "poses"),
            "--device",
            "cuda",
            "--set",
            f"weights={tmp_path / 'w.pth'}",
        ],
    ):
        res = subprocess.run(
            [sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, env=env, timeout=300
        )
        err = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 1 and len(err) == 1, res.stderr
        assert "DEVICE=cuda but no CUDA GPU is visible; use DEVICE=cpu (or auto)" in err[0]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_make_predict_never_writes_into_the_demos_folder(tmp_path):
    """`make predict VIDEO=.../demo.mp4` after the demo: the demo's predictions stay as they are, the
    output goes to a folder of its own per run, estimator and video path."""
    from tests.pose_extraction.test_extract import write_video
    from tests.recognition.test_predict import write_tiny_run

    art = tmp_path / "art"
    write_tiny_run(art / "runs/maskclr_mocap15_xview")
    demo = art / "predictions/demo"
    demo.mkdir(parents=True)
    (demo / "labels.csv").write_text("video,top1,prob,top5,error\n" + "v,walk,0.5,walk,\n" * 5)
    before = snapshot(demo)
    for folder in ("clips", "other"):
        (tmp_path / folder).mkdir()
        video = write_video(tmp_path / folder / "demo.mp4", 20)
        res = make(f"ART={art}", "predict", f"VIDEO={video}", "ESTIMATOR=standin", "DEVICE=cpu")
        assert res.returncode == 0, res.stderr[-3000:]
    assert snapshot(demo) == before and len((demo / "labels.csv").read_text().splitlines()) == 6
    outs = sorted(art.glob("predictions/runs/maskclr_mocap15_xview/standin/demo-*"))
    assert len(outs) == 2  # two videos named demo.mp4 in two folders: two output folders
    for d in outs:
        assert (d / "demo.labels.json").is_file() and len((d / "labels.csv").read_text().splitlines()) == 2


def test_dataset_build_then_noop(tmp_path):
    art = tmp_path / "art"
    target = f"{art}/datasets/mocap15.pkl.valid"
    res = make(f"ART={art}", target)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "15 classes" in (art / "datasets/mocap15.pkl.valid").read_text()
    assert len(list((art / "poses/mocap15/mocap15").glob("*.pkl"))) > 100
    before = snapshot(art)
    res = make(f"ART={art}", target)
    assert res.returncode == 0 and snapshot(art) == before
    assert "Nothing to be done" in res.stdout or "is up to date" in res.stdout


def frame_count(path: Path) -> int:
    """Frames decoded by OpenCV (not the container's claim)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.slow
def test_demo_end_to_end_then_noop(tmp_path):
    """`make demo` into a fresh artifact folder: both runs evaluated, the report written, stage 1
    records valid, labels.json valid for every demo video, and every overlay video decodes with
    as many frames as its source; a second `make demo` changes nothing."""
    import json

    from pipeline.schema import read_record

    art = tmp_path / "art"
    res = make(f"ART={art}", "demo", timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    for run in ("motionbert_mocap15_xview", "maskclr_mocap15_xview"):
        metrics = json.loads((art / "runs" / run / "eval_xview_val/metrics.json").read_text())
        assert metrics["top1"] > 100 / 15  # above chance on 15 classes
    assert (art / "reports/demo/report.html").stat().st_size > 10_000

    videos = sorted((art / "demo_videos").glob("*.mp4"))
    assert {v.stem for v in videos} == {"bikes", "carphone_pristine", "mocap15_walk", "mocap15_punch", "mocap15_kick"}
    pred = art / "predictions/demo"
    metrics = json.loads((art / "runs/maskclr_mocap15_xview/eval_xview_val/metrics.json").read_text())
    names = set(metrics["per_class_accuracy"])
    summary = json.loads((pred / "labels.json").read_text())
    assert len(summary) == len(videos)
    for v in videos:
        n = frame_count(v)
        rec = read_record(art / "poses/demo/blazepose" / f"{v.stem}.pkl")  # validates the contract
        assert rec["total_frames"] == n
        assert frame_count(art / "overlays/demo/blazepose" / f"{v.stem}.mp4") == n
        assert frame_count(pred / f"{v.stem}.overlay.mp4") == n
        labels = json.loads((pred / f"{v.stem}.labels.json").read_text())
        assert labels["total_frames"] == n and labels["clip_len"] > 0
        starts = [w["start_frame"] for w in labels["windows"]]
        assert starts[0] == 0 and starts == sorted(starts) and labels["windows"][-1]["end_frame"] == n
        for entry in [labels["clip"], *labels["windows"]]:
            probs = [t["prob"] for t in entry["top"]]
            assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-4
            assert all(t["label"] in names for t in entry["top"])
    rows = (pred / "labels.csv").read_text().splitlines()
    assert rows[0] == "video,top1,prob,top5,error" and len(rows) == len(videos) + 1

    before = snapshot(art)
    res = make(f"ART={art}", "demo")
    assert res.returncode == 0, res.stderr[-3000:]
    assert snapshot(art) == before

    # a user's prediction on a video named like a demo video leaves the demo's outputs as they are
    res = make(f"ART={art}", "predict", f"VIDEO={art / 'demo_videos/mocap15_walk.mp4'}")
    assert res.returncode == 0, res.stderr[-3000:]
    after = snapshot(art)
    assert {k: v for k, v in after.items() if not k.startswith("predictions/runs/")} == before
    assert any(k.startswith("predictions/runs/maskclr_mocap15_xview/blazepose/mocap15_walk-") for k in after)
    res = make(f"ART={art}", "demo")  # and the demo is still up to date: nothing rebuilt
    assert res.returncode == 0, res.stderr[-3000:]
    assert {k: v for k, v in snapshot(art).items() if not k.startswith("predictions/runs/")} == before

"""The extract stage end to end with the deterministic stand-in estimator: valid and bad videos,
failures.jsonl, resume after SIGKILL, shards and torchrun, no video done twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.schema import read_record

REPO = Path(__file__).resolve().parents[2]


def write_video(path: Path, frames: int, *, size=(64, 48), bright: bool = True, fps: float = 25.0) -> Path:
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for t in range(frames):
        img = np.zeros((h, w, 3), np.uint8)
        if bright:
            img[:] = 60
            cv2.rectangle(img, (5 + t % 10, 5), (20 + t % 10, 40), (250, 250, 250), -1)
        vw.write(img)
    vw.release()
    return path


@pytest.fixture
def videos(tmp_path) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(3):
        write_video(d / f"ok{i}.mp4", 12 + i)
    (d / "corrupt.mp4").write_bytes(os.urandom(4000))
    (d / "empty.mp4").write_bytes(b"")
    write_video(d / "dark.mp4", 10, bright=False)
    return d


def extract_cmd(videos: Path, out: Path, *extra: str) -> list[str]:
    """`python -m pose_extraction extract` with the stand-in estimator on the CPU."""
    return [
        sys.executable,
        "-m",
        "pose_extraction",
        "extract",
        "--estimator",
        "standin",
        "--videos",
        str(videos),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


def extract(videos: Path, out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    cmd = extract_cmd(videos, out, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env or os.environ.copy(), timeout=300)


def start_inside_long_video(root: Path, long_frames: int) -> tuple[subprocess.Popen, Path]:
    """Extraction of `a.mp4` (8 frames) then `long.mp4`, slowed per chunk, returned once it is inside long.mp4."""
    d = root / "videos"
    d.mkdir()
    write_video(d / "a.mp4", 8)
    write_video(d / "long.mp4", long_frames)
    out = root / "poses"
    env = dict(os.environ, RSA_EXTRACT_SLEEP="0.05")  # the stand-in sleeps per chunk: time to stop it
    cmd = extract_cmd(d, out, "--set", "chunk_size=8")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "a.pkl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside long.mp4 now
    return proc, out


def test_folder_with_bad_videos_then_resume(tmp_path, videos):
    out = tmp_path / "poses"
    res = extract(videos, out)
    assert res.returncode == 1 and "3 of 6 videos failed" in res.stderr
    assert sorted(p.name for p in out.glob("*.pkl")) == ["ok0.pkl", "ok1.pkl", "ok2.pkl"]
    rec = read_record(out / "ok1.pkl")
    assert rec["total_frames"] == 13 and rec["keypoint"].shape == (2, 13, 17, 2)
    assert rec["img_shape"] == (48, 64) and rec["estimator"]["name"] == "standin"
    assert list(rec["person_ids"]) == sorted(rec["person_ids"]) or len(set(rec["person_ids"])) == 2
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(Path(f["video"]).name for f in failures) == ["corrupt.mp4", "dark.mp4", "empty.mp4"]
    assert "no person" in next(f["error"] for f in failures if f["video"].endswith("dark.mp4"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pkl")}
    res = extract(videos, out)
    assert res.returncode == 1 and "'extracted': 0" in res.stderr and "'skipped_existing': 3" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pkl")} == mtimes
    res = extract(videos, out, "--set", "max_failures=3")
    assert res.returncode == 0


def test_kill_mid_video_leaves_no_partial_record(tmp_path):
    proc, out = start_inside_long_video(tmp_path, 400)
    d = tmp_path / "videos"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "a.pkl").exists() and not (out / "long.pkl").exists()
    assert not [p for p in out.iterdir() if p.suffix == ".pkl" and p.name not in ("a.pkl",)]
    a_mtime = (out / "a.pkl").stat().st_mtime_ns
    res = extract(d, out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert read_record(out / "long.pkl")["total_frames"] == 400
    assert (out / "a.pkl").stat().st_mtime_ns == a_mtime


def test_shards_and_torchrun_split_the_work(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(5):
        write_video(d / f"v{i}.mp4", 6)
    out = tmp_path / "poses"
    res = extract(d, out, "--shard", "1/2")
    assert res.returncode == 0
    assert sorted(p.name for p in out.glob("*.pkl")) == ["v1.pkl", "v3.pkl"]
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    out2 = tmp_path / "poses2"
    res = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29541",
            "-m",
            "pose_extraction",
            "-v",
            "extract",
            "--estimator",
            "standin",
            "--videos",
            str(d),
            "--out",
            str(out2),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out2.glob("*.pkl")) == [f"v{i}.pkl" for i in range(5)]
    lines = [ln for ln in res.stderr.splitlines() if "frames," in ln and "persons kept" in ln]
    assert len(lines) == 5  # each video extracted exactly once across the two ranks


def test_missing_paths_in_list_and_unknown_estimator(tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{tmp_path / 'nope.mp4'}\n")
    res = extract(lst, tmp_path / "o")
    assert res.returncode == 1 and "nope.mp4" in res.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pose_extraction",
            "extract",
            "--estimator",
            "bogus",
            "--videos",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 1 and "bogus" in res.stderr

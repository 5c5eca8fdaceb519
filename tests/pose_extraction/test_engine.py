"""The pipelined engine (`extract --workers N`, pose_extraction/engine.py) against the in-process
path, with the stand-in estimator: same records, resume after SIGKILL, killed workers, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.schema import read_record
from tests.pose_extraction.test_extract import REPO, extract, extract_cmd, write_video

EXTRACTING = re.compile(r"pose_extraction\.extract: (\S+): extracting$", re.M)


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(5):
        write_video(d / f"v{i}.mp4", 9 + 4 * i)
    write_video(d / "dark.mp4", 6, bright=False)
    (d / "corrupt.mp4").write_bytes(os.urandom(3000))
    return d


def assert_same_records(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.pkl"))
    assert names and names == sorted(p.name for p in b.glob("*.pkl"))
    for name in names:
        ra, rb = read_record(a / name), read_record(b / name)
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], np.ndarray):
                np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{name}: {k}")
            else:
                assert ra[k] == rb[k], (name, k)


def failures(out: Path) -> dict[str, str]:
    lines = (out / "failures.jsonl").read_text().splitlines()
    return {Path(e["video"]).name: e["error"] for e in map(json.loads, lines)}


def test_engine_records_equal_in_process_path(tmp_path, folder):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = extract(folder, one, "--workers", "1", "--set", "chunk_size=8", "--set", "max_failures=2")
    r2 = extract(folder, two, "--workers", "2", "--set", "chunk_size=8", "--set", "max_failures=2")
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr[-2000:]
    assert "extract 0/1: 100%" in r1.stderr and "extract 0/1: 100%" in r2.stderr  # a progress bar either way
    assert_same_records(one, two)  # bit for bit, cache keys included
    assert failures(one) == failures(two) and sorted(failures(two)) == ["corrupt.mp4", "dark.mp4"]
    assert not (two / ".claims").exists()
    r3 = extract(folder, two, "--workers", "2", "--set", "chunk_size=8", "--set", "max_failures=2")
    assert r3.returncode == 0 and "'extracted': 0" in r3.stderr and "'skipped_existing': 5" in r3.stderr


def test_sigkill_then_rerun_redoes_only_the_videos_in_flight(tmp_path):
    d = tmp_path / "videos"
    d.mkdir()
    for i in range(8):
        write_video(d / f"v{i}.mp4", 24)
    out = tmp_path / "poses"
    env = dict(os.environ, RSA_EXTRACT_SLEEP="0.1")  # per chunk: 0.3 s a video
    cmd = extract_cmd(d, out, "--workers", "2", "--set", "chunk_size=8")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("*.pkl"))) < 2 and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.pkl")}
    assert 2 <= len(done) < 8
    res = extract(d, out, "--workers", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(EXTRACTING.findall(res.stderr)) == sorted(f"v{i}.mp4" for i in range(8) if f"v{i}" not in done)
    assert {p.stem: p.stat().st_mtime_ns for p in out.glob("*.pkl") if p.stem in done} == done
    assert len(list(out.glob("*.pkl"))) == 8 and not (out / ".claims").exists()


def test_workers_zero_or_negative_is_one_line_exit_2(tmp_path, folder):
    for n in ("0", "-3"):
        res = extract(folder, tmp_path / "o", "--workers", n)
        assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
        assert "--workers must be >= 1" in res.stderr
    assert not (tmp_path / "o").exists()


def test_killed_worker_retried_once_then_failed(tmp_path, folder):
    ref = tmp_path / "ref"
    assert extract(folder, ref, "--workers", "1", "--set", "max_failures=2").returncode == 0
    once = tmp_path / "once"
    env = dict(os.environ, RSA_EXTRACT_WORKER_DIE="v3@once")
    res = extract(folder, once, "--workers", "2", "--set", "max_failures=2", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "v3.mp4: decode worker died" in res.stderr
    assert_same_records(ref, once)  # the retried video too
    always = tmp_path / "always"
    env = dict(os.environ, RSA_EXTRACT_WORKER_DIE="v3")
    res = extract(folder, always, "--workers", "2", "--set", "max_failures=2", env=env)
    assert res.returncode == 1 and "3 of 7 videos failed" in res.stderr
    assert "decode worker died twice" in failures(always)["v3.mp4"]
    assert len(list(always.glob("*.pkl"))) == 4  # the others went on


def test_frame_size_change_fails_that_video_only(tmp_path, folder, size_change_video):
    pytest.importorskip("av")
    shutil.copy(size_change_video, folder / "resized.avi")  # a raw MJPEG stream; probed by content
    res = extract(folder, tmp_path / "o", "--workers", "2", "--set", "reader=pyav", "--set", "max_failures=3")
    assert res.returncode == 0, res.stderr[-2000:]
    err = failures(tmp_path / "o")["resized.avi"]
    assert err.startswith("VideoError: ") and "mid-video size change" in err
    assert len(list((tmp_path / "o").glob("*.pkl"))) == 5


class BrightBoxes:
    """A stand-in person detector: the boxes of the bright figures `conftest.two_person_frames` draws."""

    weights = ""
    score_threshold, min_area = 0.5, 0.0

    def __init__(self) -> None:
        self.batches: list[int] = []  # frames per detect call

    def detect(self, frames):
        import cv2

        self.batches.append(len(frames))
        time.sleep(0.2)  # a slow device loop: the workers' chunks wait for it together
        out = []
        for f in frames:
            n, _, stats, _ = cv2.connectedComponentsWithStats((f[:, :, 0] > 90).astype(np.uint8))
            big = [s for s in stats[1:n] if s[4] >= 40]
            boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h, _ in big], np.float32).reshape(-1, 4)
            out.append((boxes, np.ones(len(boxes), np.float32)))
        return out


@pytest.mark.parametrize("name", ["vitpose", "hrnet"])
def test_engine_topdown_records_equal_with_forwards_shared_across_videos(tmp_path, name, monkeypatch):
    """Random-weight ViTPose / HRNet at a small input size: the engine's records equal the in-process path's
    (keypoints to 1e-4 px, everything else exactly), while its detector batches hold frames of several videos and
    its heatmaps are decoded in a thread of their own."""
    from pose_extraction import engine
    from pose_extraction.estimators import build_estimator, load_settings
    from pose_extraction.extract import PoseConfig, VideoExtractor, run_extract

    monkeypatch.setattr(engine, "SHARE_ON_CPU", True)  # the accelerator's path, run on the CPU
    from tests.pose_extraction.conftest import two_person_frames
    from tests.pose_extraction.conftest import write_video as write_frames

    d = tmp_path / "videos"
    d.mkdir()
    for i in range(4):
        write_frames(d / f"v{i}.mp4", two_person_frames(5 + 3 * i)[0])  # 5-14 frames: tails of a chunk of 8
    small = {"input_size": (64, 96), "heatmap_size": (16, 24), "batch_size": 16}
    tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2} if name == "vitpose" else {"variant": "hrnet_w18_small"}
    est = build_estimator(name, weights=None, settings={**load_settings(name), **tiny, **small})
    decoded_in: set[str] = set()
    decode = est.decode_heatmaps

    def recording_decode(pending):
        decoded_in.add(threading.current_thread().name.split("_")[0])
        return decode(pending)

    est.decode_heatmaps = recording_decode
    outs, detectors = {}, {}
    for workers in (1, 2):
        detectors[workers] = BrightBoxes()
        cfg = PoseConfig(estimator=name, chunk_size=8)
        extractor = VideoExtractor(cfg=cfg, estimator=est, detector=detectors[workers])
        outs[workers] = tmp_path / f"w{workers}"
        summary = run_extract(extractor, sorted(d.glob("*.mp4")), outs[workers], workers=workers, progress=False)
        assert summary["extracted"] == 4 and summary["failed"] == 0
    assert max(detectors[1].batches) <= 8 < max(detectors[2].batches)  # chunks of two videos in one call
    assert decoded_in == {"MainThread", "decode"}  # the engine decodes heatmaps off its device loop
    for v in range(4):
        a, b = read_record(outs[1] / f"v{v}.pkl"), read_record(outs[2] / f"v{v}.pkl")
        assert a.keys() == b.keys() and a["keypoint"].shape[0] == 2
        for k in a:
            if k in ("keypoint", "keypoint_score"):
                np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-4, err_msg=f"v{v}: {k}")
            elif isinstance(a[k], np.ndarray):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"v{v}: {k}")
            else:
                assert a[k] == b[k], (v, k)


def tree_peaks_kib(pid: int) -> dict[int, int]:
    """Per process of the tree under `pid` (it and all its descendants), its peak resident size so far, KiB
    (VmHWM in /proc/<pid>/status: kept by the kernel, so a sample misses no peak)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    peaks, todo = {}, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[p] = int(line.split()[1])
    return peaks


def peak_tree_rss_mib(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run `cmd`; (the sum over its processes of each one's peak resident size, MiB; the result).

    Each process's last VmHWM seen, sampled every 20 ms. Not a sum of resident sizes sampled at once: that
    counts a child caught between its fork and its exec (a spawned worker starting) with all of its parent's
    pages, a false +326 MiB once in a suite run; exec starts a new peak, and the last value seen is the worker's.
    """
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last: dict[int, int] = {}
    while proc.poll() is None:
        last.update(tree_peaks_kib(proc.pid))
        time.sleep(0.02)
    return sum(last.values()) / 1024, subprocess.CompletedProcess(cmd, proc.returncode, "", proc.stderr.read())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak resident memory from /proc")
def test_memory_of_a_10000_frame_video_is_bounded_with_2_workers(tmp_path):
    """The whole run (main process and decode workers) over a 10,000-frame 160x120 video stays within 64 MiB of
    the same run over a 1,000-frame one: frames are held in bounded chunks, never per video (the whole video
    decoded would be 549 MiB more). Measured here (sums of the processes' peaks): 837 and 848-851 MiB; 1,287 MiB
    with the frames kept by the device loop, 1,325 MiB with the chunks kept by the worker."""
    peaks = {}
    for frames in (1_000, 10_000):
        d = tmp_path / f"v{frames}"
        d.mkdir()
        write_video(d / "a.mp4", 8, size=(160, 120))
        write_video(d / "long.mp4", frames, size=(160, 120))
        peak, res = peak_tree_rss_mib(extract_cmd(d, tmp_path / f"o{frames}", "--workers", "2"))
        assert res.returncode == 0, res.stderr[-2000:]
        assert read_record(tmp_path / f"o{frames}" / "long.pkl")["total_frames"] == frames
        peaks[frames] = peak
    assert peaks[10_000] <= peaks[1_000] + 64, peaks

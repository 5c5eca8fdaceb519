"""The pipelined engine (`extract --workers N`, pose_extraction/engine.py) against the in-process
path, with the stand-in estimator: same records, resume after SIGKILL, killed workers, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
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

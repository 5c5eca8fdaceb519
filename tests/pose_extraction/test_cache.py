"""Stage 1's output folder as a cache keyed on content: a record is reused only when made from the same
video with the same settings; same-id videos, config errors, failure markers, orphaned temp files
and several processes on one folder (pose_extraction/cache.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.schema import read_record
from pose_extraction import cache
from tests.pose_extraction.test_extract import REPO, extract, extract_cmd, write_video


def _extracting(stderr: str) -> list[str]:
    """The videos a run started extracting, from its log."""
    return re.findall(r"INFO pose_extraction\.extract: (\S+): extracting", stderr)


def test_replaced_video_is_extracted_again(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "clip.mp4", 12)
    out = tmp_path / "poses"
    assert extract(d, out).returncode == 0
    first = read_record(out / "clip.pkl")
    assert first["cache"]["video"]["name"] == "clip.mp4" and len(first["cache"]["digest"]) == 64
    write_video(d / "clip.mp4", 20)  # another video under the same name
    res = extract(d, out)
    assert res.returncode == 0 and _extracting(res.stderr) == ["clip.mp4"]
    assert "re-extracting, the record differs: video." in res.stderr
    assert read_record(out / "clip.pkl")["total_frames"] == 20
    write_video(d / "clip.mp4", 10, bright=False)  # nobody in it: the old record must not survive
    res = extract(d, out)
    assert res.returncode == 1 and "1 of 1 videos failed" in res.stderr
    assert not (out / "clip.pkl").exists()
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [Path(f["video"]).name for f in failures] == ["clip.mp4"] and "no person" in failures[0]["error"]


def test_same_id_twice_is_an_error_before_any_work(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "clip.mp4", 8)
    write_video(d / "clip.avi", 8)
    res = extract(d, tmp_path / "poses")
    assert res.returncode == 1
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "clip.avi" in line and "clip.mp4" in line and "'clip'" in line
    assert not (tmp_path / "poses").exists()


def test_changed_setting_re_extracts_or_is_refused(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(2):
        write_video(d / f"v{i}.mp4", 8)
    out = tmp_path / "poses"
    assert extract(d, out).returncode == 0
    assert read_record(out / "v0.pkl")["keypoint"].shape[0] == 2
    config_before = (out / "pose_config.yaml").read_text()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pkl")}
    # --no-overwrite: kept, reported with what differs, exit 1, the frozen config not rewritten
    res = extract(d, out, "--set", "tracking.max_persons=1", "--no-overwrite")
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "2 of 2 existing records differ" in last and "settings.tracking.max_persons 2 -> 1" in last
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pkl")} == mtimes
    assert (out / "pose_config.yaml").read_text() == config_before
    # default: extracted again, and config and records agree
    res = extract(d, out, "--set", "tracking.max_persons=1")
    assert res.returncode == 0 and sorted(_extracting(res.stderr)) == ["v0.mp4", "v1.mp4"]
    assert all(read_record(p)["keypoint"].shape[0] == 1 for p in out.glob("*.pkl"))
    assert "max_persons: 1" in (out / "pose_config.yaml").read_text()
    # settings that do not change the content (chunk size, failure budget) reuse the records
    res = extract(d, out, "--set", "tracking.max_persons=1", "--set", "chunk_size=3", "--set", "max_failures=5")
    assert res.returncode == 0 and _extracting(res.stderr) == []


def test_records_of_another_estimator_or_older_version_are_not_reused(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "a.mp4", 8)
    out = tmp_path / "poses"
    assert extract(d, out).returncode == 0
    rec = read_record(out / "a.pkl")
    rec["cache"]["settings"]["estimator"] = "blazepose"  # as if another estimator had written it
    rec["cache"]["digest"] = "0" * 64
    from pipeline.schema import write_record

    write_record(rec, out / "a.pkl")
    res = extract(d, out, "--no-overwrite")
    assert res.returncode == 1 and 'settings.estimator "blazepose" -> "standin"' in res.stderr
    del rec["cache"]  # made before records carried a key
    write_record(rec, out / "a.pkl")
    res = extract(d, out, "--no-overwrite")
    assert res.returncode == 1 and "no cache key" in res.stderr
    res = extract(d, out)
    assert res.returncode == 0 and _extracting(res.stderr) == ["a.mp4"]


@pytest.mark.parametrize(
    "setting",
    ["chunk_size=0", "reader=ffmpeg", "batch_size=-1", "max_failures=-2", "tracking.max_persons=0", "video_key=md5"],
)
def test_bad_setting_is_one_error_before_any_video(tmp_path, setting):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "a.mp4", 8)
    res = extract(d, tmp_path / "poses", "--set", setting)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and setting.split("=")[0].split(".")[-1] in lines[0]
    assert not (tmp_path / "poses").exists()


def test_failed_videos_are_not_retried_on_resume_unless_asked(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "ok.mp4", 8)
    (d / "corrupt.mp4").write_bytes(os.urandom(3000))
    out = tmp_path / "poses"
    res = extract(d, out)
    assert res.returncode == 1 and sorted(_extracting(res.stderr)) == ["corrupt.mp4", "ok.mp4"]
    res = extract(d, out)
    assert res.returncode == 1 and _extracting(res.stderr) == [] and "'skipped_failed': 1" in res.stderr
    assert [Path(json.loads(x)["video"]).name for x in (out / "failures.jsonl").read_text().splitlines()] == [
        "corrupt.mp4"
    ]
    res = extract(d, out, "--retry-failed")
    assert res.returncode == 1 and _extracting(res.stderr) == ["corrupt.mp4"]
    write_video(d / "corrupt.mp4", 8)  # fixed: its key changed, so it is tried again without asking
    res = extract(d, out)
    assert res.returncode == 0 and _extracting(res.stderr) == ["corrupt.mp4"]
    assert (out / "failures.jsonl").read_text() == "" and not list((out / ".failed").iterdir())


def test_orphaned_temp_files_are_removed_live_ones_kept(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    write_video(d / "a.mp4", 8)
    out = tmp_path / "poses"
    out.mkdir()
    host = cache.os.uname().nodename
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = out / f".a.pkl.tmp-{int(dead.stdout)}@{host}-abcd1234"
    live = out / f".b.pkl.tmp-{os.getpid()}@{host}-abcd1234"
    legacy_old, legacy_new = out / ".c.pkl.tmp-zz9_ab12", out / ".d.pkl.tmp-zz9_ab13"
    for p in (orphan, live, legacy_old, legacy_new):
        p.write_bytes(b"x" * 100)
    old = time.time() - 2 * 3600
    os.utime(legacy_old, (old, old))
    assert extract(d, out).returncode == 0
    assert not orphan.exists() and not legacy_old.exists()
    assert live.exists() and legacy_new.exists()  # a live writer's; a recent one of unknown origin


def test_claim_is_exclusive_and_released_by_a_killed_holder(tmp_path):
    out = tmp_path
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from pose_extraction import cache\n"
                "with cache.claim(Path(sys.argv[1]), 'v', wait=False) as got:\n"
                "    print(got, flush=True); time.sleep(60)"
            ),
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    with cache.claim(out, "v", wait=False) as got:
        assert got is False
    holder.kill()
    holder.wait()
    with cache.claim(out, "v", wait=False) as got:
        assert got is True
    assert not (out / ".claims" / "v.lock").exists()


def test_two_processes_on_one_folder_extract_each_video_once(tmp_path):
    d = tmp_path / "v"
    d.mkdir()
    for i in range(100):
        write_video(d / f"v{i:03d}.mp4", 4, size=(32, 24))
    out = tmp_path / "poses"
    cmd = extract_cmd(d, out)
    env = dict(os.environ, RSA_EXTRACT_SLEEP="0.01")
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    done = [_extracting(log) for log in logs]
    assert sorted(done[0] + done[1]) == [f"v{i:03d}.mp4" for i in range(100)]  # each exactly once
    assert min(len(done[0]), len(done[1])) >= 10  # both did a share of the work
    assert len(list(out.glob("*.pkl"))) == 100 and all(read_record(p)["total_frames"] == 4 for p in out.glob("*.pkl"))
    assert not (out / ".claims").exists() and not [p for p in out.iterdir() if ".tmp-" in p.name]
    shutil.rmtree(d)


def test_soak_script_small():
    """bench/soak.py at a small size (two processes, kills every 1-3 s; the work takes each longer than
    3 s, so every first process is killed): every guarantee holds."""
    res = subprocess.run(
        [
            sys.executable,
            "bench/soak.py",
            "--videos",
            "60",
            "--kill-min",
            "1",
            "--kill-max",
            "3",
            "--per-video-sleep",
            "0.1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "all guarantees hold" in res.stdout and "SIGKILLed 0 " not in res.stdout

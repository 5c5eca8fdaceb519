"""A full disk, a read-only output folder and Ctrl-C, for every command that writes artifacts
(`extract`, `index`, `train`, `evaluate`, `report`): one `error:` line naming the file and what to
do, exit status 1 (130 for Ctrl-C), no traceback, nothing truncated, no temporary file left.

Faults are made two ways: stubs in process (`os.fsync` raising ENOSPC, `mkstemp` raising EROFS:
every atomic write goes through both), always; and a real tmpfs (too small, or mounted read-only)
with the command as a subprocess, where this machine lets the tests mount one (root).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.schema import write_index, write_record
from tests.helpers import make_index, make_record
from tests.pose_extraction.test_extract import start_inside_long_video, write_video
from tests.recognition.test_report import build_tiny_inputs
from tests.recognition.test_train_eval import TINY as TRAIN_TINY

REPO = Path(__file__).resolve().parents[1]
TINY = [*TRAIN_TINY, "optim.epochs=1"]
COMMANDS = ["extract", "index", "train", "evaluate", "report"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    (root / "videos").mkdir()
    write_video(root / "videos/a.mp4", 8)
    poses = root / "poses"
    poses.mkdir()
    for i, name in enumerate(["S001C001P001R001A001", "S001C002P002R001A002"]):
        write_record(make_record(T=8, seed=i, frame_dir=name), poses / f"{name}.pkl")
    runs, data, config = build_tiny_inputs(root / "report")
    train_data = root / "train.pkl"
    write_index(make_index(16, num_classes=3, T=16), train_data)
    return {
        "videos": root / "videos",
        "poses": poses,
        "runs": runs,
        "data": data,
        "config": config,
        "train_data": train_data,
    }


def argv_for(command: str, inputs: dict, out: Path) -> list[str]:
    """`python -m <argv>` of one command writing into `out`."""
    if command == "extract":
        return [
            "pose_extraction",
            "extract",
            "--estimator",
            "standin",
            "--videos",
            str(inputs["videos"]),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    if command == "index":
        return [
            "pipeline",
            "index",
            "--poses",
            str(inputs["poses"]),
            "--dataset",
            "ntu60",
            "--keep-missing-skeletons",
            "--out",
            str(out / "i.pkl"),
        ]
    if command == "train":
        sets = [x for s in TINY for x in ("--set", s)]
        return [
            "recognition",
            "train",
            "--config",
            str(REPO / "configs/recognition/motionbert_mocap15.yaml"),
            "--data",
            str(inputs["train_data"]),
            "--split",
            "xsub",
            "--out",
            str(out),
            "--device",
            "cpu",
            *sets,
        ]
    if command == "evaluate":
        return [
            "recognition",
            "evaluate",
            "--checkpoint",
            str(inputs["runs"][0] / "best.pt"),
            "--data",
            str(inputs["data"]),
            "--split",
            "xsub_val",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    return [
        "recognition",
        "report",
        "--runs",
        *map(str, inputs["runs"]),
        "--data",
        str(inputs["data"]),
        "--config",
        str(inputs["config"]),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--only",
        "accuracy",
    ]


def run_in_process(argv: list[str]) -> int:
    import importlib

    return importlib.import_module(f"{argv[0]}.__main__").main(argv[1:])


def error_line(stderr: str) -> str:
    """The one line a failing command prints, checked: no traceback, exactly one `error:` line."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk_is_one_line_and_keeps_what_was_there(command, inputs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert run_in_process(argv_for(command, inputs, out)) == 0  # a first, good run
    before = tree(out)
    capsys.readouterr()

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    rewritten = {"extract": "a.pkl", "report": "accuracy.csv"}.get(command)
    if rewritten:  # these skip what is up to date: remove one output so that it is written again
        (out / rewritten).unlink()
        before.pop(rewritten)
    argv = argv_for(command, inputs, out)
    rc = run_in_process(argv)
    line = error_line(capsys.readouterr().err)
    assert rc == 1 and "no space left on the device; free space or write the output elsewhere" in line
    assert str(out) in line  # names the file being written
    after = tree(out)
    assert not [p for p in after if ".tmp-" in p]
    for name, data in before.items():  # nothing truncated: every earlier artifact is as it was
        if not name.startswith("tb/"):
            assert after.get(name) == data, name


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output_is_one_line(command, inputs, tmp_path, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    out = tmp_path / "out"
    rc = run_in_process(argv_for(command, inputs, out))
    line = error_line(capsys.readouterr().err)
    assert rc == 1 and "read-only file system; write the output to a writable folder" in line and str(out) in line
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name] if out.exists() else True


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return res.returncode == 0


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_real_tmpfs(command, fault, inputs, tmp_path):
    mnt = tmp_path / "mnt"
    size = {"extract": "2k", "index": "2k", "train": "24k", "evaluate": "4k", "report": "4k"}[command]
    if not _mount_tmpfs(mnt, f"size={size}" if fault == "full" else "ro,size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root); the stubbed faults above still ran")
    try:
        out = mnt / "out" if fault == "full" else mnt
        argv = argv_for(command, inputs, out)
        res = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=600)
        line = error_line(res.stderr)
        want = "no space left on the device" if fault == "full" else "read-only file system"
        assert res.returncode == 1 and want in line and str(mnt) in line, res.stderr[-2000:]
        assert not [p for p in mnt.rglob("*") if ".tmp-" in p.name]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_ctrl_c_stops_cleanly(tmp_path):
    """SIGINT during extraction: exit 130, one line, no partial record or temp file."""
    proc, out = start_inside_long_video(tmp_path, 300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert (out / "a.pkl").exists() and not (out / "long.pkl").exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name or p.suffix == ".lock"]


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_stops_training_cleanly(workers, inputs, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group, DataLoader workers included) during
    training: exit 130, one line, no traceback from any process, every checkpoint whole."""
    import re

    out = tmp_path / "run"
    argv = argv_for("train", inputs, out)
    argv += ["--set", "optim.epochs=200", "--set", f"optim.num_workers={workers}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    seen = []
    for line in proc.stderr:  # wait for the second epoch to be under way
        seen.append(line)
        if re.search(r"epoch 2: train loss", line):
            break
    os.killpg(proc.pid, signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted")
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    from recognition.checkpoint import read_checkpoint

    assert read_checkpoint(out / "last.pt")["epoch"] in (0, 1)  # whole: epoch 1 saved, or epoch 2 too

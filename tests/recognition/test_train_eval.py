"""Training and evaluation end to end on tiny generated data: official checkpoints against the
hand-written reference, exact resume after a kill, torchrun (gloo), bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.schema import write_index
from recognition.checkpoint import read_checkpoint
from recognition.checkpoint_import import CheckpointError
from recognition.evaluate import run_evaluate
from recognition.models.action import build_action_model
from tests.helpers import make_index
from tests.recognition.reference_motionbert import reference_action_logits
from tests.recognition.reference_preprocess import reference_test_clip

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = ["model.preset=tiny", "model.hidden_dim=32", "model.maxlen=16", "data.clip_len=16"]  # 16 frames
TINY = [
    *TINY_MODEL,
    "optim.batch_size=8",
    "optim.lr_backbone=1e-3",
    "optim.lr_head=1e-3",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "index.pkl"
    write_index(make_index(32, num_classes=4, T=20), path)
    return path


def _train_command(
    data: Path, out: Path, extra: list[str], *, epochs: int, resume: bool, maskclr: bool, verbose: bool = False
) -> list[str]:
    sets = [*TINY, f"optim.epochs={epochs}"]
    if maskclr:
        sets += ["maskclr.enabled=true", "maskclr.start_epoch=1"]
    cmd = [
        sys.executable,
        "-m",
        "recognition",
        *(["-v"] if verbose else []),
        "train",
        "--config",
        str(REPO / "configs/recognition/motionbert_mocap15.yaml"),
        "--data",
        str(data),
        "--split",
        "xsub",
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    for s in sets:
        cmd += ["--set", s]
    if resume:
        cmd.append("--resume")
    return cmd


def _train(
    data: Path, out: Path, extra: list[str], *, epochs: int, resume: bool = False, maskclr: bool = False
) -> subprocess.CompletedProcess:
    cmd = _train_command(data, out, extra, epochs=epochs, resume=resume, maskclr=maskclr)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)


def _train_killed_at(data: Path, out: Path, *, epochs: int, maskclr: bool, at: str) -> tuple[int, str]:
    """Train, SIGKILL the process from outside as soon as it logs the line containing `at`.

    The trigger is the per-step debug line (`-v`) logged before a step's forward pass, so the kill
    lands with the step and the rest of its epoch still to run; no sleep, only the log is waited on.
    Returns the exit status (negative: the signal) and what the process wrote on stderr.
    """
    cmd = _train_command(data, out, [], epochs=epochs, resume=False, maskclr=maskclr, verbose=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO, env=env)
    seen = []
    with proc:
        for line in proc.stderr:  # text mode: tqdm's "\r" also ends a line
            seen.append(line)
            if at in line:
                proc.send_signal(signal.SIGKILL)
                break
        seen += proc.stderr.readlines()  # EOF once the process is gone (killed, or ended without the line)
    return proc.returncode, "".join(seen)


@pytest.mark.parametrize("maskclr", [False, True], ids=["motionbert", "maskclr"])
def test_resume_after_kill_is_exact(tmp_path, data, maskclr):
    full, killed = tmp_path / "full", tmp_path / "killed"
    res = _train(data, full, [], epochs=3, maskclr=maskclr)
    assert res.returncode == 0, res.stderr[-2000:]
    # 2 steps per epoch (16 train clips, batch 8): kill in the middle of epoch 2, before its step 1
    # (epoch 1's last.pt is written before epoch 2 begins)
    rc, stderr = _train_killed_at(data, killed, epochs=3, maskclr=maskclr, at="recognition.train: epoch 2 step 1/2")
    assert rc == -signal.SIGKILL, stderr[-2000:]
    assert read_checkpoint(killed / "last.pt")["epoch"] == 0
    res = _train(data, killed, [], epochs=3, resume=True, maskclr=maskclr)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (full / "metrics.jsonl").read_text() == (killed / "metrics.jsonl").read_text()
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(killed / "last.pt")
    for key, t in a["model_state"].items():
        assert torch.equal(t, b["model_state"][key]), key
    if maskclr:
        mem_a, mem_b = a["loss_state"]["class_contrast.memory"], b["loss_state"]["class_contrast.memory"]
        assert mem_a.abs().sum() > 0 and torch.equal(mem_a, mem_b)
        assert "backbone.mask_token" in a["model_state"]
    hist = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert [h["maskclr_active"] for h in hist] == ([False, True, True] if maskclr else [False] * 3)
    assert (full / "best.pt").is_file() and (full / "config.yaml").is_file()
    assert any((full / "tb").iterdir())


def _official_action_file(tmp_path: Path, num_classes: int) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = build_action_model(num_classes=num_classes, preset="tiny", num_heads=8, hidden_dim=64, maxlen=24)
    state = model.state_dict()
    state["head.bn.running_mean"].uniform_(-0.5, 0.5)
    state["head.bn.running_var"].uniform_(0.5, 2.0)
    path = tmp_path / "mb_action.bin"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in state.items()},
            "epoch": 9,
            "lr": 1e-4,
            "optimizer": {},
            "best_acc": 90.0,
        },
        path,
    )
    return path, state


def test_evaluate_official_checkpoint_matches_reference(tmp_path):
    index = make_index(6, num_classes=3, T=30, seed=3)
    ann = index["annotations"]
    ann[0]["keypoint_score"][:, :, 3] = 0.0  # joints with zero confidence
    data = tmp_path / "idx.pkl"
    write_index(index, data)
    ck, state = _official_action_file(tmp_path, num_classes=3)
    metrics = run_evaluate(checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "ev", device="cpu", faithful=True)
    pred = np.load(tmp_path / "ev/predictions.npz")
    by_name = {a["frame_dir"]: a for a in ann}
    x = np.stack(
        [
            reference_test_clip(
                by_name[n]["keypoint"], by_name[n]["keypoint_score"], by_name[n]["img_shape"], clip_len=24
            )
            for n in pred["frame_dir"]
        ]
    )
    ref = reference_action_logits(state, torch.from_numpy(x).float(), num_heads=8).numpy()
    assert pred["logits"].dtype == np.float32 and pred["logits"].shape == (3, 3)
    assert pred["features"].shape == (3, 64)
    np.testing.assert_allclose(pred["logits"], ref, atol=1e-5, rtol=0)
    assert list(pred["label"]) == [by_name[n]["label"] for n in pred["frame_dir"]]
    assert metrics["n"] == 3 and set(metrics) >= {"top1", "top5", "per_class_accuracy"}
    assert (tmp_path / "ev/confusion.csv").read_text().count("\n") == 4


def test_evaluate_refuses_mismatched_checkpoints(tmp_path):
    data = tmp_path / "idx.pkl"
    write_index(make_index(6, num_classes=3), data)
    ck, state = _official_action_file(tmp_path, num_classes=5)
    with pytest.raises(ValueError, match="5 classes"):
        run_evaluate(checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "ev", device="cpu")
    del state["head.bn.running_var"]
    state["backbone.extra"] = torch.zeros(1)
    torch.save({"model": state}, ck)
    with pytest.raises(CheckpointError, match=r"missing keys.*head\.bn\.running_var.*unexpected keys.*backbone\.extra"):
        run_evaluate(checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "ev2", device="cpu")
    assert not (tmp_path / "ev2").exists()


def test_bad_input_errors(tmp_path, data):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "recognition",
            "train",
            "--config",
            "configs/recognition/motionbert_mocap15.yaml",
            "--data",
            str(data),
            "--split",
            "xfoo",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 1 and "xfoo_train" in res.stderr and "xsub_train" in res.stderr
    index = make_index(6, num_classes=3)
    index["annotations"][4]["keypoint_score"][:] = 0.0
    bad = tmp_path / "bad.pkl"
    write_index(index, bad)
    res = _train(bad, tmp_path / "r2", [], epochs=1)
    assert res.returncode == 1 and "c004" in res.stderr and "score" in res.stderr
    res = _train(data, tmp_path / "r3", ["--set", "optim.epoch=3"], epochs=1)
    assert res.returncode == 1 and "did you mean 'epochs'" in res.stderr


def test_torchrun_two_processes_gloo(tmp_path, data):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this interpreter")
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "recognition",
        "train",
        "--config",
        "configs/recognition/motionbert_mocap15.yaml",
        "--data",
        str(data),
        "--split",
        "xsub",
        "--out",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
    ]
    for s in [*TINY, "optim.epochs=1"]:
        cmd += ["--set", s]
    res = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ck = read_checkpoint(tmp_path / "ddp/last.pt")
    assert ck["epoch"] == 0 and len(ck["history"]) == 1
    assert not any(k.startswith("module.") for k in ck["model_state"])
    shutil.rmtree(tmp_path / "ddp")


@pytest.mark.parametrize("maskclr", [False, True], ids=["motionbert", "maskclr"])
def test_torchrun_several_steps_per_rank(tmp_path, data, maskclr):
    """DDP past its first step: every trainable parameter gets a gradient on every rank (MotionBERT's
    unused 3-d pose head is frozen), so the second step's reduction does not hang or fail."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this interpreter")
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        f"--master_port={29535 + maskclr}",
        "-m",
        "recognition",
        "train",
        "--config",
        "configs/recognition/motionbert_mocap15.yaml",
        "--data",
        str(data),
        "--split",
        "xsub",
        "--out",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
    ]
    sets = [*TINY, "optim.epochs=2", "optim.batch_size=4"]  # 16 clips, 2 ranks: 2 steps per rank and epoch
    if maskclr:
        sets += ["maskclr.enabled=true", "maskclr.start_epoch=1"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ck = read_checkpoint(tmp_path / "ddp/last.pt")
    assert ck["epoch"] == 1 and len(ck["history"]) == 2

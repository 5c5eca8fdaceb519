"""Empty and broken inputs give one clear error line (issue 13): empty, truncated and non-checkpoint files, splits
with no usable clip, an empty validation split, and the warning before a file is fully unpickled."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

from pipeline.schema import write_index
from recognition.__main__ import main
from recognition.checkpoint import build_model_from_checkpoint, init_from, read_checkpoint
from recognition.checkpoint_import import (
    CheckpointError,
    UnsafeCheckpointError,
    load_motionbert_state,
    unsafe_globals,
)
from recognition.evaluate import run_evaluate
from recognition.models.action import build_action_model
from tests.helpers import make_index
from tests.recognition.test_train_eval import TINY

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/recognition/motionbert_mocap15.yaml")


def _tiny_model(num_classes: int = 3):
    torch.manual_seed(0)
    return build_action_model(num_classes=num_classes, preset="tiny", num_heads=8, hidden_dim=32, maxlen=16)


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    """An empty file, half of a zip and of a legacy torch file, random bytes and a text file."""
    state = {"model": {f"module.{k}": v for k, v in _tiny_model().state_dict().items()}}
    torch.save(state, tmp_path / "whole.pt")
    torch.save(state, tmp_path / "whole_legacy.pt", _use_new_zipfile_serialization=False)
    files = {
        "empty": tmp_path / "empty.pt",
        "truncated": tmp_path / "half.pt",
        "truncated_legacy": tmp_path / "half_legacy.pt",
        "random": tmp_path / "random.pt",
        "text": tmp_path / "notes.pt",
    }
    files["empty"].write_bytes(b"")
    for name, whole in (("truncated", "whole.pt"), ("truncated_legacy", "whole_legacy.pt")):
        data = (tmp_path / whole).read_bytes()
        files[name].write_bytes(data[: len(data) // 2])
    files["random"].write_bytes(bytes(np.random.default_rng(0).integers(0, 0x7F, 4096, dtype=np.uint8)))
    files["text"].write_text("these are my notes, not a checkpoint\n")
    return files


EXPECT = {
    "empty": "is empty (0 bytes)",
    "truncated": "is truncated",
    "truncated_legacy": "is truncated",
    "random": "not a torch checkpoint",
    "text": "not a torch checkpoint",
}


@pytest.mark.parametrize("kind", sorted(EXPECT))
@pytest.mark.parametrize(
    "reader", ["read_checkpoint", "build_model_from_checkpoint", "load_motionbert_state", "init_from", "allow_pickle"]
)
def test_broken_checkpoint_files_are_one_line_errors(tmp_path, kind, reader):
    path = _broken_files(tmp_path)[kind]
    call = {
        "read_checkpoint": lambda: read_checkpoint(path),
        "build_model_from_checkpoint": lambda: build_model_from_checkpoint(path),
        "load_motionbert_state": lambda: load_motionbert_state(path),
        "init_from": lambda: init_from(_tiny_model(), path),
        "allow_pickle": lambda: build_model_from_checkpoint(path, allow_pickle=True),  # never unpickles garbage
    }[reader]
    with pytest.raises(CheckpointError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and EXPECT[kind] in msg, msg
    assert "retrain" in msg or "check the path" in msg, msg
    assert not isinstance(err.value, UnsafeCheckpointError)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "index.pkl"
    write_index(make_index(8, num_classes=3, T=20), path)
    return path


def _train_argv(data: Path, out: Path, *extra: str, epochs: int = 1) -> list[str]:
    argv = ["train", "--config", CONFIG, "--data", str(data), "--split", "xsub", "--out", str(out), "--device", "cpu"]
    for s in [*TINY, f"optim.epochs={epochs}"]:
        argv += ["--set", s]
    return [*argv, *extra]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_empty_checkpoint_evaluate_init_resume_predict(tmp_path, data, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(empty),
                "--data",
                str(data),
                "--split",
                "xsub_val",
                "--out",
                str(tmp_path / "ev"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    line = _error_line(capsys)
    assert str(empty) in line and "empty (0 bytes)" in line and "retrain" in line

    assert main(_train_argv(data, tmp_path / "init", "--init", str(empty))) == 1
    line = _error_line(capsys)
    assert str(empty) in line and "empty (0 bytes)" in line
    assert not (tmp_path / "init/last.pt").exists()

    run = tmp_path / "resume"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    assert main(_train_argv(data, run, "--resume")) == 1
    line = _error_line(capsys)
    assert str(run / "last.pt") in line and "empty (0 bytes)" in line and "without --resume" in line

    (run / "best.pt").write_bytes(b"")  # predict --run RUN reads RUN/best.pt with this function
    with pytest.raises(CheckpointError, match=r"best\.pt: checkpoint file is empty \(0 bytes\)"):
        build_model_from_checkpoint(run / "best.pt")


def test_cli_truncated_last_pt_on_resume(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(data, run)) == 0
    whole = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(whole[: len(whole) // 2])
    assert main(_train_argv(data, run, "--resume", epochs=2)) == 1
    line = _error_line(capsys)
    assert str(run / "last.pt") in line and "truncated" in line and "without --resume" in line


def _zero_scores(index: dict, split: str) -> None:
    names = set(index["split"][split])
    for a in index["annotations"]:
        if a["frame_dir"] in names:
            a["keypoint_score"][:] = 0.0


def test_all_training_clips_skipped(tmp_path, capsys):
    index = make_index(8, num_classes=3, T=20)
    _zero_scores(index, "xsub_train")
    data = tmp_path / "bad.pkl"
    write_index(index, data)
    out = tmp_path / "run"
    assert main(_train_argv(data, out, "--set", "optim.skip_bad=true")) == 1
    line = _error_line(capsys)
    assert "no usable training clips in split 'xsub_train'" in line and str(data) in line, line
    assert "4 skipped by skip_bad" in line and "c000" in line, line
    assert not out.exists()  # refused before anything is written


def test_empty_training_split(tmp_path, capsys):
    index = make_index(8, num_classes=3, T=20)
    index["split"]["xsub_train"] = []
    data = tmp_path / "empty_train.pkl"
    write_index(index, data)
    assert main(_train_argv(data, tmp_path / "run")) == 1
    line = _error_line(capsys)
    assert "split 'xsub_train'" in line and str(data) in line and "lists no clips" in line, line
    assert not (tmp_path / "run").exists()


def test_missing_split_names_file_and_valid_splits(tmp_path, data, capsys):
    argv = _train_argv(data, tmp_path / "run")
    argv[argv.index("xsub")] = "xfoo"
    assert main(argv) == 1
    line = _error_line(capsys)
    assert "'xfoo_train'" in line and str(data) in line and "xsub_train" in line and "xview_val" in line, line


def _official_action_file(path: Path, **extra) -> Path:
    torch.save({"model": {f"module.{k}": v for k, v in _tiny_model().state_dict().items()}, **extra}, path)
    return path


def test_empty_evaluation_split(tmp_path, capsys):
    index = make_index(8, num_classes=3, T=20)
    index["split"]["xsub_val"] = []
    data = tmp_path / "empty_val.pkl"
    write_index(index, data)
    ck = _official_action_file(tmp_path / "mb.bin")
    with pytest.raises(ValueError, match=r"split 'xsub_val' of .*empty_val\.pkl lists no clips"):
        run_evaluate(checkpoint=ck, data=data, split="xsub_val", out=tmp_path / "ev", device="cpu")
    assert not (tmp_path / "ev").exists()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ck),
                "--data",
                str(data),
                "--split",
                "xsub_val",
                "--out",
                str(tmp_path / "ev"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    line = _error_line(capsys)
    assert "split 'xsub_val'" in line and str(data) in line and "lists no clips" in line, line


def test_evaluation_split_all_skipped(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(_train_argv(data, run, "--set", "optim.skip_bad=true")) == 0
    index = make_index(8, num_classes=3, T=20)
    _zero_scores(index, "xsub_val")
    bad = tmp_path / "bad_val.pkl"
    write_index(index, bad)
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run / "best.pt"),
                "--data",
                str(bad),
                "--split",
                "xsub_val",
                "--out",
                str(tmp_path / "ev"),
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    line = _error_line(capsys)
    assert "no usable clips to evaluate in split 'xsub_val'" in line and str(bad) in line, line
    assert "4 skipped by skip_bad" in line and "c004" in line, line


def test_empty_validation_split_trains_on_the_last_epoch(tmp_path, caplog):
    index = make_index(8, num_classes=3, T=20)
    index["split"]["xsub_val"] = []
    data = tmp_path / "no_val.pkl"
    write_index(index, data)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(_train_argv(data, run, epochs=1)) == 0
        assert main(_train_argv(data, run, "--resume", epochs=2)) == 0
    warnings = [r.getMessage() for r in caplog.records if "no validation" in r.getMessage()]
    assert len(warnings) == 2 and "'xsub_val'" in warnings[0] and str(data) in warnings[0], warnings
    assert "best.pt is the last epoch" in warnings[0]
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(h["val_top1"] is None and h["val_top5"] is None and h["val_n"] == 0 for h in hist), hist
    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    assert best["epoch"] == last["epoch"] == 1 and best["best_metric"] is None
    assert all(torch.equal(t, last["model_state"][k]) for k, t in best["model_state"].items())


def _numpy_scalar_file(path: Path, **save_kw) -> Path:
    """MotionBERT's `latest_epoch.bin` layout: its `min_loss` is a numpy float, so weights_only refuses it."""
    backbone = {
        f"module.{k[len('backbone.') :]}": v for k, v in _tiny_model().state_dict().items() if k.startswith("backbone.")
    }
    torch.save({"model_pos": backbone, "epoch": 3, "min_loss": np.float64(0.25)}, path, **save_kw)
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # torch's note on the STACK_GLOBAL case
@pytest.mark.parametrize(
    "save_kw",
    [{}, {"_use_new_zipfile_serialization": False}, {"pickle_protocol": 4}],
    ids=["zip", "legacy", "protocol4"],
)
def test_allow_pickle_warns_with_the_file_and_its_globals(tmp_path, caplog, save_kw):
    path = _numpy_scalar_file(tmp_path / "latest_epoch.bin", **save_kw)
    names = unsafe_globals(path)
    assert any(n.startswith("numpy") and n.endswith(".scalar") for n in names), names
    assert not any(n.startswith("torch.") or n.startswith("collections.") for n in names), names
    with pytest.raises(UnsafeCheckpointError, match=r"latest_epoch\.bin.*numpy.*allow_pickle=True") as err:
        load_motionbert_state(path)
    assert "\n" not in str(err.value)
    with caplog.at_level(logging.WARNING, logger="recognition.checkpoint_import"):
        state, kind = load_motionbert_state(path, allow_pickle=True)
    assert kind == "motionbert_pretrained" and state
    (msg,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in msg and "arbitrary code" in msg and "numpy" in msg and "\n" not in msg, msg


def test_cli_evaluate_allow_pickle_warns(tmp_path, data, caplog, capsys):
    ck = _official_action_file(tmp_path / "best_epoch.bin", best_acc=np.float64(90.0))
    argv = [
        "evaluate",
        "--checkpoint",
        str(ck),
        "--data",
        str(data),
        "--split",
        "xsub_val",
        "--out",
        str(tmp_path / "ev"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 1
    line = _error_line(capsys)
    assert str(ck) in line and "numpy" in line and "--allow-pickle" in line, line
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--allow-pickle"]) == 0
    msgs = [r.getMessage() for r in caplog.records if "arbitrary code" in r.getMessage()]
    assert msgs and str(ck) in msgs[0] and "numpy" in msgs[0], msgs
    assert (tmp_path / "ev/metrics.json").is_file()


def test_unsafe_globals_list_is_bounded(tmp_path):
    """A legacy torch file whose object pickle names 30 unknown globals: the error lists 10 and the count."""
    path = tmp_path / "many.pt"
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(b"\x80\x02(" + b"".join(b"c" + f"no_such_mod{i}\nname{i}\n".encode() for i in range(30)) + b"l.")
    assert len(unsafe_globals(path)) == 30
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert "30 globals" in msg and msg.count("no_such_mod") == 10 and "\n" not in msg, msg


def test_cli_train_init_allow_pickle(tmp_path, data, caplog, capsys):
    """`train --init` of MotionBERT's pretrained `latest_epoch.bin` (numpy scalars inside): refused with the
    flag to use, then read with `--allow-pickle` after the warning naming the file."""
    ck = _numpy_scalar_file(tmp_path / "latest_epoch.bin")
    argv = _train_argv(data, tmp_path / "run", "--init", str(ck))
    assert main(argv) == 1
    line = _error_line(capsys)
    assert str(ck) in line and "numpy" in line and "train or evaluate --allow-pickle" in line, line
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--allow-pickle"]) == 0
    msgs = [r.getMessage() for r in caplog.records if "arbitrary code" in r.getMessage()]
    assert msgs and str(ck) in msgs[0], msgs
    assert (tmp_path / "run/best.pt").is_file()

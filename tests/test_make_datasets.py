"""Kinetics400 in PYSKL's compressed layout (with kpfiles), a `custom_2d_skeleton` list and a folder index each train
one epoch through `make train`, with their own train/val split names (SPLIT=train)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import make_record
from tests.pipeline.test_index import _custom_2d_skeleton_list
from tests.pipeline.test_pyskl import write_k400
from tests.test_make import REPO, make

TINY = {
    "seed": 0,
    "model": {"preset": "tiny", "hidden_dim": 16, "maxlen": 6},
    "data": {"clip_len": 6},
    "optim": {"epochs": 1, "batch_size": 2, "lr_head": 1e-3},
}


def _train(tmp_path: Path, dataset: str, index: Path) -> dict:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    art = tmp_path / "art"
    res = make("train", f"DATASET={dataset}", f"INDEX={index}", f"CONFIG={config}", f"ART={art}", "DEVICE=cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    run = art / "runs" / f"motionbert_{dataset}_train"
    assert (run / "best.pt").is_file() and f"run: {run}/" in res.stdout
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["val_n"] > 0
    return json.loads((run / "eval_val" / "metrics.json").read_text())


def test_kinetics400_compressed_layout_with_kpfiles_trains_through_make(tmp_path):
    index = write_k400(tmp_path / "k400")  # k400_hrnet.pkl + kpfiles/, splits train/val
    metrics = _train(tmp_path, "kinetics400_hrnet", index)
    assert metrics["split"] == "val" and metrics["n"] == 1


def _index(args: list[str]) -> None:
    res = subprocess.run([sys.executable, "-m", "pipeline", "index", *args], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_custom_2d_skeleton_list_trains_through_make(tmp_path):
    names = ["walk_01", "jump_01", "walk_02", "jump_02"]
    lst = tmp_path / "custom.pkl"
    lst.write_bytes(pickle.dumps(_custom_2d_skeleton_list(names), protocol=2).replace(b"numpy._core", b"numpy.core"))
    labels = tmp_path / "labels.csv"
    rows = ["walk_01,walk,train", "jump_01,jump,train", "walk_02,walk,val", "jump_02,jump,val", "compressed,jump,train"]
    labels.write_text("video,label,split\n" + "\n".join(rows) + "\n")
    out = tmp_path / "custom_index.pkl"
    _index(["--poses", str(lst), "--dataset", "folder", "--labels", str(labels), "--out", str(out)])
    metrics = _train(tmp_path, "custom_hrnet", out)
    assert metrics["n"] == 2


def test_folder_index_trains_through_make(tmp_path):
    from pipeline.schema import write_record

    poses = tmp_path / "poses"
    rows = []
    for i in range(6):
        write_record(make_record(M=1 + i % 2, T=8 + i, seed=i, frame_dir=f"v{i}"), poses / f"v{i}.pkl")
        rows.append(f"v{i}.mp4,{'ab'[i % 2]},{'train' if i < 4 else 'val'}")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label,split\n" + "\n".join(rows) + "\n")
    out = tmp_path / "folder_index.pkl"
    _index(["--poses", str(poses), "--dataset", "folder", "--labels", str(labels), "--out", str(out)])
    metrics = _train(tmp_path, "folder_vitpose", out)
    assert metrics["n"] == 2 and metrics["num_classes"] == 2

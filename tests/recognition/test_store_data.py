"""Training data from a store (pipeline/store.py) is the pickle's, bit for bit: items, batches, workers, a run."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import schema
from pipeline.config import load_config
from pipeline.store import open_dataset, pack
from recognition.config import TrainConfig, resolve
from recognition.data import SkeletonDataset, label_names_of, make_dataset, split_frame_dirs
from recognition.preprocess import PreprocessOptions, faithful_options
from tests.helpers import make_index
from tests.recognition.test_train_eval import TINY_MODEL

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *TINY_MODEL,
    "optim.batch_size=5",
    "optim.epochs=2",
    "optim.skip_bad=true",
]


def mixed_index(dtype=np.float32) -> dict:
    """Clips of 1, 2 and 4 persons (crowds: two kept), one with zero scores (skip_bad), in `dtype`."""
    index = make_index(12, num_classes=3, T=18)
    rng = np.random.default_rng(5)
    for i, a in enumerate(index["annotations"]):
        if i % 4 == 3:  # a crowd of 4
            t = a["total_frames"]
            a["keypoint"] = (rng.random((4, t, 17, 2)) * 1000).astype(np.float32)
            a["keypoint_score"] = rng.random((4, t, 17)).astype(np.float32)
            a["person_ids"] = np.arange(4)
        a["keypoint"] = a["keypoint"].astype(dtype)
        a["keypoint_score"] = a["keypoint_score"].astype(dtype)
    index["annotations"][5]["keypoint_score"][:] = 0
    index["label_names"] = ["a", "b", "c"]
    return index


@pytest.fixture(params=[np.float32, np.float16], ids=["float32", "float16"])
def files(request, tmp_path) -> tuple[Path, Path, dict]:
    index = mixed_index(request.param)
    schema.save_pickle(index, tmp_path / "d.pkl")
    pack(index, tmp_path / "d.store")
    return tmp_path / "d.pkl", tmp_path / "d.store", index


def batches(ds, **kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(DataLoader(ds, batch_size=4, shuffle=False, **kw))


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize(
    "train, opts, sigma",
    [
        (True, PreprocessOptions(clip_len=16), 0.0),
        (True, faithful_options(clip_len=16), 0.0),  # F5: frame indices drawn once from num_frames
        (False, PreprocessOptions(clip_len=16), 0.0),
        (False, PreprocessOptions(clip_len=16), 0.01),
    ],
)
def test_pickle_and_store_give_identical_batches(files, train, opts, sigma):
    pkl, st, index = files
    cfg = dataclasses.replace(TrainConfig(), data=opts, optim=dataclasses.replace(TrainConfig().optim, skip_bad=True))
    made = {
        name: make_dataset(cfg, src, "xsub_train", train=train, num_classes=3, noise_sigma=sigma, source=name)
        for name, src in (("dict", index), ("pickle", open_dataset(pkl)), ("store", open_dataset(st)))
    }
    for ds in made.values():
        ds.set_epoch(1)
    want = batches(made["dict"])
    assert made["dict"].skipped == made["store"].skipped == ["c005"] and len(made["store"]) == 5
    assert made["store"].person_selection == made["dict"].person_selection and made["store"].crowded == ["c003"]
    assert_same_batches(batches(made["pickle"]), want)
    assert_same_batches(batches(made["store"]), want)


def test_store_answers_the_index_helpers(files):
    pkl, st, index = files
    for src in (index, open_dataset(pkl), open_dataset(st)):
        assert label_names_of(src) == ["a", "b", "c"]
        assert split_frame_dirs(src, "xview_val") == index["split"]["xview_val"]
        with pytest.raises(ValueError, match="xsub_val"):
            split_frame_dirs(src, "xsub_test")


def test_store_items_are_read_on_access(files):
    _, st, index = files
    ds = SkeletonDataset(
        annotations=open_dataset(st),
        frame_dirs=["c000", "c003"],
        train=False,
        opts=PreprocessOptions(clip_len=16),
        seed=0,
        num_classes=3,
    )
    assert ds.data._maps == {}  # nothing read at construction
    kp = ds.keypoints[1]
    assert kp.shape[0] == 2 and kp.dtype == np.float32 and set(ds.data._maps) == {"keypoint", "keypoint_score"}
    crowd = index["annotations"][3]
    np.testing.assert_array_equal(kp, crowd["keypoint"][ds.person_selection["c003"]].astype(np.float32))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_two_workers_give_the_batches_of_none(tmp_path, context):
    st = tmp_path / "d.store"
    pack(mixed_index(np.float16), st)
    cfg = dataclasses.replace(TrainConfig(), data=PreprocessOptions(clip_len=16))
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, skip_bad=True))
    ds = make_dataset(cfg, open_dataset(st), "xview_train", train=True, num_classes=3)
    ds.set_epoch(2)
    _ = ds[0]  # the parent's maps exist: a spawned worker must reopen them, never receive them
    assert len(pickle.dumps(ds)) < 64 * 1024
    assert_same_batches(batches(ds, num_workers=2, multiprocessing_context=context), batches(ds))


def test_training_on_the_store_is_training_on_the_pickle(tmp_path):
    """One tiny run on each (published float16 data): the same losses, accuracies and evaluation logits, bit for bit."""
    from recognition.train import run_train

    index = mixed_index(np.float16)
    pkl, st = tmp_path / "d.pkl", tmp_path / "d.store"
    schema.save_pickle(index, pkl)
    pack(index, st)
    cfg = resolve(load_config(TrainConfig, REPO / "configs/recognition/motionbert_mocap15.yaml", TINY))
    for name, data in (("pkl", pkl), ("store", st)):
        run_train(cfg, data=data, split="xsub", out=tmp_path / name, device="cpu")
    history = [(tmp_path / n / "metrics.jsonl").read_text().splitlines() for n in ("pkl", "store")]
    assert history[0] == history[1] and len(history[0]) == 2
    assert json.loads(history[0][-1])["val_n"] == 6
    from recognition.evaluate import run_evaluate

    for name, data in (("pkl", pkl), ("store", st)):
        run_evaluate(checkpoint=tmp_path / "pkl/best.pt", data=data, split="xsub_val", out=tmp_path / f"e_{name}")
    with np.load(tmp_path / "e_pkl/predictions.npz") as a, np.load(tmp_path / "e_store/predictions.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in ("frame_dir", "label", "logits", "features"))


def test_report_on_the_store_is_the_report_on_the_pickle(tmp_path):
    """`recognition report --data X.store`: every section's numbers as with the pickle."""
    from recognition.__main__ import main
    from tests.recognition.test_report import build_tiny_inputs

    runs, data, config = build_tiny_inputs(tmp_path)
    pack(schema.read_index(data), tmp_path / "index.store")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny forwards on a loaded 2-core box
    try:
        sections = []
        for name, src in (("pkl", data), ("store", tmp_path / "index.store")):
            argv = ["report", "--runs", str(runs[0]), "--data", str(src), "--out", str(tmp_path / name)]
            assert main([*argv, "--config", str(config), "--device", "cpu"]) == 0
            sections.append(json.loads((tmp_path / name / "metrics.json").read_text())["sections"])
    finally:
        torch.set_num_threads(threads)
    assert sections[0] == sections[1] and "pose_quality" in sections[1]

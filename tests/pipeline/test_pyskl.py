"""PYSKL's compressed Kinetics layout (k400_hrnet.pkl + kpfiles): decompression as DecompressPose
(pipeline.pyskl), streaming and reading it (schema.iter_records, read_index), PoseDataset's
box_thr / valid_ratio filter, and one-line SchemaErrors naming file and clip."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import pyskl, schema
from pipeline.pyskl import LayoutError, decompress_clip
from pipeline.schema import iter_records

REPO = Path(__file__).resolve().parents[2]

# One clip of 8 frames, 8 person instances in file order: (frame, x, keypoint score, box score).
# Instance i's joint j is at (x + j, 2x + j) with score s, so every element says where it came from.
# fmt: off
INSTANCES = [
    (1, 10, 0.2, 0.92), (1, 11, 0.9, 0.55), (1, 12, 0.5, 0.65),
    (4, 40, 0.3, 0.97),
    (6, 60, 0.7, 0.45), (6, 61, 0.7, 0.83),  # equal score sums: file order decides
    (7, 70, 0.3, 0.58), (7, 71, 0.6, 0.2),   # 2 persons, lower score first
]
# fmt: on


def compressed_clip(frame_dir: str = "clip_a", *, instances=INSTANCES, total_frames: int = 8, label: int = 3) -> dict:
    """A clip as in k400_hrnet.pkl, with its kpfile entry: (annotation, {"keypoint": [N, 17, 3]})."""
    j = np.arange(17)
    kp = np.stack([np.stack([x + j, 2 * x + j, np.full(17, s)], axis=-1) for _, x, s, _ in instances])  # [N, 17, 3]
    ann = {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": (340, 256),
        "original_shape": (340, 256),
        "total_frames": total_frames,
        "frame_inds": np.array([f for f, *_ in instances], np.int16),
        "box_score": np.array([b for *_, b in instances], np.float16),
        "valid": {thr: len({f for f, *_, b in instances if np.float16(b) >= thr}) for thr in pyskl.BOX_THRS},
    }
    return ann, {"keypoint": kp.astype(np.float16)}


def expected_arrays(placement: dict[tuple[int, int], int], m: int, t: int):
    """keypoint [M, T, 17, 2], scores [M, T, 17], box scores [M, T] with instance placement[(slot, frame)]."""
    kp, sc, bs = np.zeros((m, t, 17, 2), np.float32), np.zeros((m, t, 17), np.float32), np.zeros((m, t), np.float32)
    for (slot, frame), i in placement.items():
        _, x, s, b = INSTANCES[i]
        kp[slot, frame, :, 0] = x + np.arange(17)
        kp[slot, frame, :, 1] = 2 * x + np.arange(17)
        sc[slot, frame] = np.float16(s)
        bs[slot, frame] = np.float16(b)
    return kp, sc, bs


def check(rec: dict, placement: dict, m: int, t: int) -> None:
    kp, sc, bs = expected_arrays(placement, m, t)
    assert rec["total_frames"] == t and rec["keypoint"].dtype == np.float32
    np.testing.assert_array_equal(rec["keypoint"], kp)
    np.testing.assert_array_equal(rec["keypoint_score"], sc)
    np.testing.assert_array_equal(rec["box_score"], bs)
    assert rec["valid"] == pyskl.valid_counts(bs)
    schema.validate_record(rec, require_label=True)


@pytest.mark.parametrize(
    "options, placement, m, t",
    [
        # squeeze: frames 1, 4, 6, 7 -> 0-3; instances fill each frame's slots in file order
        ({}, {(0, 0): 0, (1, 0): 1, (2, 0): 2, (0, 1): 3, (0, 2): 4, (1, 2): 5, (0, 3): 6, (1, 3): 7}, 3, 4),
        # no squeeze: the frames stay where they are
        (
            {"squeeze": False},
            {(0, 1): 0, (1, 1): 1, (2, 1): 2, (0, 4): 3, (0, 6): 4, (1, 6): 5, (0, 7): 6, (1, 7): 7},
            3,
            8,
        ),
        # 3 persons > max_person 2: EVERY frame's slots sorted by descending score sum, then cut to 2
        # (frame 0: 0.9, 0.5, dropped 0.2; frame 2: a tie keeps file order; frame 3: 0.6 before 0.3)
        ({"max_person": 2}, {(0, 0): 1, (1, 0): 2, (0, 1): 3, (0, 2): 4, (1, 2): 5, (0, 3): 7, (1, 3): 6}, 2, 4),
        # anno_inds (box_thr 0.6): instances with box_score >= 0.6 only (0, 2, 3, 5), then squeezed
        ({"box_thr": 0.6}, {(0, 0): 0, (1, 0): 2, (0, 1): 3, (0, 2): 5}, 2, 3),
    ],
    ids=["squeeze", "no-squeeze", "max-person", "box-thr"],
)
def test_decompress_clip_as_decompress_pose(options, placement, m, t):
    ann, pack = compressed_clip()
    rec = decompress_clip({**ann, **pack}, source="k400.pkl", **options)
    check(rec, placement, m, t)
    assert {k: rec[k] for k in ("frame_dir", "label", "img_shape", "original_shape")} == {
        "frame_dir": "clip_a",
        "label": 3,
        "img_shape": (340, 256),
        "original_shape": (340, 256),
    }
    assert "frame_inds" not in rec


def test_decompress_clip_without_instances_or_box_scores():
    ann, pack = compressed_clip()
    empty = {**ann, "frame_inds": np.zeros(0, np.int16), "box_score": np.zeros(0, np.float16)}
    rec = decompress_clip({**empty, "keypoint": np.zeros((0, 17, 3), np.float16)}, source="k.pkl")
    assert rec["keypoint"].shape == (0, 0, 17, 2) and rec["total_frames"] == 0  # PYSKL fails on these
    assert decompress_clip({**empty, "keypoint": np.zeros((0, 17, 3))}, source="k", squeeze=False)["total_frames"] == 8
    del ann["box_score"]
    rec = decompress_clip({**ann, **pack}, source="k.pkl")
    assert "box_score" not in rec and "valid" not in rec  # nothing to count from
    with pytest.raises(LayoutError, match=r"box_score missing \(needed to drop instances below box_thr 0.5\)"):
        decompress_clip({**ann, **pack}, source="k.pkl", box_thr=0.5)


# ------------------------------------------------------------------------------------------
# A k400_hrnet.pkl with kpfiles, written as PYSKL's are (protocol 2, numpy.core names, float16)
# ------------------------------------------------------------------------------------------


def dump_pyskl(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2).replace(b"numpy._core", b"numpy.core"))
    return path


def write_k400(folder: Path, *, raw_files=("kpfiles/k400_0.pkl", "kpfiles/k400_0.pkl", "kpfiles/k400_1.pkl")):
    """An annotation file of len(raw_files) clips (frame_dir clip_0, ...) and their kpfiles."""
    anns, kpfiles = [], {}
    for i, raw in enumerate(raw_files):
        ann, pack = compressed_clip(f"clip_{i}", instances=INSTANCES[: 8 - i], label=i)
        anns.append({**ann, "raw_file": raw})
        kpfiles.setdefault(Path(raw).name, {})[ann["frame_dir"]] = pack
    for name, data in kpfiles.items():
        dump_pyskl(data, folder / "kpfiles" / name)
    split = {"train": [a["frame_dir"] for a in anns[:-1]], "val": [anns[-1]["frame_dir"]]}
    return dump_pyskl({"split": split, "annotations": anns}, folder / "k400_hrnet.pkl")


def test_iter_records_streams_one_kpfile_at_a_time(tmp_path, monkeypatch, caplog):
    path = write_k400(tmp_path)
    loads = []
    real = schema.load_pickle
    monkeypatch.setattr(schema, "load_pickle", lambda p: loads.append(Path(p).name) or real(p))
    stream = iter_records(path)
    assert len(stream) == 3 and stream.dropped == []
    assert stream.header == {"split": {"train": ["clip_0", "clip_1"], "val": ["clip_2"]}}
    assert loads == ["k400_hrnet.pkl"]  # nothing else until the first record is asked for
    first = next(iter(stream))
    assert loads == ["k400_hrnet.pkl", "k400_0.pkl"] and first["frame_dir"] == "clip_0"
    check(first, {(0, 0): 0, (1, 0): 1, (2, 0): 2, (0, 1): 3, (0, 2): 4, (1, 2): 5, (0, 3): 6, (1, 3): 7}, 3, 4)
    rest = list(stream)
    assert [r["frame_dir"] for r in rest] == ["clip_1", "clip_2"] and [r["label"] for r in rest] == [1, 2]
    assert loads == ["k400_hrnet.pkl", "k400_0.pkl", "k400_1.pkl"]  # clip_1 reused the cached kpfile
    assert rest[1]["raw_file"] == "kpfiles/k400_1.pkl"  # unknown keys pass through
    # annotations not grouped by kpfile: correct, but each switch reads a kpfile again, and says so
    path = write_k400(tmp_path / "mixed", raw_files=["kpfiles/a.pkl", "kpfiles/b.pkl", "kpfiles/a.pkl"])
    loads.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.pyskl"):
        assert [r["frame_dir"] for r in iter_records(path)] == ["clip_0", "clip_1", "clip_2"]
    assert loads == ["k400_hrnet.pkl", "a.pkl", "b.pkl", "a.pkl"]
    assert "not grouped by raw_file" in caplog.text


def test_kpfiles_resolved_under_the_root(tmp_path):
    # raw_file as written on PYSKL's machine (cwd-relative data/k400/kpfiles/..., or absolute):
    # found as its last two path components under the annotation file's folder
    path = write_k400(tmp_path, raw_files=["data/k400/kpfiles/k400_0.pkl", "/mnt/lustre/k400/kpfiles/k400_1.pkl"])
    assert [r["frame_dir"] for r in iter_records(path)] == ["clip_0", "clip_1"]
    # kpfiles elsewhere: kpfile_root
    (tmp_path / "kpfiles").rename(tmp_path / "elsewhere")
    with pytest.raises(schema.SchemaError, match="not found"):
        list(iter_records(path))
    assert len(list(iter_records(path, kpfile_root=tmp_path / "elsewhere"))) == 2
    back = schema.read_index(path, kpfile_root=tmp_path / "elsewhere")
    assert [a["frame_dir"] for a in back["annotations"]] == ["clip_0", "clip_1"]


def test_read_index_returns_the_decompressed_index(tmp_path):
    path = write_k400(tmp_path)
    index = schema.read_index(path)
    streamed = list(iter_records(path))
    assert index["split"] == {"train": ["clip_0", "clip_1"], "val": ["clip_2"]}
    for a, b in zip(index["annotations"], streamed, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
    assert schema.read_any(path)["annotations"][2]["keypoint"].shape == (3, 3, 17, 2)  # frames 1, 4, 6
    assert schema.read_index(path, max_person=1)["annotations"][0]["keypoint"].shape[0] == 1
    # what `recognition train --data k400_hrnet.pkl` and `pipeline validate` read
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0 and res.stdout.startswith("index: 3 clips, 3 classes, splits: train 2, val 1"), (
        res.stderr
    )


def test_valid_ratio_filters_clips_and_instances(tmp_path):
    """PoseDataset: keep a clip if valid[box_thr] / total_frames >= valid_ratio; then drop its
    instances with box_score < box_thr (anno_inds). Each clip here has total_frames 8."""
    path = write_k400(tmp_path)
    # clip_0 valid[0.9] = 2 frames (1 and 4), clip_1 the same, clip_2 (instances 0-5) also 2: all 2/8
    assert [len(iter_records(path, box_thr=0.9, valid_ratio=r)) for r in (0.25, 0.26)] == [3, 0]
    stream = iter_records(path, box_thr=0.5, valid_ratio=0.5)  # valid[0.5]: 4, 4, 3 frames of 8
    assert stream.dropped == ["clip_2"] and stream.header["split"] == {"train": ["clip_0", "clip_1"], "val": []}
    first = next(iter(stream))  # instances with box_score >= 0.5: not 4 (0.45) nor 7 (0.2)
    check(first, {(0, 0): 0, (1, 0): 1, (2, 0): 2, (0, 1): 3, (0, 2): 5, (0, 3): 6}, 3, 4)
    # defaults: off, as a plain PYSKL dataset (box_thr alone filters nothing there either)
    assert len(iter_records(path)) == len(iter_records(path, box_thr=0.9)) == 3
    assert len(iter_records(path, box_thr=0.9, valid_ratio=0.0)) == 3
    with pytest.raises(ValueError, match="needs box_thr"):
        iter_records(path, valid_ratio=0.5)
    with pytest.raises(ValueError, match="box_thr 0.55: expected one of 0.5, 0.6, 0.7, 0.8, 0.9"):
        iter_records(path, box_thr=0.55, valid_ratio=0.5)
    with pytest.raises(ValueError, match="max_person"):
        iter_records(path, max_person=0)


# ------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the clip
# ------------------------------------------------------------------------------------------


def _break(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A k400 file broken one way, and the clip it breaks."""
    path = write_k400(tmp_path)
    index = schema.load_pickle(path)
    ann = index["annotations"][1]
    kpfile = tmp_path / "kpfiles" / "k400_0.pkl"
    if case == "kpfile missing":
        ann["raw_file"] = "kpfiles/k400_3.pkl"
    elif case == "key missing":
        data = schema.load_pickle(kpfile)
        del data["clip_1"]
        dump_pyskl(data, kpfile)
    elif case == "negative":
        ann["frame_inds"] = ann["frame_inds"] - 2
    elif case == "not monotone":
        ann["frame_inds"] = ann["frame_inds"][::-1].copy()
    elif case == "fewer keypoints":
        ann["frame_inds"] = ann["frame_inds"][:-1]
    elif case == "box_score length":
        ann["box_score"] = ann["box_score"][:-1]
    elif case == "no frame_inds":
        del ann["frame_inds"]
    elif case == "no raw_file":
        del ann["raw_file"]
    dump_pyskl(index, path)
    return path, "clip_1"


@pytest.mark.parametrize(
    "case, message",
    [
        (
            "kpfile missing",
            "raw_file kpfiles/k400_3.pkl not found (looked in {root}/kpfiles/k400_3.pkl, {root}/k400_3.pkl)",
        ),
        ("key missing", "kpfile {root}/kpfiles/k400_0.pkl has no entry 'clip_1' (1 entries)"),
        ("negative", "frame_inds[0] is -1, negative"),
        ("not monotone", "frame_inds not monotone: frame_inds[1] = 6 after 7"),
        (
            "fewer keypoints",
            "shapes disagree: frame_inds [6], keypoint [7, 17, 3], box_score [7] (expected [N] / [N, 17, 3] / [N])",
        ),
        (
            "box_score length",
            "shapes disagree: frame_inds [7], keypoint [7, 17, 3], box_score [6] (expected [N] / [N, 17, 3] / [N])",
        ),
        ("no frame_inds", "frame_inds missing in a compressed index"),
        ("no raw_file", "no keypoint in the clip and no raw_file naming a kpfile, got NoneType None"),
    ],
)
def test_layout_errors_name_file_and_clip(tmp_path, case, message):
    path, clip = _break(tmp_path, case)
    want = f"{path} [clip {clip}]: " + message.format(root=tmp_path)
    with pytest.raises(schema.SchemaError) as info:
        list(iter_records(path))
    assert str(info.value) == want
    with pytest.raises(schema.SchemaError):
        schema.read_index(path)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 1 and res.stdout == "" and res.stderr == f"error: {want}\n"


def test_frame_inds_beyond_total_frames_only_without_squeeze(tmp_path):
    ann, pack = compressed_clip(total_frames=7)  # instances in frame 7 of a 7-frame clip
    assert decompress_clip({**ann, **pack}, source="k.pkl")["total_frames"] == 4  # squeezed: renumbered
    with pytest.raises(LayoutError) as info:
        decompress_clip({**ann, **pack}, source="k.pkl", squeeze=False)
    assert str(info.value) == "k.pkl [clip clip_a]: frame_inds[6] is 7, not below total_frames 7 (squeeze off)"


def test_decompressed_index_writes_as_ours(tmp_path):
    """read_index of a compressed file gives an index our writer accepts (float32, valid checked)."""
    index = schema.read_index(write_k400(tmp_path))
    schema.write_index(index, tmp_path / "k400_decompressed.pkl")
    back = schema.read_index(tmp_path / "k400_decompressed.pkl")
    assert not pyskl.is_compressed(back) and back["annotations"][0]["valid"] == index["annotations"][0]["valid"]

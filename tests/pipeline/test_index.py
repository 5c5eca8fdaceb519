"""Index builder and `python -m pipeline index`: labels, splits, and the report of every
video that did not make it into the index."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from pipeline import schema
from pipeline.__main__ import main
from pipeline.datasets import NTU60, FolderDataset, Kinetics400
from pipeline.index import build_index, format_report, read_video_list
from tests.helpers import make_record

NTU_NAMES = ["S001C001P001R001A001", "S001C002P003R002A013", "S002C003P008R001A060", "S003C001P015R002A007"]
KEEP = "--keep-missing-skeletons"


@pytest.fixture(autouse=True)
def empty_data_cache(tmp_path, monkeypatch):
    """No test reads the real data cache (~/.cache/...): NTU lists come from the test."""
    monkeypatch.setenv("RSA_DATA_DIR", str(tmp_path / "data-cache"))


def write_records(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        schema.write_record(make_record(M=1 + i % 2, T=8 + i, seed=i, frame_dir=name), folder / f"{name}.pkl")
    return folder


@pytest.fixture
def ntu_poses(tmp_path):
    poses = write_records(tmp_path / "poses", NTU_NAMES + ["not_an_ntu_video"])
    failures = [
        {"video": "S001C001P002R001A002.avi", "error": "RuntimeError: decode failed"},
        {"video": "S001C001P001R001A001", "error": "stale entry"},
    ]
    (poses / "failures.jsonl").write_text("\n".join(json.dumps(f) for f in failures) + "\nnot json\n", encoding="utf-8")
    return poses


def test_build_index_ntu60(ntu_poses, tmp_path):
    index, report = build_index(poses=ntu_poses, dataset=NTU60())
    anns = {a["frame_dir"]: a for a in index["annotations"]}
    assert sorted(anns) == NTU_NAMES
    assert [anns[n]["label"] for n in NTU_NAMES] == [0, 12, 59, 6]
    assert index["split"] == {
        "xsub_train": ["S001C001P001R001A001", "S002C003P008R001A060", "S003C001P015R002A007"],
        "xsub_val": ["S001C002P003R002A013"],
        "xview_train": ["S001C002P003R002A013", "S002C003P008R001A060"],
        "xview_val": ["S001C001P001R001A001", "S003C001P015R002A007"],
    }
    assert index["label_names"] == NTU60().label_names and index["dataset"] == "ntu60"
    assert anns["S001C002P003R002A013"]["keypoint"].shape == (2, 9, 17, 2)  # record kept whole
    # the report: every video that did not make it, named
    assert report["records_found"] == 5 and report["indexed"] == 4
    assert [u["video"] for u in report["unlabelled"]] == ["not_an_ntu_video"]
    assert "not an NTU name" in report["unlabelled"][0]["reason"]
    decode_failed = {"video": "S001C001P002R001A002", "error": "RuntimeError: decode failed"}
    assert report["failed"] == [decode_failed]
    assert report["failures_resolved"] == 1
    assert report["failures_malformed"] == [{"file": str(ntu_poses / "failures.jsonl"), "line": 3, "text": "not json"}]
    assert report["expected"] == 56_880
    assert len(report["missing"]) == 56_880 - 4 - 1  # minus the records and the failed video
    assert "S001C001P002R001A002" not in report["missing"]
    assert report["splits"] == {"xsub_train": 3, "xsub_val": 1, "xview_train": 2, "xview_val": 2}
    # a valid PYSKL index that round-trips through the writer and reader
    schema.write_index(index, tmp_path / "ntu60.pkl")
    back = schema.read_index(tmp_path / "ntu60.pkl")
    assert back["split"] == index["split"] and back["label_names"] == index["label_names"]
    text = format_report(report, max_items=2)
    assert "unlabelled: 1" in text and "not_an_ntu_video" in text and "... and" in text


def test_video_list_restricts_and_reports(ntu_poses, tmp_path):
    listed = ["S001C001P001R001A001_rgb.avi", "S001C002P003R002A013", "S004C001P020R001A001"]
    list_file = tmp_path / "videos.txt"
    list_file.write_text("# NTU subset\n" + "\n".join(listed) + "\n\n", encoding="utf-8")
    videos = read_video_list(list_file)
    assert videos == ["S001C001P001R001A001_rgb", "S001C002P003R002A013", "S004C001P020R001A001"]
    index, report = build_index(poses=ntu_poses, dataset=NTU60(), video_ids=videos)
    assert [a["frame_dir"] for a in index["annotations"]] == ["S001C001P001R001A001", "S001C002P003R002A013"]
    assert report["expected"] == 3 and report["missing"] == ["S004C001P020R001A001"]
    assert report["not_listed"] == ["S002C003P008R001A060", "S003C001P015R002A007", "not_an_ntu_video"]
    assert report["records_found"] == 5 and report["failed"] == [
        {"video": "S001C001P002R001A002", "error": "RuntimeError: decode failed"}
    ]


def test_video_folder_is_searched_recursively(tmp_path):
    for rel in ["a/x.mp4", "b/y.AVI", "b/notes.txt"]:
        (tmp_path / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "videos" / rel).write_bytes(b"")
    assert read_video_list(tmp_path / "videos") == ["x", "y"]
    (tmp_path / "videos" / "c").mkdir()
    (tmp_path / "videos" / "c" / "x.mkv").write_bytes(b"")
    with pytest.raises(ValueError, match="two videos with the id 'x'"):
        read_video_list(tmp_path / "videos")


def test_invalid_record_reported(tmp_path):
    poses = write_records(tmp_path / "poses", NTU_NAMES[:2])
    (poses / "S001C001P005R001A001.pkl").write_bytes(b"not a pickle")
    bad = make_record(frame_dir="S001C001P004R001A001")
    schema.write_record(bad, poses / "S001C001P009R001A001.pkl")  # frame_dir != file stem
    (poses / ".S001C001P001R001A002.pkl.tmp-x").write_bytes(b"")  # interrupted write: ignored
    index, report = build_index(poses=poses, dataset=NTU60())
    assert report["indexed"] == 2 and report["records_found"] == 4
    errors = {r["file"].rsplit("/", 1)[-1]: r["error"] for r in report["invalid"]}
    assert "a pickle" in errors["S001C001P005R001A001.pkl"]
    assert "frame_dir" in errors["S001C001P009R001A001.pkl"]
    assert "S001C001P005R001A001" not in report["missing"]  # a record file exists


def test_shard_failure_logs_are_read(tmp_path):
    poses = write_records(tmp_path / "poses", NTU_NAMES[:1])
    for rank, name in enumerate(["S001C001P002R001A002", "S001C001P003R001A003"]):
        entry = {"video": f"/data/ntu/{name}_rgb.avi", "error": "OSError: unreadable"}
        (poses / f"failures.rank{rank}.jsonl").write_text(json.dumps(entry) + "\n")
    _, report = build_index(poses=poses, dataset=NTU60())
    assert [f["video"] for f in report["failed"]] == ["S001C001P002R001A002_rgb", "S001C001P003R001A003_rgb"]
    assert len(report["missing"]) == 56_880 - 3


def test_kinetics_and_folder_index(tmp_path):
    csv = tmp_path / "val.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "zumba,aaaaaaaaaaa,1,11,val,0\nabseiling,bbbbbbbbbbb,5,15,train,0\n"
    )
    poses = write_records(tmp_path / "k400", ["aaaaaaaaaaa_000001_000011"])
    index, report = build_index(poses=poses, dataset=Kinetics400(csv_paths=[csv]))
    assert index["split"] == {"val": ["aaaaaaaaaaa_000001_000011"], "train": []}
    assert index["annotations"][0]["label"] == 1
    assert report["missing"] == ["bbbbbbbbbbb_000005_000015"]

    labels = tmp_path / "labels.csv"
    labels.write_text("video,label\nclip_a.mp4,wave\nclip_b.mp4,jump\n")
    poses = write_records(tmp_path / "mine", ["clip_a", "clip_b"])
    index, report = build_index(poses=poses, dataset=FolderDataset(labels_csv=labels))
    assert [a["label"] for a in index["annotations"]] == [1, 0]
    assert index["split"] == {} and index["label_names"] == ["jump", "wave"]


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_index_writes_and_reports(ntu_poses, tmp_path, capsys):
    out, rep = tmp_path / "out" / "ntu60.pkl", tmp_path / "report.json"
    argv = ["index", "--poses", str(ntu_poses), "--dataset", "ntu60", "--out", str(out), "--report", str(rep), KEEP]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("index: 4 clips, 4 classes, splits: xsub_train 3")
    assert "unlabelled: 1" in captured.err and "not_an_ntu_video" in captured.err
    assert "failed (failure log): 1" in captured.err
    assert len(schema.read_index(out)["annotations"]) == 4
    assert json.loads(rep.read_text())["indexed"] == 4


def test_cli_exit_codes(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "x.pkl"
    assert main(["index", "--poses", str(empty), "--dataset", "ntu60", "--out", str(out), KEEP]) == 1
    assert not out.exists() and "nothing to index" in capsys.readouterr().err
    # records none of which the adapter can label: nothing indexed either
    write_records(tmp_path / "odd", ["clip"])
    odd = str(tmp_path / "odd")
    assert main(["index", "--poses", odd, "--dataset", "ntu60", "--out", str(out), KEEP]) == 1
    # dataset options: missing, misplaced, unknown dataset, absent folder
    assert main(["index", "--poses", str(empty), "--dataset", "folder", "--out", str(out)]) == 1
    assert "needs --labels" in capsys.readouterr().err
    assert main(["index", "--poses", str(empty), "--dataset", "kinetics400", "--out", str(out)]) == 1
    assert main(["index", "--poses", str(empty), "--dataset", "ntu60", "--labels", "l.csv", "--out", str(out)]) == 1
    assert "--dataset ntu60 takes no --labels" in capsys.readouterr().err
    absent = str(tmp_path / "absent")
    assert main(["index", "--poses", absent, "--dataset", "ntu60", "--out", str(out), KEEP]) == 1
    assert "no such poses folder or list file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["index", "--poses", str(empty), "--dataset", "ntu61", "--out", str(out)])
    assert info.value.code == 2
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# NTU ids as PYSKL's pickles spell them; samples with missing skeletons
# ------------------------------------------------------------------------------------------


def test_ntu_rgb_records_are_indexed_under_the_canonical_id(tmp_path):
    """Records of `<name>_rgb.avi` are `<name>_rgb.pkl` (frame_dir `<name>_rgb`); the index says `<name>`."""
    names = [f"{n}_rgb" for n in NTU_NAMES[:2]]
    poses = write_records(tmp_path / "poses", names)
    index, report = build_index(poses=poses, dataset=NTU60())
    assert [a["frame_dir"] for a in index["annotations"]] == NTU_NAMES[:2]
    assert index["split"]["xsub_train"] == [NTU_NAMES[0]] and index["split"]["xview_train"] == [NTU_NAMES[1]]
    assert report["indexed"] == 2 and NTU_NAMES[0] not in report["missing"]
    schema.write_index(index, tmp_path / "i.pkl")  # splits name the annotations' frame_dirs
    # the same video twice (`X.pkl` and `X_rgb.pkl`): the second one is reported, not indexed
    write_records(poses, NTU_NAMES[:1])
    index, report = build_index(poses=poses, dataset=NTU60())
    assert report["indexed"] == 2 and report["records_found"] == 3
    (dup,) = report["invalid"]
    assert dup["file"].endswith(f"{NTU_NAMES[0]}_rgb.pkl")
    assert f"'{NTU_NAMES[0]}' again (first in {poses / NTU_NAMES[0]}.pkl)" in dup["error"]


def write_missing_list(path, names, *, count=None):
    """A list in the official files' layout: two lines of prose, a blank line, the names."""
    n = len(names) if count is None else count
    head = f"{n} of the captured samples have missing or incomplete skeleton data.\nPlease ignore them.\n\n"
    path.write_text(head + "\n".join(names) + "\n", encoding="utf-8")
    return path


def test_missing_skeletons_excluded_reported_and_kept_on_request(ntu_poses, tmp_path, capsys):
    # one excluded video has a record, one has none, one belongs to NTU120 only (ignored by ntu60)
    listed = [NTU_NAMES[1], "S001C001P007R002A030", "S018C001P008R001A061"]
    missing = write_missing_list(tmp_path / "missing.txt", listed)
    out, rep = tmp_path / "ntu60.pkl", tmp_path / "report.json"
    argv = ["index", "--poses", str(ntu_poses), "--dataset", "ntu60", "--out", str(out), "--report", str(rep)]
    assert main([*argv, "--missing-skeletons", str(missing)]) == 0
    err = capsys.readouterr().err
    assert "excluded (missing skeletons): 2" in err and "S001C001P007R002A030" in err
    assert "excluded videos that have a record (skipped): 1" in err
    report = json.loads(rep.read_text())
    assert report["excluded"] == ["S001C001P007R002A030", NTU_NAMES[1]] and report["excluded_with_record"] == 1
    assert report["expected"] == 56_880 - 2 and report["indexed"] == 3
    assert NTU_NAMES[1] not in report["missing"] and "S001C001P007R002A030" not in report["missing"]
    index = schema.read_index(out)
    assert NTU_NAMES[1] not in [a["frame_dir"] for a in index["annotations"]]
    assert all(NTU_NAMES[1] not in clips for clips in index["split"].values())
    # the switch keeps them
    assert main([*argv, KEEP]) == 0
    assert "excluded" not in capsys.readouterr().err
    assert json.loads(rep.read_text())["indexed"] == 4 and json.loads(rep.read_text())["expected"] == 56_880
    # with a video list, only the listed excluded videos are named
    videos = tmp_path / "videos.txt"
    videos.write_text("\n".join(NTU_NAMES[:2]) + "\n")
    assert main([*argv, "--missing-skeletons", str(missing), "--videos", str(videos)]) == 0
    report = json.loads(rep.read_text())
    assert report["excluded"] == [NTU_NAMES[1]] and report["expected"] == 1 and report["indexed"] == 1


def test_missing_skeletons_required_for_ntu(ntu_poses, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ntu60.pkl"
    argv = ["index", "--poses", str(ntu_poses), "--dataset", "ntu120", "--out", str(out)]
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "NTU_RGBD120_samples_with_missing_skeletons.txt" in lines[0]
    for way in ("make fetch DATASET=ntu_missing_skeletons", "--missing-skeletons FILE", KEEP):
        assert way in lines[0]
    assert not out.exists()
    listed = write_missing_list(tmp_path / "m.txt", NTU_NAMES[:1])
    assert main([*argv, KEEP, "--missing-skeletons", str(listed)]) == 1
    assert "exclude each other" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label\nx,a\n")
    folder = ["index", "--poses", str(ntu_poses), "--dataset", "folder", "--labels", str(labels), "--out", str(out)]
    assert main([*folder, KEEP]) == 1
    assert "--dataset folder takes no --keep-missing-skeletons" in capsys.readouterr().err
    # the data cache: where `make fetch` put the list (pipeline.fetch answers; its fallback: test_datasets)
    import pipeline.fetch

    monkeypatch.setattr(pipeline.fetch, "missing_skeletons_file", lambda family: listed)
    assert main(["index", "--poses", str(ntu_poses), "--dataset", "ntu60", "--out", str(out)]) == 0
    assert "excluded (missing skeletons): 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_index_full_ntu60_video_list(tmp_path, capsys):
    """`pipeline index` at full size: all 56,880 NTU60 names as a --videos list, the 302-sized exclusion
    mechanism on a synthetic list, and records for one setup (2,880 videos, 17 of them excluded)."""
    names = NTU60().expected_ids()
    videos = tmp_path / "videos.txt"
    videos.write_text("".join(f"{n}_rgb.avi\n" for n in names))
    setup1 = [n for n in names if n.startswith("S001")]
    excluded = setup1[::170] + names[-285:]  # 17 + 285 = 302, as the official NTU60 list
    missing = write_missing_list(tmp_path / "missing.txt", excluded)
    poses = tmp_path / "poses"
    poses.mkdir()
    rec = make_record(M=1, T=2)
    for n in setup1:
        schema.write_record(dict(rec, frame_dir=f"{n}_rgb"), poses / f"{n}_rgb.pkl")
    out, rep = tmp_path / "ntu60.pkl", tmp_path / "report.json"
    argv = ["index", "--poses", str(poses), "--dataset", "ntu60", "--videos", str(videos), "--out", str(out)]
    assert main([*argv, "--missing-skeletons", str(missing), "--report", str(rep)]) == 0
    report = json.loads(rep.read_text())
    assert report["expected"] == 56_880 - 302 and report["indexed"] == 2_880 - 17
    assert len(report["excluded"]) == 302 and report["excluded_with_record"] == 17
    assert len(report["missing"]) == 56_880 - 302 - (2_880 - 17)
    assert "excluded (missing skeletons): 302" in capsys.readouterr().err
    index = schema.read_index(out)
    assert sum(map(len, index["split"].values())) == 2 * (2_880 - 17)
    assert all("_rgb" not in a["frame_dir"] for a in index["annotations"])


# ------------------------------------------------------------------------------------------
# What MMAction2's / PYSKL's Kinetics filter reads; PYSKL's list of records as input
# ------------------------------------------------------------------------------------------


def test_records_with_box_scores_get_valid(tmp_path):
    """`valid` = {box_thr: frames where some person's box_score >= box_thr}, as MMAction2's
    PoseDataset.filter_data reads it (valid[box_thr] / total_frames >= valid_ratio)."""
    poses = tmp_path / "k400"
    poses.mkdir()
    box_scores = {
        "aaaaaaaaaaa_000001_000011": [[0.95, 0.5, 0.0, 0.3], [0.6, 0.7, 0.0, 0.85]],
        "bbbbbbbbbbb_000005_000015": [[0.55, 0.4, 0.3, 0.2], [0.0, 0.0, 0.0, 0.0]],
    }
    for name, bs in box_scores.items():
        rec = dict(make_record(M=2, T=4, frame_dir=name), box=np.zeros((2, 4, 4), np.float32))
        schema.write_record(dict(rec, box_score=np.array(bs, np.float32)), poses / f"{name}.pkl")
    schema.write_record(
        make_record(T=4, frame_dir="ccccccccccc_000000_000010"), poses / "ccccccccccc_000000_000010.pkl"
    )
    csv = tmp_path / "val.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "zumba,aaaaaaaaaaa,1,11,val\nyoga,bbbbbbbbbbb,5,15,val\nyoga,ccccccccccc,0,10,val\n"
    )
    index, _ = build_index(poses=poses, dataset=Kinetics400(csv_paths=[csv]))
    a, b, c = index["annotations"]
    # frame maxima 0.95, 0.7, 0, 0.85: >= 0.5 in 3 frames, >= 0.6 in 3, >= 0.7 in 3, >= 0.8 in 2, >= 0.9 in 1
    assert a["valid"] == {0.5: 3, 0.6: 3, 0.7: 3, 0.8: 2, 0.9: 1}
    assert b["valid"] == {0.5: 1, 0.6: 0, 0.7: 0, 0.8: 0, 0.9: 0}
    assert "valid" not in c  # no detector ran: nothing to count
    schema.write_index(index, tmp_path / "k400.pkl")
    assert schema.read_index(tmp_path / "k400.pkl")["annotations"][0]["valid"] == a["valid"]
    # the filter (valid[box_thr] / total_frames >= valid_ratio) reads it; a clip without it is named
    with pytest.raises(schema.SchemaError, match=r"\[clip ccccccccccc_000000_000010\]: valid: expected"):
        schema.read_index(tmp_path / "k400.pkl", box_thr=0.5, valid_ratio=0.5)
    index["annotations"], index["split"]["val"] = [a, b], [a["frame_dir"], b["frame_dir"]]
    schema.write_index(index, tmp_path / "k400.pkl")
    kept = schema.read_index(tmp_path / "k400.pkl", box_thr=0.5, valid_ratio=0.5)  # 3/4 and 1/4
    assert kept["split"]["val"] == [a["frame_dir"]] and len(kept["annotations"]) == 1


def _custom_2d_skeleton_list(names: list[str]) -> list[dict]:
    """What PYSKL's tools/data/custom_2d_skeleton.py dumps: a bare list, float16 arrays, no
    original_shape, `num_person_raw`, int labels; with --compress, `frame_inds` + keypoint [N, 17, 3]."""
    out = []
    for i, name in enumerate(names):
        rec = make_record(M=1 + i % 2, T=6, seed=i, frame_dir=name)
        out.append(
            {
                "frame_dir": name,
                "label": i,
                "img_shape": (1080, 1920),
                "total_frames": 6,
                "num_person_raw": 1 + i % 2,
                "keypoint": rec["keypoint"].astype(np.float16),
                "keypoint_score": rec["keypoint_score"].astype(np.float16),
            }
        )
    kp = np.concatenate([np.full((3, 17, 2), 100.0), np.full((3, 17, 1), 0.5)], axis=-1).astype(np.float16)
    compressed = {"frame_dir": "compressed", "label": 0, "img_shape": (1080, 1920), "total_frames": 6}
    out.append({**compressed, "frame_inds": np.array([0, 0, 4], np.int16), "keypoint": kp})
    return out


def test_cli_index_from_a_list_of_records(tmp_path, capsys):
    records = _custom_2d_skeleton_list(["walk_01", "jump_01", "hot"])
    records[2]["keypoint_score"][0, 0, 0] = 1.0078  # HRNet heatmap maxima exceed 1
    records.append(None)  # a broken entry: reported
    lst = tmp_path / "custom.pkl"
    lst.write_bytes(pickle.dumps(records, protocol=2).replace(b"numpy._core", b"numpy.core"))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "video,label,split\nwalk_01.mp4,walk,train\njump_01,jump,val\nhot,walk,train\ncompressed,jump,val\n"
    )
    # a bare list is no index: the reader says how to make one
    with pytest.raises(schema.SchemaError, match="bare list of 5 records") as info:
        schema.read_index(lst)
    assert f"python -m pipeline index --poses {lst} --dataset folder --labels labels.csv" in str(info.value)
    out, rep = tmp_path / "x.pkl", tmp_path / "r.json"
    argv = ["index", "--poses", str(lst), "--dataset", "folder", "--labels", str(labels), "--out", str(out)]
    assert main([*argv, "--report", str(rep)]) == 0
    err = capsys.readouterr().err
    assert "records with keypoint scores above 1, clipped to 1: 1" in err and "invalid records: 1" in err
    report = json.loads(rep.read_text())
    assert report["invalid"][0]["file"] == f"{lst} [4]" and report["records_found"] == 5
    index = schema.read_index(out)
    anns = {a["frame_dir"]: a for a in index["annotations"]}
    assert list(anns) == ["walk_01", "jump_01", "hot", "compressed"]
    assert index["split"] == {"train": ["walk_01", "hot"], "val": ["jump_01", "compressed"]}
    assert [anns[n]["label"] for n in anns] == [1, 0, 1, 0]  # the adapter's, not the list's
    assert anns["walk_01"]["keypoint"].dtype == np.float32 and anns["hot"]["keypoint_score"].max() == 1.0
    np.testing.assert_array_equal(anns["jump_01"]["keypoint"], records[1]["keypoint"].astype(np.float32))
    assert anns["compressed"]["keypoint"].shape == (2, 2, 17, 2)  # decompressed, squeezed to 2 frames

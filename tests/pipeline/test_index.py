"""Index builder and `python -m pipeline index`: labels, splits, and the report of every
video that did not make it into the index."""

from __future__ import annotations

import json

import pytest

from pipeline import schema
from pipeline.__main__ import main
from pipeline.datasets import NTU60, FolderDataset, Kinetics400
from pipeline.index import build_index, format_report, read_video_list
from tests.helpers import make_record

NTU_NAMES = ["S001C001P001R001A001", "S001C002P003R002A013", "S002C003P008R001A060", "S003C001P015R002A007"]


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
    index, report = build_index(poses_dir=ntu_poses, dataset=NTU60())
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
    index, report = build_index(poses_dir=ntu_poses, dataset=NTU60(), video_ids=videos)
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
    index, report = build_index(poses_dir=poses, dataset=NTU60())
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
    _, report = build_index(poses_dir=poses, dataset=NTU60())
    assert [f["video"] for f in report["failed"]] == ["S001C001P002R001A002_rgb", "S001C001P003R001A003_rgb"]
    assert len(report["missing"]) == 56_880 - 3


def test_kinetics_and_folder_index(tmp_path):
    csv = tmp_path / "val.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "zumba,aaaaaaaaaaa,1,11,val,0\nabseiling,bbbbbbbbbbb,5,15,train,0\n"
    )
    poses = write_records(tmp_path / "k400", ["aaaaaaaaaaa_000001_000011"])
    index, report = build_index(poses_dir=poses, dataset=Kinetics400(csv_paths=[csv]))
    assert index["split"] == {"val": ["aaaaaaaaaaa_000001_000011"], "train": []}
    assert index["annotations"][0]["label"] == 1
    assert report["missing"] == ["bbbbbbbbbbb_000005_000015"]

    labels = tmp_path / "labels.csv"
    labels.write_text("video,label\nclip_a.mp4,wave\nclip_b.mp4,jump\n")
    poses = write_records(tmp_path / "mine", ["clip_a", "clip_b"])
    index, report = build_index(poses_dir=poses, dataset=FolderDataset(labels_csv=labels))
    assert [a["label"] for a in index["annotations"]] == [1, 0]
    assert index["split"] == {} and index["label_names"] == ["jump", "wave"]


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_index_writes_and_reports(ntu_poses, tmp_path, capsys):
    out, rep = tmp_path / "out" / "ntu60.pkl", tmp_path / "report.json"
    assert (
        main(["index", "--poses", str(ntu_poses), "--dataset", "ntu60", "--out", str(out), "--report", str(rep)]) == 0
    )
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
    assert main(["index", "--poses", str(empty), "--dataset", "ntu60", "--out", str(out)]) == 1
    assert not out.exists() and "nothing to index" in capsys.readouterr().err
    # records none of which the adapter can label: nothing indexed either
    write_records(tmp_path / "odd", ["clip"])
    odd = str(tmp_path / "odd")
    assert main(["index", "--poses", odd, "--dataset", "ntu60", "--out", str(out)]) == 1
    # dataset options: missing, misplaced, unknown dataset, absent folder
    assert main(["index", "--poses", str(empty), "--dataset", "folder", "--out", str(out)]) == 1
    assert "needs --labels" in capsys.readouterr().err
    assert main(["index", "--poses", str(empty), "--dataset", "kinetics400", "--out", str(out)]) == 1
    assert main(["index", "--poses", str(empty), "--dataset", "ntu60", "--labels", "l.csv", "--out", str(out)]) == 1
    assert "--dataset ntu60 takes no --labels" in capsys.readouterr().err
    absent = str(tmp_path / "absent")
    assert main(["index", "--poses", absent, "--dataset", "ntu60", "--out", str(out)]) == 1
    with pytest.raises(SystemExit) as info:
        main(["index", "--poses", str(empty), "--dataset", "ntu61", "--out", str(out)])
    assert info.value.code == 2
    assert not out.exists()

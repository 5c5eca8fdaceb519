"""The data contract: round trip, every validation error path, PYSKL pickles, unsafe pickles."""

from __future__ import annotations

import copy
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema
from pipeline.schema import SchemaError, UnsafePickleError
from tests.helpers import load_as_numpy1, make_index, make_record

REPO = Path(__file__).resolve().parents[2]


def test_record_round_trip(tmp_path, record):
    path = tmp_path / "r.pkl"
    schema.write_record(record, path)
    back = schema.read_record(path)
    assert back.keys() == record.keys()
    for key in record:
        if isinstance(record[key], np.ndarray):
            np.testing.assert_array_equal(back[key], record[key])
            assert back[key].dtype == record[key].dtype
        else:
            assert back[key] == record[key]


def test_index_round_trip(tmp_path, index):
    path = tmp_path / "i.pkl"
    schema.write_index(index, path)
    back = schema.read_index(path)
    assert back["split"] == index["split"]
    assert [a["frame_dir"] for a in back["annotations"]] == [a["frame_dir"] for a in index["annotations"]]
    assert "6 clips" in schema.summarize(back)


def _mutations():
    """(name, mutate(rec), expected key fragment) for every record error path."""

    def setk(k, v):
        def f(r):
            r[k] = v

        return f

    def delk(k):
        def f(r):
            del r[k]

        return f

    return [
        ("missing frame_dir", delk("frame_dir"), "frame_dir"),
        ("missing keypoint", delk("keypoint"), "keypoint"),
        ("missing keypoint_score", delk("keypoint_score"), "keypoint_score"),
        ("missing total_frames", delk("total_frames"), "total_frames"),
        ("missing img_shape", delk("img_shape"), "img_shape"),
        ("empty frame_dir", setk("frame_dir", ""), "frame_dir"),
        ("negative frames", setk("total_frames", -3), "total_frames"),
        ("float frames", setk("total_frames", 16.0), "total_frames"),
        ("bad img_shape", setk("img_shape", (1080,)), "img_shape"),
        ("zero img_shape", setk("img_shape", (0, 1920)), "img_shape"),
        ("bad original_shape", setk("original_shape", "1080x1920"), "original_shape"),
        ("keypoint list", setk("keypoint", [[0.0]]), "keypoint"),
        ("keypoint int dtype", lambda r: r.update(keypoint=r["keypoint"].astype(np.int32)), "keypoint.dtype"),
        ("keypoint frames", lambda r: r.update(keypoint=r["keypoint"][:, :5]), "keypoint.shape"),
        ("keypoint joints", lambda r: r.update(keypoint=r["keypoint"][:, :, :10]), "keypoint.shape"),
        ("keypoint 3 coords", lambda r: r.update(keypoint=np.zeros((2, 16, 17, 3), np.float32)), "keypoint.shape"),
        ("nan keypoint", lambda r: r["keypoint"].__setitem__((0, 0, 0, 0), np.nan), "keypoint"),
        ("inf keypoint", lambda r: r["keypoint"].__setitem__((1, 2, 3, 1), np.inf), "keypoint"),
        ("score persons", lambda r: r.update(keypoint_score=r["keypoint_score"][:1]), "keypoint_score.shape"),
        ("negative score", lambda r: r["keypoint_score"].__setitem__((0, 0, 0), -0.5), "keypoint_score"),
        ("nan score", lambda r: r["keypoint_score"].__setitem__((0, 0, 0), np.nan), "keypoint_score"),
        ("label negative", setk("label", -1), "label"),
        ("label str", setk("label", "walk"), "label"),
        ("fps zero", setk("fps", 0.0), "fps"),
        ("fps nan", setk("fps", float("nan")), "fps"),
        ("person_ids float", setk("person_ids", np.zeros(2, np.float32)), "person_ids.dtype"),
        ("person_ids shape", setk("person_ids", np.zeros(3, np.int64)), "person_ids.shape"),
        ("box shape", setk("box", np.zeros((2, 16, 5), np.float32)), "box.shape"),
        ("box_score shape", setk("box_score", np.zeros((2, 15), np.float32)), "box_score.shape"),
        ("valid not a dict", setk("valid", [3]), "valid"),
        ("valid count above T", setk("valid", {0.5: 17}), "valid"),
        ("valid negative count", setk("valid", {0.5: -1}), "valid"),
        ("valid float count", setk("valid", {0.5: 2.0}), "valid"),
        ("valid threshold above 1", setk("valid", {1.5: 3}), "valid"),
        ("valid str threshold", setk("valid", {"0.5": 3}), "valid"),
        ("estimator", setk("estimator", {"name": "x"}), "estimator"),
        ("schema_version", setk("schema_version", 99), "schema_version"),
        ("not a dict", None, "record"),
    ]


@pytest.mark.parametrize("name,mutate,key", _mutations(), ids=[m[0] for m in _mutations()])
def test_record_errors(name, mutate, key, record):
    rec = copy.deepcopy(record)
    if mutate is None:
        rec = [rec]
    else:
        mutate(rec)
    with pytest.raises(SchemaError) as err:
        schema.validate_record(rec, source="f.pkl")
    assert err.value.key == key
    msg = str(err.value)
    assert msg.startswith("f.pkl") and key in msg and "expected" in msg and "got" in msg


def test_writer_rules(tmp_path, record):
    """Writers refuse float16 and scores above 1; nothing is written."""
    rec16 = dict(record, keypoint=record["keypoint"].astype(np.float16))
    with pytest.raises(SchemaError, match=r"keypoint\.dtype: expected float32, got float16"):
        schema.write_record(rec16, tmp_path / "a.pkl")
    rec_hi = dict(record, keypoint_score=record["keypoint_score"] + 1.0)
    with pytest.raises(SchemaError, match="keypoint_score"):
        schema.write_record(rec_hi, tmp_path / "b.pkl")
    assert list(tmp_path.iterdir()) == []


def test_index_errors(index):
    bad = copy.deepcopy(index)
    bad["split"]["xsub_val"].append("nope")
    with pytest.raises(SchemaError, match="unknown clip 'nope'"):
        schema.validate_index(bad, source="i.pkl")
    bad = copy.deepcopy(index)
    bad["annotations"][1]["frame_dir"] = bad["annotations"][0]["frame_dir"]
    with pytest.raises(SchemaError, match="duplicate"):
        schema.validate_index(bad)
    bad = copy.deepcopy(index)
    del bad["annotations"][2]["label"]
    with pytest.raises(SchemaError, match="label: expected present"):
        schema.validate_index(bad)
    for key in ("split", "annotations"):
        bad = copy.deepcopy(index)
        del bad[key]
        with pytest.raises(SchemaError, match=key):
            schema.validate_index(bad)
    with pytest.raises(SchemaError, match="annotations"):
        schema.validate_index({"split": {}, "annotations": {}})
    with pytest.raises(SchemaError, match="split"):
        schema.validate_index({"split": {"a": "c000"}, "annotations": []})


def _pyskl_protocol2_bytes(index: dict) -> bytes:
    """Pickle `index` as PYSKL's files are: protocol 2, numpy 1 names, _codecs.encode."""
    data = pickle.dumps(index, protocol=2)
    # numpy 2 writes numpy._core.*; published files (numpy 1) say numpy.core.*
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_pyskl_float16_pickle_validates(tmp_path):
    index = make_index(4)
    for ann in index["annotations"]:
        ann["keypoint"] = ann["keypoint"].astype(np.float16)
        ann["keypoint_score"] = ann["keypoint_score"].astype(np.float16)
        ann["raw_file"] = f"/data/{ann['frame_dir']}.avi"
        for k in ("fps", "person_ids", "estimator", "schema_version"):
            del ann[k]
    data = _pyskl_protocol2_bytes(index)
    assert b"_codecs\nencode" in data or b"_codecs" in data
    assert b"numpy.core.multiarray" in data
    path = tmp_path / "ntu60_hrnet.pkl"
    path.write_bytes(data)
    back = schema.read_index(path)
    assert back["annotations"][0]["keypoint"].dtype == np.float16
    assert back["annotations"][0]["raw_file"].endswith(".avi")
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and "4 clips" in res.stdout


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(kind: str, marker: Path) -> bytes:
    if kind == "os.system":
        obj = _Payload(os.system, f"touch {marker}")
    elif kind == "builtins.open":
        obj = _Payload(open, str(marker), "w")
    elif kind == "eval":
        obj = _Payload(eval, f"open({str(marker)!r}, 'w')")
    elif kind == "exec":
        obj = _Payload(exec, f"open({str(marker)!r}, 'w')")
    else:  # numpy's runstring: exec of a string inside numpy.testing
        from numpy.testing._private.utils import runstring

        obj = _Payload(runstring, f"open({str(marker)!r}, 'w')", {})
    return pickle.dumps({"split": {}, "annotations": [obj]}, protocol=2)


@pytest.mark.parametrize("kind", ["os.system", "builtins.open", "eval", "exec", "runstring"])
def test_malicious_pickles_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_malicious(kind, marker))
    with pytest.raises(UnsafePickleError, match="refusing"):
        schema.load_pickle(path)
    assert not marker.exists()
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode != 0 and "refusing" in res.stderr
    assert not marker.exists()


def test_other_numpy_globals_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(_Payload(np.load, "x")))
    with pytest.raises(UnsafePickleError):
        schema.load_pickle(path)


def test_bad_files(tmp_path):
    with pytest.raises(SchemaError, match="no such file"):
        schema.load_pickle(tmp_path / "missing.pkl")
    with pytest.raises(SchemaError, match="a directory"):
        schema.load_pickle(tmp_path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(SchemaError, match="expected a pickle"):
        schema.load_pickle(tmp_path / "junk.pkl")
    trunc = pickle.dumps(make_record())[:100]
    (tmp_path / "trunc.pkl").write_bytes(trunc)
    with pytest.raises(SchemaError, match="expected a pickle"):
        schema.load_pickle(tmp_path / "trunc.pkl")


def test_atomic_write_survives_kill(tmp_path):
    """A writer killed mid-write leaves no partial file under the real name."""
    dest = tmp_path / "big.pkl"
    script = textwrap.dedent(f"""
        import sys, time
        from pipeline.atomic import atomic_open
        with atomic_open({str(dest)!r}) as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    assert any(p.name.startswith(".big.pkl.tmp-") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not dest.exists()
    # an existing artifact is never replaced by a partial one
    dest.write_bytes(b"old")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE)
    proc.stdout.readline()
    proc.kill()
    proc.wait()
    assert dest.read_bytes() == b"old"


def test_atomic_write_error_leaves_nothing(tmp_path):
    from pipeline.atomic import atomic_open

    with pytest.raises(RuntimeError):
        with atomic_open(tmp_path / "a.bin") as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    """One file (or path) per kind of bad input."""
    out = {"missing": tmp_path / "missing.pkl", "directory": tmp_path}
    index = make_index(4)
    index["split"]["xsub_val"].append("ghost")
    cases = {
        "unknown clip": index,
        "nan": dict(make_record(), keypoint=np.full((2, 16, 17, 2), np.nan, np.float32)),
        "negative frames": dict(make_record(), total_frames=-1),
        "wrong dtype": dict(make_record(), keypoint_score=np.zeros((2, 16, 17), np.int64)),
    }
    for name, obj in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pkl"
        path.write_bytes(pickle.dumps(obj))
        out[name] = path
    (tmp_path / "unreadable.pkl").write_bytes(b"\x00garbage")
    out["unreadable"] = tmp_path / "unreadable.pkl"
    return out


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("missing", "no such file"),
        ("directory", "not a store"),  # a folder is read as a store (pipeline/store.py)
        ("unknown clip", "unknown clip 'ghost'"),
        ("nan", "NaN/inf"),
        ("negative frames", "total_frames"),
        ("wrong dtype", "keypoint_score.dtype"),
        ("unreadable", "expected a pickle"),
    ],
)
def test_validate_cli_errors_one_line(tmp_path, case, fragment):
    path = _bad_files(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bare_list_of_records_says_how_to_index_it(tmp_path):
    """PYSKL's custom_2d_skeleton.py writes a bare list of records: no index, and the error says
    which command makes one."""
    path = tmp_path / "custom.pkl"
    path.write_bytes(pickle.dumps([make_record(frame_dir="a"), make_record(frame_dir="b")]))
    hint = f"`python -m pipeline index --poses {path} --dataset folder --labels labels.csv --out INDEX.pkl`"
    for read in (schema.read_index, schema.read_any):
        with pytest.raises(SchemaError, match="got a bare list of 2 records; that is what PYSKL's") as info:
            read(path)
        assert str(info.value).endswith(hint)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and hint in res.stderr


def test_atomic_write_uses_normal_permissions(tmp_path):
    from pipeline.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def test_index_train_val_overlap(index):
    """A clip in <p>train and <p>val of one protocol is an error; protocols may share clips."""
    bad = copy.deepcopy(index)
    bad["split"]["xsub_val"].append(bad["split"]["xsub_train"][0])
    with pytest.raises(
        SchemaError,
        match=r"^i\.pkl: split\['xsub_train'\] / split\['xsub_val'\]: expected disjoint "
        r"train and val clips, got clip 'c000' in both$",
    ):
        schema.validate_index(bad, source="i.pkl")
    assert index["split"]["xview_val"] == index["split"]["xsub_train"]  # make_index shares them
    schema.validate_index(index)
    plain = {
        "split": {"train": ["c000", "c001", "c002"], "val": ["c002", "c001"]},
        "annotations": copy.deepcopy(index["annotations"]),
    }
    with pytest.raises(SchemaError, match=r"clip 'c002' in both \(and 1 more\)"):
        schema.validate_index(plain)
    with pytest.raises(SchemaError, match="disjoint"):
        schema.write_index(bad, Path("/nonexistent/never-written.pkl"))


def test_index_labels_within_label_names(index):
    schema.validate_index(dict(index, label_names=["a", "b", "c"]))
    bad = dict(index, label_names=["a", "b"])
    with pytest.raises(
        SchemaError,
        match=r"^i\.pkl annotations\[2\] \[c002\]: label: expected an index into "
        r"label_names \(< 2\), got int 2$",
    ):
        schema.validate_index(bad, source="i.pkl")
    for names in ("abc", ["a", 1, "c"], {"a": 0}):
        with pytest.raises(SchemaError, match="label_names: expected a list of class names"):
            schema.validate_index(dict(index, label_names=names))


def test_index_split_entries_must_be_str(index):
    bad = copy.deepcopy(index)
    bad["split"]["xsub_train"] = [["c000"]]
    with pytest.raises(SchemaError, match=r"split\['xsub_train'\]: expected a list of frame_dir str"):
        schema.validate_index(bad)


def test_error_messages_are_bounded(record):
    """Values from a file may be huge or deep: messages stay short and are built fast."""
    huge, deep, laughs = "x" * 10**6, [], [None]
    for _ in range(100_000):
        deep = [deep]
    for _ in range(60):
        laughs = [laughs, laughs]
    cases = [
        dict(record, frame_dir=huge, total_frames=-1),
        dict(record, total_frames=2**100_000),
        dict(record, fps=2**100_000),
        dict(record, label=huge),
        dict(record, img_shape=(huge, deep)),
        dict(record, estimator=deep),
        dict(record, keypoint=laughs),
        [record] * 10**6,
    ]
    for rec in cases:
        start = time.perf_counter()
        with pytest.raises(SchemaError) as err:
            schema.validate_record(rec, source="f.pkl")
        assert len(str(err.value)) < 400 and time.perf_counter() - start < 0.5, str(err.value)[:1000]
    index = {"split": {huge: [huge]}, "annotations": []}
    with pytest.raises(SchemaError) as err:
        schema.validate_index(index)
    assert len(str(err.value)) < 400


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("overlap", "split['xsub_train'] / split['xsub_val']: expected disjoint train and val clips, got clip 'c000'"),
        ("label", "annotations[2] [c002]: label: expected an index into label_names (< 2), got int 2"),
    ],
)
def test_validate_cli_reports_index_errors(tmp_path, case, fragment):
    index = make_index(4)
    if case == "overlap":
        index["split"]["xsub_val"].append("c000")
    else:
        index["label_names"] = ["a", "b"]
    path = tmp_path / "i.pkl"
    path.write_bytes(pickle.dumps(index))
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(path)], capture_output=True, text=True, cwd=REPO
    )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and res.stdout == "" and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {path}") and fragment in lines[0]


def test_written_pickles_name_only_numpy_core_globals(tmp_path):
    """numpy < 1.26 (PYSKL's environment) has no `numpy._core`: our files reference `numpy.core.*` only,
    and an unpickler that knows only those names (as numpy 1.x's) reads them. Every writer: a record,
    an index, `pipeline index` (box scores, `valid`; from a folder and from a list), a decompressed
    compressed index."""
    import pickle

    from pipeline.__main__ import main
    from tests.helpers import make_index, make_record
    from tests.pipeline.test_index import _custom_2d_skeleton_list
    from tests.pipeline.test_pyskl import write_k400

    rec, index = make_record(T=12), make_index(6, T=12)
    rec["fps"] = np.float32(25.0)  # a numpy scalar too
    schema.write_record(rec, tmp_path / "r.pkl")
    schema.write_index(index, tmp_path / "i.pkl")
    poses = tmp_path / "poses"
    poses.mkdir()
    boxed = dict(rec, frame_dir="walk_01", box=np.zeros((2, 12, 4), np.float32), box_score=np.ones((2, 12), np.float32))
    schema.write_record(boxed, poses / "walk_01.pkl")
    (tmp_path / "labels.csv").write_text("video,label\nwalk_01,walk\njump_01,jump\ncompressed,walk\n")
    folder = ["index", "--dataset", "folder", "--labels", str(tmp_path / "labels.csv")]
    assert main([*folder, "--poses", str(poses), "--out", str(tmp_path / "x.pkl")]) == 0
    assert schema.read_index(tmp_path / "x.pkl")["annotations"][0]["valid"][0.9] == 12
    (tmp_path / "list.pkl").write_bytes(pickle.dumps(_custom_2d_skeleton_list(["jump_01"])))
    assert main([*folder, "--poses", str(tmp_path / "list.pkl"), "--out", str(tmp_path / "l.pkl")]) == 0
    schema.write_index(schema.read_index(write_k400(tmp_path / "k400")), tmp_path / "k.pkl")
    for path in (tmp_path / "r.pkl", tmp_path / "i.pkl", tmp_path / "x.pkl", tmp_path / "l.pkl", tmp_path / "k.pkl"):
        assert schema.load_pickle(path).keys() == load_as_numpy1(path).keys()
    np.testing.assert_array_equal(schema.read_record(tmp_path / "r.pkl")["keypoint"], rec["keypoint"])


def test_detector_provenance_is_validated():
    """Top-down records say which detector, weights and thresholds found their persons; each field is checked."""
    from tests.helpers import make_record

    det = {
        "name": "fasterrcnn_resnet50_fpn_v2",
        "weights": "fasterrcnn.pth",
        "sha256": "a" * 64,
        "score_threshold": 0.5,
        "min_area": 0.0,
        "input_size": 800,
        "keyframe_interval": 1,
    }
    schema.validate_record({**make_record(), "detector": det}, write=True)
    for key, bad in [("sha256", "xyz"), ("score_threshold", 1.5), ("input_size", 8), ("keyframe_interval", 0)]:
        with pytest.raises(schema.SchemaError, match=f"detector.{key}"):
            schema.validate_record({**make_record(), "detector": {**det, key: bad}})
    with pytest.raises(schema.SchemaError, match="detector.min_area: expected present"):
        schema.validate_record({**make_record(), "detector": {k: v for k, v in det.items() if k != "min_area"}})

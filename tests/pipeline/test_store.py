"""Dataset stores (pipeline/store.py): round trip, lazy open, truncation, atomic pack, pickling, metadata."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import schema, store
from pipeline.__main__ import main
from pipeline.store import StoreError, open_dataset, pack
from tests.helpers import load_as_numpy1, make_index

REPO = Path(__file__).resolve().parents[2]


def published_index(n: int = 8, *, seed: int = 0) -> dict:
    """A PYSKL-published-layout index: float16 arrays, original_shape, no provenance keys."""
    rng = np.random.default_rng(seed)
    anns = []
    for i in range(n):
        m, t = 1 + i % 2, 5 + 3 * i
        anns.append(
            {
                "frame_dir": f"S001C001P{i:03d}R001A{1 + i % 3:03d}",
                "label": i % 3,
                "img_shape": (1080, 1920),
                "original_shape": (1080, 1920),
                "total_frames": t,
                "keypoint": (rng.random((m, t, 17, 2)) * 1000).astype(np.float16),
                "keypoint_score": rng.random((m, t, 17)).astype(np.float16),
            }
        )
    names = [a["frame_dir"] for a in anns]
    return {"split": {"xsub_train": names[: n // 2], "xsub_val": names[n // 2 :]}, "annotations": anns}


def ours_index(n: int = 6) -> dict:
    """Our layout with every kind of extra: provenance, boxes, a key only some clips have, a tool's raw key."""
    index = make_index(n)
    for i, a in enumerate(index["annotations"]):
        m, t = a["keypoint"].shape[:2]
        a["box"] = np.full((m, t, 4), i, dtype=np.float32)
        a["box_score"] = np.full((m, t), 0.5, dtype=np.float32)
        a["cache"] = {"video": f"v{i}.mp4", "settings": "s", "digest": f"{i:064d}"}
        a["img_shape"] = [1080, 1920] if i == 0 else (1080, 1920)  # a list once: kept as such
        if i % 2:
            a["raw_file"] = f"raw/{i}.pkl"
            a["note"] = 3 + i
    index["label_names"] = ["a", "b", "c"]
    index["dataset"] = "ntu60"
    index["schema_version"] = 1
    return index


def assert_same_index(back: dict, want: dict) -> None:
    assert back.keys() == want.keys() and back["split"] == want["split"]
    assert {k: v for k, v in back.items() if k not in ("split", "annotations")} == {
        k: v for k, v in want.items() if k not in ("split", "annotations")
    }
    assert len(back["annotations"]) == len(want["annotations"])
    for got, rec in zip(back["annotations"], want["annotations"]):
        assert list(got) == list(rec), rec["frame_dir"]  # same keys, same order
        for key, value in rec.items():
            if isinstance(value, np.ndarray):
                assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
                np.testing.assert_array_equal(got[key], value)
            else:
                assert type(got[key]) is type(value) and got[key] == value, (key, got[key], value)


@pytest.mark.parametrize("make", [published_index, ours_index])
def test_round_trip_pickle_store_pickle(tmp_path, make, capsys):
    want = make()
    src = tmp_path / "in.pkl"
    schema.save_pickle(want, src)
    assert main(["pack", str(src), str(tmp_path / "x.store")]) == 0
    assert capsys.readouterr().out.startswith(f"store: {len(want['annotations'])} clips")
    assert main(["export-pyskl", str(tmp_path / "x.store"), str(tmp_path / "out.pkl")]) == 0
    assert_same_index(schema.read_index(tmp_path / "out.pkl"), want)
    ds = open_dataset(tmp_path / "x.store")
    assert_same_index(ds.to_index(), want)
    if make is published_index:  # float16 stays float16, and only the two arrays are files
        assert ds.dtypes == {"keypoint": np.dtype("<f2"), "keypoint_score": np.dtype("<f2")}
        assert sorted(p.name for p in ds.path.iterdir()) == ["keypoint.bin", "keypoint_score.bin", "meta.pkl"]
    else:
        assert set(ds.dtypes) == {"keypoint", "keypoint_score", "box", "box_score", "person_ids"}
        assert ds.dataset == "ntu60" and ds.label_names == ["a", "b", "c"]


def test_store_and_pickle_answer_alike(tmp_path):
    want = ours_index()
    want["annotations"][2]["keypoint_score"][:] = 0
    schema.save_pickle(want, tmp_path / "in.pkl")
    pack(want, tmp_path / "x.store")
    a, b = open_dataset(tmp_path / "in.pkl"), open_dataset(tmp_path / "x.store")
    assert isinstance(a, store.IndexDataset) and isinstance(b, store.StoreDataset)
    for ds in (a, b):
        assert len(ds) == 6 and ds.frame_dirs == [r["frame_dir"] for r in want["annotations"]]
        assert ds.split == want["split"] and ds.label_names == ["a", "b", "c"] and ds.dataset == "ntu60"
        np.testing.assert_array_equal(ds.labels, [r["label"] for r in want["annotations"]])
        assert ds.position("c004") == 4 and ds.num_frames(4) == 20 and ds.num_persons(3) == 2
        assert [ds.unusable(i) for i in range(6)] == [None, None, "all keypoint scores are zero", None, None, None]
        assert ds["split"] is ds.split and ds.get("dataset") == "ntu60" and "label_names" in ds
        assert len(ds["annotations"]) == 6 and ds["annotations"][1]["frame_dir"] == "c001"
        with pytest.raises(KeyError, match="ghost"):
            ds.position("ghost")


def test_pack_keeps_what_the_records_have_and_empty_store(tmp_path):
    index = make_index(4)
    index["annotations"][0]["box"] = np.zeros((1, 16, 4), np.float32)  # one clip only: an extra, not a file
    ds = pack(index, tmp_path / "x.store")
    assert "box" not in ds.dtypes and ds.clip(0)["box"].shape == (1, 16, 4) and "box" not in ds.clip(1)
    mixed = make_index(3)
    mixed["annotations"][1]["keypoint"] = mixed["annotations"][1]["keypoint"].astype(np.float16)
    assert pack(mixed, tmp_path / "m.store").dtypes["keypoint"] == np.float32  # the common dtype
    empty = pack({"split": {"train": []}, "annotations": []}, tmp_path / "e.store")
    assert len(empty) == 0 and empty.split == {"train": []} and empty.to_index()["annotations"] == []


def test_open_reads_no_array(tmp_path, monkeypatch):
    """Opening maps nothing; clip data is read on access, once per field."""
    ds = pack(make_index(6), tmp_path / "x.store")
    calls = []
    real = np.memmap

    def counting(*args, **kwargs):
        calls.append(Path(args[0]).name)
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "memmap", counting)
    ds = open_dataset(tmp_path / "x.store")
    _ = ds.split, ds.labels, ds.frame_dirs, [ds.unusable(i) for i in range(len(ds))], ds.num_frames(3)
    assert calls == []
    kp, score = ds.pose(3)
    kp2, _ = ds.pose(4)
    assert calls == ["keypoint.bin", "keypoint_score.bin"] and not kp.flags.writeable
    np.testing.assert_array_equal(kp, make_index(6)["annotations"][3]["keypoint"])


def test_open_cost_does_not_grow_with_the_arrays(tmp_path):
    """A store whose keypoint.bin is 78 MiB opens in a fresh process in well under a second and a few MiB."""
    t = 1500
    rec = make_index(1, T=t)["annotations"][0]  # M=1
    anns = [{**rec, "frame_dir": f"c{i:03d}", "keypoint_score": rec["keypoint_score"] + 0} for i in range(400)]
    names = [a["frame_dir"] for a in anns]
    out = tmp_path / "big.store"
    pack({"split": {"train": names}, "annotations": anns}, out)
    assert (out / "keypoint.bin").stat().st_size == 400 * t * 17 * 2 * 4
    code = textwrap.dedent(
        f"""
        import time
        import numpy as np
        from pipeline.store import open_dataset
        def hwm():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
        before = hwm()
        t0 = time.perf_counter()
        ds = open_dataset({str(out)!r})
        _ = ds.split, ds.labels, ds.frame_dirs, ds.position("c399")
        print(time.perf_counter() - t0, hwm() - before)
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    seconds, kib = map(float, res.stdout.split())
    assert seconds < 1.0 and kib < 16 * 1024, (seconds, kib)


def test_truncated_bin_is_one_line_naming_file_and_clip(tmp_path):
    out = tmp_path / "x.store"
    pack(make_index(6), out)  # c000: 1 x 16 frames, c001: 2 x 17, c002: 1 x 18, ...
    kp = out / "keypoint.bin"
    row = 17 * 2 * 4
    os.truncate(kp, (16 + 34 + 10) * row)  # c002 is cut short
    with pytest.raises(StoreError, match=r"keypoint.bin: truncated \(\d+ bytes, expected \d+\): clip c002 and later"):
        open_dataset(out)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", str(out)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line == (
        f"error: {kp}: truncated ({(16 + 34 + 10) * row} bytes, expected {(16 + 34 + 18 + 38 + 20 + 42) * row}): "
        "clip c002 and later cannot be read; re-pack it"
    )
    kp.unlink()
    with pytest.raises(StoreError, match="keypoint.bin: missing"):
        open_dataset(out)


def test_validate_store_checks_content(tmp_path, capsys):
    out = tmp_path / "x.store"
    pack(make_index(6), out)
    assert main(["validate", str(out)]) == 0 and capsys.readouterr().out.startswith("store: 6 clips")
    data = bytearray((out / "keypoint_score.bin").read_bytes())
    data[5] ^= 0xFF
    (out / "keypoint_score.bin").write_bytes(bytes(data))
    assert main(["validate", str(out)]) == 1
    assert "keypoint_score.bin: content differs from the sha256" in capsys.readouterr().err


def test_pack_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "x.store"
    real = store._write_pickle

    def full_disk(path, obj):
        if path.name == store.META:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(store, "_write_pickle", full_disk)
    with pytest.raises(OSError, match="No space"):
        pack(make_index(6), out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    pack(make_index(4), out)  # an existing store is replaced whole
    monkeypatch.setattr(store, "_write_pickle", full_disk)
    with pytest.raises(OSError):
        pack(make_index(6), out)
    assert len(open_dataset(out)) == 4 and [p.name for p in tmp_path.iterdir()] == ["x.store"]
    monkeypatch.undo()
    assert len(pack(make_index(6), out)) == 6 and [p.name for p in tmp_path.iterdir()] == ["x.store"]


def test_pack_refuses_to_replace_what_is_not_a_store(tmp_path):
    (tmp_path / "x.store").mkdir()
    (tmp_path / "x.store" / "mine.txt").write_text("keep me")
    with pytest.raises(StoreError, match="exists and is not a store"):
        pack(make_index(2), tmp_path / "x.store")
    assert (tmp_path / "x.store" / "mine.txt").read_text() == "keep me"


def test_pack_killed_midway_leaves_no_store(tmp_path):
    """SIGKILL while the arrays are written: no x.store; the next pack removes the killed one's folder."""
    out = tmp_path / "x.store"
    code = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from pipeline import store
        from tests.helpers import make_index
        calls = []
        real = store.IndexDataset.clip
        def clip(self, i):  # pass 1 reads the 6 clips, pass 2 writes 3, then the process dies
            calls.append(i)
            if len(calls) == 6 + 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, i)
        store.IndexDataset.clip = clip
        store.pack(make_index(6), {str(out)!r})
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == -signal.SIGKILL, res.stderr
    left = list(tmp_path.iterdir())
    assert not out.exists() and len(left) == 1 and left[0].name.startswith(".x.store.tmp-"), left
    pack(make_index(2), out)
    assert [p.name for p in tmp_path.iterdir()] == ["x.store"]


def test_pickled_store_is_small_and_reopens(tmp_path):
    """A pickled store is its path and metadata: no array content, whatever the clips' length."""
    short = pack(make_index(40, T=20), tmp_path / "short.store")
    ds = pack(make_index(40, T=2000), tmp_path / "x.store")
    _ = ds.pose(0), ds.split, ds.position("c001")  # maps and caches exist now
    data = pickle.dumps(ds)
    meta_bytes = (tmp_path / "x.store" / store.META).stat().st_size
    assert abs(len(data) - len(pickle.dumps(short))) < 64 and len(data) < meta_bytes + 1024, len(data)
    assert (tmp_path / "x.store" / "keypoint.bin").stat().st_size > 1000 * len(data)
    back = pickle.loads(data)
    assert back._maps == {} and back._names is None
    np.testing.assert_array_equal(back.pose(7)[0], ds.pose(7)[0])
    assert back.clip(3)["estimator"] == ds.clip(3)["estimator"]


def test_store_changed_after_open_is_an_error(tmp_path):
    ds = pack(make_index(4), tmp_path / "x.store")
    state = pickle.dumps(ds)
    pack(make_index(4, seed=1), tmp_path / "x.store")  # re-packed under the open store
    with pytest.raises(StoreError, match="changed since the store was opened"):
        pickle.loads(state).pose(0)


def test_metadata_pickles_name_only_numpy_core_globals(tmp_path):
    out = tmp_path / "x.store"
    pack(ours_index(), out)
    for path in (out / store.META, out / store.EXTRAS):
        assert load_as_numpy1(path).keys() == schema.load_pickle(path).keys()


def test_split_naming_an_absent_clip(tmp_path):
    index = make_index(4)
    index["split"]["xsub_train"].append("ghost_clip")
    with pytest.raises(schema.SchemaError, match=r"split\['xsub_train'\].*ghost_clip"):
        pack(index, tmp_path / "x.store")
    assert not (tmp_path / "x.store").exists()
    out = tmp_path / "y.store"
    pack(make_index(4), out)  # then a metadata that names position 9 of 4 clips
    meta = schema.load_pickle(out / store.META)
    meta["split"]["xsub_val"] = np.asarray([2, 9], dtype=np.int32)
    schema.save_pickle(meta, out / store.META)
    with pytest.raises(StoreError, match=r"split\['xsub_val'\] names clip position 9, absent \(the store holds 4\)"):
        open_dataset(out)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(version=99), "store version 99"),
        (lambda m: m.update(offset=m["offset"][::-1].copy()), "offset: not the running sum"),
        (lambda m: m.update(label=m["label"] + 5), "label 5 >= 3 label_names"),
        (lambda m: m.update(frame_dir=np.asarray([b"a", b"a", b"b", b"c"])), "duplicate clip names"),
        (lambda m: m["split"].update(xsub_val=m["split"]["xsub_train"]), "share clip 'c000'"),
        (lambda m: m.pop("columns"), "metadata lacks ['columns']"),
    ],
)
def test_inconsistent_metadata_is_one_clear_error(tmp_path, mutate, message):
    out = tmp_path / "x.store"
    index = make_index(4)
    index["label_names"] = ["a", "b", "c"]
    pack(index, out)
    meta = schema.load_pickle(out / store.META)
    mutate(meta)
    schema.save_pickle(meta, out / store.META)
    with pytest.raises(StoreError, match=message.replace("[", r"\[").replace("(", r"\(")):
        open_dataset(out)


def test_unsafe_metadata_is_refused(tmp_path):
    out = tmp_path / "x.store"
    pack(make_index(2), out)
    (out / store.META).write_bytes(pickle.dumps({"format": store.FORMAT, "x": time.sleep}))
    with pytest.raises(schema.UnsafePickleError, match="refusing"):
        open_dataset(out)
    assert main(["validate", str(tmp_path / "nothing.store")]) == 1


def test_bench_data_quick(tmp_path):
    """bench/data.py --quick: every measurement runs at a tiny size and the table has a row per size."""
    res = subprocess.run(
        [sys.executable, "bench/data.py", "--quick", "--json", str(tmp_path / "b.json")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| tiny-")]
    assert len(rows) == 2 and all(line.count("|") == 14 for line in rows), res.stdout
    for row in json.loads((tmp_path / "b.json").read_text()):
        assert row["open_store"]["seconds"] < 5 and row["preprocess"]["loader_2w"] > 0
        assert row["store_mib"] > 0 and row["read_index"]["seconds"] > 0
    assert not list(Path(tempfile.gettempdir()).glob("bench-data-*/tiny-ntu")), "work dir left behind"

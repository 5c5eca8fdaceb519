"""Dataset adapters: NTU names and official splits, Kinetics CSVs, the generic folder."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline import datasets
from pipeline.datasets import (
    DATASETS,
    NTU60,
    NTU120,
    DatasetAdapter,
    DatasetError,
    FolderDataset,
    Kinetics400,
    UnknownVideoError,
    get_dataset,
    kinetics_clip_id,
    parse_ntu_name,
    video_id,
)

K400_HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def kinetics_csvs(tmp_path):
    train = write(
        tmp_path / "train.csv",
        K400_HEADER
        + "abseiling,---QUuC4vJs,84,94,train,0\n"
        + "air drumming,--nQbRBEz2s,104,114,train,0\n"
        + '"passing American football (in game)",-0MpAl5Swj0,2.0,12.0,train,1\n',
    )
    val = write(
        tmp_path / "validate.csv",
        K400_HEADER + "zumba,--07WQ2iBlw,1,11,val,0\n" + "abseiling,0347ZoDXyP0,23,33,val,0\n",
    )
    return [train, val]


@pytest.fixture
def folder_csv(tmp_path):
    return write(
        tmp_path / "labels.csv",
        "video,label,split\nrun_01.mp4,run,train\nwalk_01,walk,train\njump_01.avi,jump,val\nrun_02,run,val\n",
    )


def build(name, kinetics_csvs, folder_csv):
    kwargs = {"kinetics400": {"csv_paths": kinetics_csvs}, "folder": {"labels_csv": folder_csv}}.get(name, {})
    return get_dataset(name, **kwargs)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_dataset_builds(name, kinetics_csvs, folder_csv):
    ds = build(name, kinetics_csvs, folder_csv)
    assert isinstance(ds, DatasetAdapter) and ds.name == name
    ids = ds.expected_ids()
    assert ids and len(set(ids)) == len(ids)
    for vid in ids[:50]:
        assert 0 <= ds.label(vid) < len(ds.label_names)
        assert set(ds.splits(vid)) <= set(ds.split_names)
    with pytest.raises(UnknownVideoError, match="not_a_video"):
        ds.label("not_a_video")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(KeyError, match="folder, kinetics400, ntu120, ntu60"):
        get_dataset("ntu61")


# ------------------------------------------------------------------------------------------
# NTU
# ------------------------------------------------------------------------------------------


def test_parse_ntu_name_and_label():
    n = parse_ntu_name("S001C002P003R002A013")
    assert (n.setup, n.camera, n.performer, n.replication, n.action) == (1, 2, 3, 2, 13)
    assert str(n) == "S001C002P003R002A013"
    assert NTU60().label("S001C002P003R002A013") == 12
    assert NTU60().label("S001C002P003R002A001") == 0
    assert NTU120().label("S018C001P008R001A120") == 119
    # the RGB videos are <name>_rgb.avi: same label and splits, canonical id without suffix
    assert NTU60().label("S001C002P003R002A013_rgb") == 12
    assert NTU60().canonical_id("S001C002P003R002A013_rgb") == "S001C002P003R002A013"


@pytest.mark.parametrize(
    "dataset, vid, reason",
    [
        (NTU60, "S001C002P003R002", "not an NTU name"),
        (NTU60, "s001c002p003r002a013", "not an NTU name"),
        (NTU60, "S001C002P003R002A013.avi", "not an NTU name"),
        (NTU60, "S1C2P3R2A13", "not an NTU name"),
        (NTU60, "S001C002P003R002A000", "action 0 outside 1-60"),
        (NTU60, "S001C002P003R002A061", "action 61 outside 1-60"),
        (NTU120, "S001C002P003R002A121", "action 121 outside 1-120"),
        (NTU60, "S018C001P008R001A001", "setup 18 outside 1-17"),
        (NTU60, "S001C004P001R001A001", "camera 4 outside 1-3"),
        (NTU60, "S001C001P041R001A001", "performer 41 outside 1-40"),
        (NTU120, "S001C001P001R003A001", "replication 3 outside 1-2"),
    ],
)
def test_ntu_name_errors_name_the_id(dataset, vid, reason):
    with pytest.raises(UnknownVideoError, match=reason) as info:
        dataset().label(vid)
    assert repr(vid) in str(info.value)
    with pytest.raises(UnknownVideoError):
        dataset().splits(vid)


def test_ntu_label_names():
    assert len(NTU60().label_names) == 60 and len(NTU120().label_names) == 120
    assert NTU120().label_names[:60] == NTU60().label_names
    assert NTU60().label_names[0] == "drink water"
    assert NTU60().label_names[12] == "tear up paper"  # A13
    assert NTU60().label_names[59] == "walking apart from each other"
    assert NTU120().label_names[60] == "put on headphone"
    assert NTU120().label_names[119] == "finger-guessing game (playing rock-paper-scissors)"
    assert len(set(NTU120().label_names)) == 120


def generated_ntu_names(setups):
    """All file names of the given setups: per setup its performers x cameras 1-3 x
    replications 1-2 x its 60 actions (A001-A060 in S001-S017, A061-A120 in S018-S032)."""
    return [
        f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}"
        for s in setups
        for p in datasets.NTU_SETUP_PERFORMERS[s]
        for c in (1, 2, 3)
        for r in (1, 2)
        for a in (range(1, 61) if s <= 17 else range(61, 121))
    ]


def split_sizes(ds, names):
    sizes = Counter(s for n in names for s in ds.splits(n))
    return {k: sizes[k] for k in ds.split_names}


def test_ntu60_official_split_sizes():
    """All 56,880 NTU60 names (S001-S017, 40 performers, 158 setup-performer pairs).

    The official training performers give 40,320 / 16,560 videos and the training cameras 2, 3
    give 37,920 / 18,960: the sizes published in the NTU RGB+D paper, counted before the 302
    samples with missing skeletons are removed (PYSKL's ntu60 pickles: 40,091 / 16,487).
    """
    names = generated_ntu_names(range(1, 18))
    assert len(names) == len(set(names)) == 56_880
    assert sorted(names) == NTU60().expected_ids()
    assert split_sizes(NTU60(), names) == {
        "xsub_train": 40_320,
        "xsub_val": 16_560,
        "xview_train": 37_920,
        "xview_val": 18_960,
    }
    labels = Counter(NTU60().label(n) for n in names)
    assert sorted(labels) == list(range(60)) and set(labels.values()) == {948}
    performers = {p for s in range(1, 18) for p in datasets.NTU_SETUP_PERFORMERS[s]}
    assert performers == set(range(1, 41))
    assert len(datasets.NTU60_TRAIN_SUBJECTS) == 20


def test_ntu120_official_split_sizes():
    """All 114,480 NTU120 names (S001-S032, 106 performers, 318 setup-performer pairs).

    Full-list sizes: cross-subject 63,360 / 51,120, cross-setup 54,720 / 59,760. The NTU120
    paper reports 63,026 / 50,922 and 54,471 / 59,477, i.e. the same splits after removing
    the 532 samples it lists without skeletons; the current list has 535, and removing it gives
    PYSKL's 63,026 / 50,919 and 54,468 / 59,477 (test_published_split_sizes_without_missing_skeletons).
    """
    names = generated_ntu_names(range(1, 33))
    assert len(names) == len(set(names)) == 114_480
    assert sorted(names) == NTU120().expected_ids()
    assert split_sizes(NTU120(), names) == {
        "xsub_train": 63_360,
        "xsub_val": 51_120,
        "xset_train": 54_720,
        "xset_val": 59_760,
    }
    assert {NTU120().label(n) for n in names} == set(range(120))
    performers = {p for ps in datasets.NTU_SETUP_PERFORMERS.values() for p in ps}
    assert performers == set(range(1, 107))
    assert len(datasets.NTU120_TRAIN_SUBJECTS) == 53


def test_ntu_split_membership():
    # performer 1 trains, 3 tests; camera 1 is the cross-view test camera
    assert NTU60().splits("S001C001P001R001A001") == ("xsub_train", "xview_val")
    assert NTU60().splits("S001C003P003R001A001") == ("xsub_val", "xview_train")
    # NTU120: even setups train in cross-setup; performer 103 trains, 104 tests
    assert NTU120().splits("S032C001P103R001A061") == ("xsub_train", "xset_train")
    assert NTU120().splits("S031C001P104R001A061") == ("xsub_val", "xset_val")


# ------------------------------------------------------------------------------------------
# Kinetics-400
# ------------------------------------------------------------------------------------------


def test_kinetics_clip_naming():
    assert kinetics_clip_id("---QUuC4vJs", 84, 94) == "---QUuC4vJs_000084_000094"
    assert kinetics_clip_id("abc", 2.0, 12.0) == "abc_000002_000012"


def test_kinetics_labels_and_splits(kinetics_csvs):
    ds = Kinetics400(csv_paths=kinetics_csvs)
    assert ds.label_names == [
        "abseiling",
        "air drumming",
        "passing American football (in game)",
        "zumba",
    ]  # sorted alphabetically: the standard label map order
    assert ds.split_names == ("train", "val")
    assert ds.label("---QUuC4vJs_000084_000094") == 0
    assert ds.splits("---QUuC4vJs_000084_000094") == ("train",)
    assert ds.label("-0MpAl5Swj0_000002_000012") == 2
    assert ds.label("--07WQ2iBlw_000001_000011") == 3
    assert ds.splits("0347ZoDXyP0_000023_000033") == ("val",)
    assert len(ds.expected_ids()) == 5
    with pytest.raises(UnknownVideoError, match="---QUuC4vJs_000000_000010"):
        ds.label("---QUuC4vJs_000000_000010")


def test_kinetics_unlabelled_test_rows(tmp_path):
    csv = write(tmp_path / "test.csv", K400_HEADER + ",aaaaaaaaaaa,0,10,test,0\n" + "zumba,bbbbbbbbbbb,0,10,train,0\n")
    ds = Kinetics400(csv_paths=[csv])
    assert ds.splits("aaaaaaaaaaa_000000_000010") == ("test",)
    with pytest.raises(UnknownVideoError, match="no label"):
        ds.label("aaaaaaaaaaa_000000_000010")


@pytest.mark.parametrize(
    "text, match",
    [
        ("label,youtube_id,time_start,split\nzumba,a,1,train\n", r"missing column\(s\) \['time_end'\]"),
        (K400_HEADER + "zumba,a,x,10,train,0\n", "must be numbers"),
        (K400_HEADER + "zumba,a,0,10,holdout,0\n", "split 'holdout'"),
        (K400_HEADER + "zumba,a,0,10,train,0\nyoga,a,0,10,train,0\n", "listed twice"),
    ],
)
def test_kinetics_csv_errors(tmp_path, text, match):
    csv = write(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=match) as info:
        Kinetics400(csv_paths=[csv])
    assert "bad.csv" in str(info.value)


def test_kinetics_needs_a_csv(tmp_path):
    with pytest.raises(DatasetError, match="at least one"):
        Kinetics400(csv_paths=[])
    with pytest.raises(DatasetError, match="no such file"):
        Kinetics400(csv_paths=[tmp_path / "absent.csv"])


# ------------------------------------------------------------------------------------------
# Generic folder
# ------------------------------------------------------------------------------------------


def test_video_id_strips_video_extensions_only():
    assert video_id("a/b/run_01.mp4") == "run_01"
    assert video_id("run_01.AVI") == "run_01"
    assert video_id("clip.v2") == "clip.v2"
    assert video_id(" S001C001P001R001A001_rgb.avi ") == "S001C001P001R001A001_rgb"


def test_folder_sorted_classes(folder_csv):
    ds = FolderDataset(labels_csv=folder_csv)
    assert ds.label_names == ["jump", "run", "walk"]
    assert ds.split_names == ("train", "val")
    assert ds.label("run_01") == 1 and ds.splits("run_01") == ("train",)
    assert ds.label("jump_01") == 0 and ds.splits("jump_01") == ("val",)
    assert ds.expected_ids() == ["jump_01", "run_01", "run_02", "walk_01"]


def test_folder_classes_txt_order(folder_csv, tmp_path):
    classes = write(tmp_path / "order.txt", "walk\nrun\n\njump\nswim\n")
    ds = FolderDataset(labels_csv=folder_csv, classes_txt=classes)
    assert ds.label_names == ["walk", "run", "jump", "swim"]
    assert ds.label("jump_01") == 2
    # classes.txt beside labels.csv is picked up by default
    write(tmp_path / "classes.txt", "walk\nrun\njump\n")
    assert FolderDataset(labels_csv=folder_csv).label_names == ["walk", "run", "jump"]


def test_folder_without_split_column(tmp_path):
    ds = FolderDataset(labels_csv=write(tmp_path / "labels.csv", "video,label\na,x\nb,y\n"))
    assert ds.split_names == () and ds.splits("a") == ()


@pytest.mark.parametrize(
    "csv_text, classes, match",
    [
        ("video,class\na,x\n", None, r"missing column\(s\) \['label'\]"),
        ("video,label\na,x\na.mp4,y\n", None, "listed twice"),
        ("video,label\na,\n", None, "empty video or label"),
        ("video,label\na,x\nb,y\n", "x\n", r"does not list the class\(es\) \['y'\]"),
        ("video,label\na,x\n", "x\nx\n", "listed twice"),
    ],
)
def test_folder_errors(tmp_path, csv_text, classes, match):
    labels = write(tmp_path / "labels.csv", csv_text)
    order = write(tmp_path / "order.txt", classes) if classes else None
    with pytest.raises(DatasetError, match=match):
        FolderDataset(labels_csv=labels, classes_txt=order)


# ------------------------------------------------------------------------------------------
# NTU samples with missing skeletons
# ------------------------------------------------------------------------------------------

OFFICIAL_HEADER = (
    "{n} of the captured samples in the dataset have missing or incomplete skeleton data.\n"
    "If you are working on skeleton-based analysis, please ignore these files.\n\n"
)


def test_read_missing_skeletons_official_layout(tmp_path):
    names = ["S001C002P005R002A008", "S001C002P006R001A008_rgb.avi", "S017C003P020R001A059.skeleton"]
    f = write(tmp_path / "m.txt", OFFICIAL_HEADER.format(n=3) + "\n".join(names) + "\n\n")
    assert datasets.read_missing_skeletons(f) == [
        "S001C002P005R002A008",
        "S001C002P006R001A008",
        "S017C003P020R001A059",
    ]
    # no header, CRLF line ends, a comment
    f = write(tmp_path / "bare.txt", "# mine\r\nS001C002P005R002A008\r\n  S001C002P006R001A008  \r\n")
    assert datasets.read_missing_skeletons(f) == ["S001C002P005R002A008", "S001C002P006R001A008"]


@pytest.mark.parametrize(
    "text, match",
    [
        (OFFICIAL_HEADER.format(n=2) + "S001C002P005R002A008\nS1C2P5R2A8\n", r"m\.txt:5: not an NTU sample name"),
        (OFFICIAL_HEADER.format(n=3) + "S001C002P005R002A008\nS001C002P006R001A008\n", "announces 3 samples"),
        (OFFICIAL_HEADER.format(n=1), "no NTU sample names"),
    ],
)
def test_read_missing_skeletons_errors(tmp_path, text, match):
    with pytest.raises(DatasetError, match=match):
        datasets.read_missing_skeletons(write(tmp_path / "m.txt", text))
    with pytest.raises(DatasetError, match="no such file"):
        datasets.read_missing_skeletons(tmp_path / "absent.txt")


def test_ntu_adapters_exclude_missing_skeletons():
    listed = ["S001C002P005R002A008_rgb", "S001C003P002R001A055", "S018C001P008R001A061"]
    ntu60, ntu120 = NTU60(missing_skeletons=listed), NTU120(missing_skeletons=listed)
    assert ntu60.excluded == {"S001C002P005R002A008", "S001C003P002R001A055"}  # S018: NTU120 only
    assert ntu120.excluded == {"S001C002P005R002A008", "S001C003P002R001A055", "S018C001P008R001A061"}
    assert len(ntu60.expected_ids()) == 56_880 - 2 and "S001C003P002R001A055" not in ntu60.expected_ids()
    assert len(ntu120.expected_ids()) == 114_480 - 3
    assert ntu60.label("S001C003P002R001A055") == 54  # still an NTU video: labelled, just not indexed
    assert NTU60().excluded == frozenset() and FolderDataset.excluded == frozenset()
    with pytest.raises(UnknownVideoError, match="not an NTU name"):
        NTU60(missing_skeletons=["clip_01"])


def test_load_missing_skeletons_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("RSA_DATA_DIR", str(tmp_path / "cache"))
    listed = write(tmp_path / "m.txt", "S001C002P005R002A008\n")
    assert datasets.load_missing_skeletons("ntu60", path=listed) == {"S001C002P005R002A008"}
    assert datasets.load_missing_skeletons("ntu120", keep=True) == frozenset()
    with pytest.raises(DatasetError, match="exclude each other"):
        datasets.load_missing_skeletons("ntu60", path=listed, keep=True)
    with pytest.raises(DatasetError, match="only ntu60, ntu120"):
        datasets.load_missing_skeletons("kinetics400")
    with pytest.raises(DatasetError, match="make fetch DATASET=ntu_missing_skeletons") as info:
        datasets.load_missing_skeletons("ntu60")
    assert str(tmp_path / "cache") in str(info.value) and "\n" not in str(info.value)
    # without pipeline.fetch: the official file name in $RSA_DATA_DIR
    monkeypatch.setitem(sys.modules, "pipeline.fetch", None)
    (tmp_path / "cache").mkdir()
    write(tmp_path / "cache" / "NTU_RGBD120_samples_with_missing_skeletons.txt", "S018C001P008R001A061\n")
    assert datasets.find_missing_skeletons_file("ntu60") is None
    assert datasets.load_missing_skeletons("ntu120") == {"S018C001P008R001A061"}


def official_missing_list(dataset: str):
    """The official list: `$RSA_NTU_MISSING_DIR/<official name>`, else the data cache; skip if neither."""
    name = datasets.NTU_MISSING_SKELETONS_FILES[dataset]
    folder = os.environ.get("RSA_NTU_MISSING_DIR")
    path = Path(folder) / name if folder else datasets.find_missing_skeletons_file(dataset)
    if path is None or not path.is_file():
        pytest.skip(
            f"{name} not available (not shipped): set RSA_NTU_MISSING_DIR to a folder holding it, "
            "or run `make fetch DATASET=ntu_missing_skeletons`"
        )
    return datasets.read_missing_skeletons(path)


@pytest.mark.parametrize(
    "dataset, removed, sizes",
    [
        (NTU60, 302, {"xsub_train": 40_091, "xsub_val": 16_487, "xview_train": 37_646, "xview_val": 18_932}),
        (NTU120, 535, {"xsub_train": 63_026, "xsub_val": 50_919, "xset_train": 54_468, "xset_val": 59_477}),
    ],
)
def test_published_split_sizes_without_missing_skeletons(dataset, removed, sizes):
    """All generated names minus the official list give the published splits: PYSKL's ntu60 /
    ntu120 pickles (xsub 40,091 / 16,487, xview 37,646 / 18,932; xsub 63,026 / 50,919, xset
    54,468 / 59,477)."""
    ds = dataset(missing_skeletons=official_missing_list(dataset.name))
    assert len(ds.excluded) == removed
    ids = ds.expected_ids()
    assert len(ids) == len(generated_ntu_names(range(1, ds.num_setups + 1))) - removed
    assert split_sizes(ds, ids) == sizes

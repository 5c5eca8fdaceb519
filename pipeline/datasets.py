"""Dataset adapters: a video id (the video's file stem, a record's `frame_dir`) -> its label
and the official splits it belongs to.

Every adapter (`DatasetAdapter`) has `name`, `label_names` (index = label) and `split_names`
(PYSKL names), and answers per video id:

    label(video_id)        -> int, 0-based index into label_names
    splits(video_id)       -> tuple of split names the video belongs to
    canonical_id(video_id) -> the dataset's own spelling of the id: what the index writes as
                              frame_dir and in its splits (NTU: no `_rgb`, as PYSKL's pickles)
    expected_ids()         -> every video id the dataset defines, or None if unknown (without
                              the excluded ones)
    excluded               -> canonical ids left out by definition (NTU's samples with missing
                              skeletons); the index builder names them in its report

An id the adapter cannot label raises `UnknownVideoError` naming the id and the reason; the
index builder reports such videos, it never drops them silently.

Registry (`DATASETS`, built with `get_dataset(name, **kwargs)`):

    ntu60        names SsssCcccPpppRrrrAaaa (S001-S017, A001-A060), label = action - 1;
                 xsub_train/xsub_val (training performers below), xview_train/xview_val
                 (training cameras 2 and 3)
    ntu120       same names (S001-S032, A001-A120); xsub_* (53 training performers) and
                 xset_* (even setup ids train)
    kinetics400  the official CSVs (label,youtube_id,time_start,time_end,split[,is_cc]); ids
                 {youtube_id}_{time_start:06d}_{time_end:06d} as the common download scripts
                 name the clips; splits train/val (as in PYSKL's k400_hrnet.pkl); labels =
                 the class names sorted alphabetically (the usual 400-class label map)
    folder       labels.csv with columns video,label[,split] (label = class name); classes
                 sorted, or in the order of an optional classes.txt (one name per line)

NTU facts come from the dataset's README (github.com/shahroudy/NTURGB-D) and its papers;
see docs/method.md §12. The NTU adapters take `missing_skeletons`, the official lists of
samples with missing or incomplete skeletons (302 in NTU60, 535 in NTU120), which every
published split leaves out (PYSKL's ntu60 xsub 40,091 / 16,487). The lists are not shipped:
`load_missing_skeletons` reads them from a file or the data cache (`make fetch
DATASET=ntu_missing_skeletons`), and refuses to guess when neither is there.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"})


def check_unique_video_ids(videos: Sequence[Path]) -> None:
    """Two videos that would write one record (`a/clip.mp4`, `b/clip.avi`) are an error naming both.

    Raises:
        ValueError: naming both files and the shared id.
    """
    seen: dict[str, Path] = {}
    for v in map(Path, videos):
        if v.stem in seen:
            raise ValueError(
                f"{seen[v.stem]} and {v}: two videos with the id {v.stem!r} would write one record "
                f"{v.stem}.pkl; rename one or process them into different folders"
            )
        seen[v.stem] = v


class DatasetError(ValueError):
    """A dataset description (CSV, class list, option) is invalid; the message names it."""


class UnknownVideoError(DatasetError):
    """The adapter cannot label this video id; the message names the id and the reason."""


@runtime_checkable
class DatasetAdapter(Protocol):
    """Video id -> label and splits. See the module docstring for the contract."""

    name: str
    label_names: list[str]
    split_names: tuple[str, ...]
    excluded: frozenset[str]

    def label(self, video_id: str) -> int: ...

    def splits(self, video_id: str) -> tuple[str, ...]: ...

    def canonical_id(self, video_id: str) -> str: ...

    def expected_ids(self) -> list[str] | None: ...


def video_id(name: str | os.PathLike) -> str:
    """The video id of a file name or path: its name without a video extension."""
    p = Path(str(name).strip())
    return p.stem if p.suffix.lower() in VIDEO_SUFFIXES else p.name


# ------------------------------------------------------------------------------------------
# NTU RGB+D 60 / 120
# ------------------------------------------------------------------------------------------

# Official action names (README of github.com/shahroudy/NTURGB-D), A1 first; label = A - 1.
# The mmaction2/PYSKL label maps differ in two names only: A25 "reach into pocket" and A119
# "support somebody with hand". "hush (quite)" is the official spelling.
NTU120_ACTIONS = (
    "drink water",
    "eat meal/snack",
    "brushing teeth",
    "brushing hair",
    "drop",  # A1
    "pickup",
    "throw",
    "sitting down",
    "standing up (from sitting position)",
    "clapping",  # A6
    "reading",
    "writing",
    "tear up paper",
    "wear jacket",
    "take off jacket",  # A11
    "wear a shoe",
    "take off a shoe",
    "wear on glasses",
    "take off glasses",  # A16
    "put on a hat/cap",
    "take off a hat/cap",
    "cheer up",
    "hand waving",  # A20
    "kicking something",
    "put something inside pocket / take out something from pocket",  # A24
    "hopping (one foot jumping)",
    "jump up",
    "make a phone call/answer phone",  # A26
    "playing with phone/tablet",
    "typing on a keyboard",
    "pointing to something with finger",  # A29
    "taking a selfie",
    "check time (from watch)",
    "rub two hands together",
    "nod head/bow",  # A32
    "shake head",
    "wipe face",
    "salute",
    "put the palms together",  # A36
    "cross hands in front (say stop)",
    "sneeze/cough",
    "staggering",
    "falling",  # A40
    "touch head (headache)",
    "touch chest (stomachache/heart pain)",
    "touch back (backache)",  # A44
    "touch neck (neckache)",
    "nausea or vomiting condition",  # A47
    "use a fan (with hand or paper)/feeling warm",
    "punching/slapping other person",  # A49
    "kicking other person",
    "pushing other person",
    "pat on back of other person",  # A51
    "point finger at the other person",
    "hugging other person",  # A54
    "giving something to other person",
    "touch other person's pocket",
    "handshaking",  # A56
    "walking towards each other",
    "walking apart from each other",  # A59
    "put on headphone",
    "take off headphone",
    "shoot at the basket",
    "bounce ball",  # A61
    "tennis bat swing",
    "juggling table tennis balls",
    "hush (quite)",
    "flick hair",  # A65
    "thumb up",
    "thumb down",
    "make ok sign",
    "make victory sign",
    "staple book",  # A69
    "counting money",
    "cutting nails",
    "cutting paper (using scissors)",
    "snapping fingers",  # A74
    "open bottle",
    "sniff (smell)",
    "squat down",
    "toss a coin",
    "fold paper",  # A78
    "ball up paper",
    "play magic cube",
    "apply cream on face",
    "apply cream on hand back",  # A83
    "put on bag",
    "take off bag",
    "put something into a bag",
    "take something out of a bag",  # A87
    "open a box",
    "move heavy objects",
    "shake fist",
    "throw up cap/hat",  # A91
    "hands up (both hands)",
    "cross arms",
    "arm circles",
    "arm swings",  # A95
    "running on the spot",
    "butt kicks (kick backward)",
    "cross toe touch",
    "side kick",  # A99
    "yawn",
    "stretch oneself",
    "blow nose",
    "hit other person with something",  # A103
    "wield knife towards other person",
    "knock over other person (hit with body)",  # A107
    "grab other person’s stuff",
    "shoot at other person with a gun",
    "step on foot",  # A109
    "high-five",
    "cheers and drink",
    "carry something with other person",  # A112
    "take a photo of other person",
    "follow other person",  # A115
    "whisper in other person’s ear",
    "exchange things with other person",  # A117
    "support somebody with one’s hand (someone is sick, help him to walk)",  # A119
    "finger-guessing game (playing rock-paper-scissors)",  # A120
)
NTU60_TRAIN_SUBJECTS = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_TRAIN_SUBJECTS = NTU60_TRAIN_SUBJECTS | {
    45,
    46,
    47,
    49,
    50,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    70,
    74,
    78,
    80,
    81,
    82,
    83,
    84,
    85,
    86,
    89,
    91,
    92,
    93,
    94,
    95,
    97,
    98,
    100,
    103,
}
NTU60_TRAIN_CAMERAS = frozenset({2, 3})

# Performers recorded in each setup. Every setup is filmed by cameras 1-3 and every performer
# does each of the setup's actions twice (replications 1, 2): setups 1-17 the actions 1-60,
# setups 18-32 the actions 61-120. Read off the sorted list of all NTU120 skeleton files
# (performer column of the SGN / CTR-GCN `data/ntu120/statistics`). Checks: 158 pairs x 360
# = 56,880 NTU60 videos and 318 x 360 = 114,480 NTU120 videos; with the official training
# performers NTU60 gives the published 40,320 / 16,560 cross-subject videos.
NTU_SETUP_PERFORMERS: dict[int, tuple[int, ...]] = {
    1: (1, 2, 3, 4, 5, 6, 7, 8),
    2: (3, 7, 8, 9, 10, 11, 12, 13, 14),
    3: (1, 2, 7, 8, 15, 16, 17, 18, 19),
    4: (3, 7, 8, 20),
    5: (4, 10, 13, 15, 16, 17, 18, 21),
    6: (1, 7, 8, 15, 16, 17, 19, 22, 23, 24),
    7: (1, 7, 8, 15, 16, 17, 18, 19, 25, 26, 27, 28),
    8: (1, 7, 8, 15, 19, 25, 29, 30, 31, 32, 33, 34, 35, 36),
    9: (7, 8, 15, 16, 17, 19, 25),
    10: (7, 8, 13, 15, 16, 17, 18, 19, 21, 25),
    11: (1, 2, 7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 38),
    12: (7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 37),
    13: (7, 8, 15, 16, 17, 18, 19, 25, 27, 28, 37),
    14: (7, 8, 15, 17, 19, 25, 27, 37, 39),
    15: (7, 8, 15, 16, 17, 19, 25, 37),
    16: (7, 8, 19, 21, 25, 39, 40),
    17: (3, 7, 8, 9, 15, 16, 17, 20),
    18: (8, 41, 42, 43, 44, 45),
    19: (8, 41, 42, 46, 47, 48, 49, 50, 51),
    20: (8, 41, 43, 44, 52, 53, 54),
    21: (55, 56, 57, 58, 59, 60),
    22: (61, 62, 63, 64, 65, 66, 67),
    23: (55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68),
    24: (57, 60, 61, 62, 63, 64, 67),
    25: (55, 56, 58, 59, 65, 66, 68),
    26: (8, 41, 44, 49, 50, 51, 69, 70, 71, 72, 74, 75, 76, 77),
    27: (6, 8, 11, 41, 43, 44, 78, 79, 80, 81, 82, 83, 84, 85, 86),
    28: (8, 41, 42, 43, 46, 48, 70, 73, 87),
    29: (6, 8, 41, 43, 44, 48, 49, 51, 67, 74, 75, 80, 88, 89, 90),
    30: (8, 11, 41, 43, 44, 48, 67, 75, 76, 81, 85, 88, 91, 92, 93, 94, 95, 96),
    31: (6, 8, 41, 42, 43, 44, 51, 67, 82, 85, 96, 97, 98, 99, 100, 101),
    32: (8, 41, 43, 44, 67, 102, 103, 104, 105, 106),
}
NTU_RGB_SUFFIX = "_rgb"  # the RGB videos are distributed as <name>_rgb.avi
# NTU mutual (two-person) actions, 1-based action numbers: A050-A060 (NTU60) and A106-A120 (NTU120).
NTU_TWO_PERSON_ACTIONS = frozenset([*range(50, 61), *range(106, 121)])
_NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


@dataclass(frozen=True)
class NTUName:
    """The fields of an NTU file name SsssCcccPpppRrrrAaaa (all 1-based)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int

    def __str__(self) -> str:
        return f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}R{self.replication:03d}A{self.action:03d}"


def parse_ntu_name(video_id: str) -> NTUName:
    """Parse `SsssCcccPpppRrrrAaaa` (optionally followed by `_rgb`).

    Raises:
        UnknownVideoError: the id does not have that form.
    """
    m = _NTU_NAME.fullmatch(video_id.removesuffix(NTU_RGB_SUFFIX))
    if m is None:
        raise UnknownVideoError(f"{video_id!r}: not an NTU name SsssCcccPpppRrrrAaaa (e.g. S001C002P003R002A013)")
    return NTUName(*(int(g) for g in m.groups()))


def ntu_video_ids(setups: Sequence[int]) -> list[str]:
    """Every NTU video name of the given setups (cameras 1-3, replications 1-2), sorted."""
    ids = []
    for s in setups:
        actions = range(1, 61) if s <= 17 else range(61, 121)
        ids += [
            str(NTUName(s, c, p, r, a))
            for c in (1, 2, 3)
            for p in NTU_SETUP_PERFORMERS[s]
            for r in (1, 2)
            for a in actions
        ]
    return sorted(ids)


class _NTUDataset:
    """Shared NTU logic; subclasses set the ranges and `_split_pairs`.

    Args:
        missing_skeletons: sample names to exclude (`load_missing_skeletons`); names of the
            other NTU dataset (e.g. S018+ given to ntu60) are ignored, so the NTU120 list
            also serves NTU60.
    """

    name: str
    num_setups: int
    num_performers: int
    num_actions: int
    split_names: tuple[str, ...]

    def __init__(self, *, missing_skeletons: Iterable[str] = ()):
        excluded = set()
        for vid in missing_skeletons:
            parse_ntu_name(vid)  # not an NTU name at all: UnknownVideoError
            try:
                excluded.add(str(self.parse(vid)))
            except UnknownVideoError:
                continue  # a sample of the other NTU dataset
        self.excluded = frozenset(excluded)

    @property
    def label_names(self) -> list[str]:
        return list(NTU120_ACTIONS[: self.num_actions])

    def parse(self, video_id: str) -> NTUName:
        """Parse and range-check a name for this dataset (UnknownVideoError otherwise)."""
        n = parse_ntu_name(video_id)
        limits = {
            "setup": self.num_setups,
            "camera": 3,
            "performer": self.num_performers,
            "replication": 2,
            "action": self.num_actions,
        }
        for field, hi in limits.items():
            v = getattr(n, field)
            if not 1 <= v <= hi:
                raise UnknownVideoError(f"{video_id!r}: {field} {v} outside 1-{hi} of {self.name}")
        return n

    def label(self, video_id: str) -> int:
        return self.parse(video_id).action - 1

    def splits(self, video_id: str) -> tuple[str, ...]:
        return self._split_pairs(self.parse(video_id))

    def _split_pairs(self, n: NTUName) -> tuple[str, ...]:
        raise NotImplementedError

    def canonical_id(self, video_id: str) -> str:
        return video_id.removesuffix(NTU_RGB_SUFFIX)

    def expected_ids(self) -> list[str]:
        return [v for v in ntu_video_ids(range(1, self.num_setups + 1)) if v not in self.excluded]


class NTU60(_NTUDataset):
    """NTU RGB+D 60: cross-subject and cross-view splits."""

    name = "ntu60"
    num_setups, num_performers, num_actions = 17, 40, 60
    split_names = ("xsub_train", "xsub_val", "xview_train", "xview_val")

    def _split_pairs(self, n: NTUName) -> tuple[str, ...]:
        xsub = "xsub_train" if n.performer in NTU60_TRAIN_SUBJECTS else "xsub_val"
        xview = "xview_train" if n.camera in NTU60_TRAIN_CAMERAS else "xview_val"
        return (xsub, xview)


class NTU120(_NTUDataset):
    """NTU RGB+D 120: cross-subject and cross-setup splits."""

    name = "ntu120"
    num_setups, num_performers, num_actions = 32, 106, 120
    split_names = ("xsub_train", "xsub_val", "xset_train", "xset_val")

    def _split_pairs(self, n: NTUName) -> tuple[str, ...]:
        xsub = "xsub_train" if n.performer in NTU120_TRAIN_SUBJECTS else "xsub_val"
        xset = "xset_train" if n.setup % 2 == 0 else "xset_val"
        return (xsub, xset)


# ------------------------------------------------------------------------------------------
# NTU samples with missing skeletons
# ------------------------------------------------------------------------------------------

# The official file names (github.com/shahroudy/NTURGB-D, Matlab/); not shipped here.
NTU_MISSING_SKELETONS_FILES = {
    "ntu60": "NTU_RGBD_samples_with_missing_skeletons.txt",
    "ntu120": "NTU_RGBD120_samples_with_missing_skeletons.txt",
}
FETCH_MISSING_SKELETONS = "make fetch DATASET=ntu_missing_skeletons"
_HEADER_COUNT = re.compile(r"(\d[\d,]*)\s")


def read_missing_skeletons(path: str | os.PathLike) -> list[str]:
    """The sample names of a missing-skeleton list, in file order.

    The official files open with two lines of prose ("302 of the captured samples ...") and a
    blank line, then one name per line. Lines before the first name are that header; blank
    lines and `#` comments are skipped; a name may end in `.skeleton`, a video extension or
    `_rgb`. Where the header opens with a count, the names must match it.

    Raises:
        DatasetError: no such file, no names, a line among the names that is not one, or a
            count other than the header's.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file (a list of NTU samples with missing skeletons)")
    names: list[str] = []
    header: list[str] = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name = video_id(text).removesuffix(".skeleton").removesuffix(NTU_RGB_SUFFIX)
        if _NTU_NAME.fullmatch(name):
            names.append(name)
        elif names:
            raise DatasetError(f"{p}:{n}: not an NTU sample name SsssCcccPpppRrrrAaaa: {text[:80]!r}")
        else:
            header.append(text)
    if not names:
        raise DatasetError(f"{p}: no NTU sample names (SsssCcccPpppRrrrAaaa, one per line)")
    announced = _HEADER_COUNT.match(header[0]) if header else None
    if announced and int(announced.group(1).replace(",", "")) != len(set(names)):
        raise DatasetError(f"{p}: the header announces {announced.group(1)} samples, the file lists {len(set(names))}")
    return names


def _data_dir() -> Path:
    return Path(os.environ.get("RSA_DATA_DIR") or Path.home() / ".cache/robust-skeleton-action/data")


def find_missing_skeletons_file(dataset: str) -> Path | None:
    """The official missing-skeleton list of `dataset` (ntu60, ntu120) in the data cache, or None.

    Asks `pipeline.fetch.missing_skeletons_file` (which also checks the file's published
    digest); without that module, looks for the official file name in `$RSA_DATA_DIR`
    (default ~/.cache/robust-skeleton-action/data), where `make fetch` puts it.

    Raises:
        DatasetError: the cached file differs from the published one.
    """
    try:
        from pipeline.fetch import FetchError, missing_skeletons_file  # the fetch stage's own lookup
    except ImportError:
        path = _data_dir() / NTU_MISSING_SKELETONS_FILES[dataset]
        return path if path.is_file() else None
    try:
        return missing_skeletons_file(dataset)
    except FetchError as exc:
        raise DatasetError(" ".join(str(exc).split())) from None


def load_missing_skeletons(
    dataset: str, *, path: str | os.PathLike | None = None, keep: bool = False
) -> frozenset[str]:
    """The samples an NTU index leaves out: from `path`, else the data cache; none with `keep`.

    Raises:
        DatasetError: `dataset` is not NTU, both `path` and `keep`, or no list anywhere (the
            message names the three ways out).
    """
    if dataset not in NTU_MISSING_SKELETONS_FILES:
        raise DatasetError(f"{dataset}: no missing-skeleton list (only {', '.join(NTU_MISSING_SKELETONS_FILES)})")
    if keep:
        if path is not None:
            raise DatasetError("--missing-skeletons and --keep-missing-skeletons exclude each other")
        return frozenset()
    if path is None:
        path = find_missing_skeletons_file(dataset)
    if path is None:
        raise DatasetError(
            f"{dataset}: the official list of samples with missing skeletons "
            f"({NTU_MISSING_SKELETONS_FILES[dataset]}) is not in the data cache ({_data_dir()}); run "
            f"`{FETCH_MISSING_SKELETONS}`, pass --missing-skeletons FILE, or --keep-missing-skeletons "
            "to index those samples too"
        )
    names = read_missing_skeletons(path)
    log.info("%s: %d samples with missing skeletons listed in %s", dataset, len(set(names)), path)
    return frozenset(names)


# ------------------------------------------------------------------------------------------
# CSV-described datasets: Kinetics-400 and a generic folder
# ------------------------------------------------------------------------------------------


def _read_csv(path: str | os.PathLike, required: Sequence[str]) -> list[tuple[int, dict]]:
    """Rows of a CSV with a header as (line number, row); checks the required columns."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: no such file")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DatasetError(f"{p}: missing column(s) {missing}; header has {columns}")
        rows = [(i + 2, {(k or "").strip(): (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader)]
    return rows


class _TableDataset:
    """An adapter backed by an explicit table video id -> (label name, split)."""

    name: str
    label_names: list[str]
    split_names: tuple[str, ...]
    excluded: frozenset[str] = frozenset()
    _table: dict[str, tuple[str | None, str | None]]

    def _build(self, table: dict[str, tuple[str | None, str | None]], classes: list[str]):
        self._table = table
        self.label_names = classes
        self._index = {c: i for i, c in enumerate(classes)}
        self.split_names = tuple(dict.fromkeys(s for _, s in table.values() if s))

    def label(self, video_id: str) -> int:
        if video_id not in self._table:
            raise UnknownVideoError(f"{video_id!r}: not in the {self.name} annotations")
        name = self._table[video_id][0]
        if not name:
            raise UnknownVideoError(f"{video_id!r}: has no label in the {self.name} annotations")
        return self._index[name]

    def splits(self, video_id: str) -> tuple[str, ...]:
        if video_id not in self._table:
            raise UnknownVideoError(f"{video_id!r}: not in the {self.name} annotations")
        split = self._table[video_id][1]
        return (split,) if split else ()

    def canonical_id(self, video_id: str) -> str:
        return video_id

    def expected_ids(self) -> list[str]:
        return sorted(self._table)


def kinetics_clip_id(youtube_id: str, time_start: float, time_end: float) -> str:
    """`{youtube_id}_{time_start:06d}_{time_end:06d}`, the clip file stem of the common
    Kinetics download scripts (ActivityNet crawler, mmaction2 `download.py`: '%06d')."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}"


# CSV `split` value -> PYSKL split name (k400_hrnet.pkl has `train` and `val`).
KINETICS_SPLITS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
}


class Kinetics400(_TableDataset):
    """Kinetics-400 from its official annotation CSVs (no network).

    Args:
        csv_paths: the CSVs to read (e.g. train.csv and validate.csv); columns label,
            youtube_id, time_start, time_end, split (is_cc and others are ignored).
    """

    name = "kinetics400"

    def __init__(self, *, csv_paths: Sequence[str | os.PathLike]):
        if not csv_paths:
            raise DatasetError("kinetics400 needs at least one annotation CSV (--kinetics-csv)")
        table: dict[str, tuple[str | None, str | None]] = {}
        for path in csv_paths:
            for line, row in _read_csv(path, ("youtube_id", "time_start", "time_end", "split")):
                where = f"{path}:{line}"
                try:
                    vid = kinetics_clip_id(row["youtube_id"], float(row["time_start"]), float(row["time_end"]))
                except ValueError:
                    raise DatasetError(
                        f"{where}: time_start/time_end must be numbers, got {row['time_start']!r}, {row['time_end']!r}"
                    ) from None
                if row["split"] not in KINETICS_SPLITS:
                    raise DatasetError(f"{where}: split {row['split']!r} is not one of {sorted(KINETICS_SPLITS)}")
                entry = (row.get("label") or None, KINETICS_SPLITS[row["split"]])
                if table.get(vid, entry) != entry:
                    raise DatasetError(
                        f"{where}: clip {vid} listed twice with different label/split {table[vid]} vs {entry}"
                    )
                table[vid] = entry
        classes = sorted({label for label, _ in table.values() if label})
        if len(classes) != 400:
            log.warning(
                "kinetics400: the CSVs name %d classes, not 400; labels index the %d sorted names found",
                len(classes),
                len(classes),
            )
        self._build(table, classes)


class FolderDataset(_TableDataset):
    """A generic labelled folder: labels.csv (video,label[,split]) + optional classes.txt.

    Args:
        labels_csv: CSV with columns `video` (file name or stem) and `label` (class name),
            optionally `split` (split name, e.g. train / val).
        classes_txt: class names in label order, one per line. Defaults to `classes.txt`
            beside labels.csv if that exists, else the sorted unique labels.
    """

    name = "folder"

    def __init__(self, *, labels_csv: str | os.PathLike, classes_txt: str | os.PathLike | None = None):
        rows = _read_csv(labels_csv, ("video", "label"))
        table: dict[str, tuple[str | None, str | None]] = {}
        for line, row in rows:
            vid = video_id(row["video"])
            if not vid or not row["label"]:
                raise DatasetError(f"{labels_csv}:{line}: empty video or label")
            if vid in table:
                raise DatasetError(f"{labels_csv}:{line}: video {vid!r} listed twice")
            table[vid] = (row["label"], row.get("split") or None)
        sibling = Path(labels_csv).parent / "classes.txt"
        if classes_txt is None and sibling.is_file():
            classes_txt = sibling
            log.info("folder: class order from %s", sibling)
        used = {label for label, _ in table.values()}
        classes = sorted(used) if classes_txt is None else self._read_classes(classes_txt)
        unknown = sorted(used - set(classes))
        if unknown:
            raise DatasetError(f"{classes_txt}: does not list the class(es) {unknown} used in {labels_csv}")
        self._build(table, classes)

    @staticmethod
    def _read_classes(path: str | os.PathLike) -> list[str]:
        p = Path(path)
        if not p.is_file():
            raise DatasetError(f"{p}: no such file")
        names = [s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DatasetError(f"{p}: class(es) listed twice: {dupes}")
        return names


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------

DATASETS: dict[str, type] = {
    "ntu60": NTU60,
    "ntu120": NTU120,
    "kinetics400": Kinetics400,
    "folder": FolderDataset,
}


def get_dataset(name: str, **kwargs) -> DatasetAdapter:
    """Build the adapter registered as `name` with its keyword arguments.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        DatasetError: the adapter's inputs are invalid.
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    adapter = DATASETS[name](**kwargs)
    assert isinstance(adapter, DatasetAdapter), f"{name} does not implement DatasetAdapter"
    return adapter

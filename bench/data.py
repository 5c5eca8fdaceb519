"""Dataset-file benchmark: a store (pipeline/store.py) against the PYSKL pickle, at the published datasets' sizes.

For each synthetic dataset in the published layout (float16 keypoints and scores; NTU-like clips of 30-300 frames,
mean ~72, 1-2 persons; Kinetics-like clips of ~275 frames and 1-5 persons) it writes the pickle and packs it
(`python -m pipeline pack`), then measures, each in a fresh process (peak RSS = VmHWM of /proc/self/status):

    open        the store (`open_dataset` + split, labels, names) vs `pickle.load` vs `schema.read_index`; and
                the store + `make_dataset` of its train split (training's data setup)
    epoch       reading every clip once in random order (float32 conversion, as training does), page cache of the
                store's files dropped first (posix_fadvise), then again warm; the pickle's first epoch is its
                `read_index` plus the same pass over the in-memory clips
    preprocess  clips/s of one process through `SkeletonDataset` (train path, 243 frames: person selection and
                `preprocess_clip`), over the store and over in-memory records, and through a 2-worker DataLoader

Sizes: ntu60 (56,578 clips), ntu120 (113,945), k400-10 (24,000, a tenth of Kinetics-400) and k400 (240,000).
A size whose files do not fit on the disk is skipped with the reason; a pickle that would not fit in memory
(pickle.load holds it whole) is not written, and the store is then packed straight from the generator.

    python bench/data.py                         # all sizes (tens of minutes, ~20 GB of disk for k400)
    python bench/data.py --sizes ntu60,ntu120 --workdir /data/bench --keep
    python bench/data.py --quick                 # tiny sizes, a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store import Dataset

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


@dataclass(frozen=True)
class Size:
    """A synthetic dataset: `n` clips, NTU-like (`kind` "ntu", A classes) or Kinetics-like ("k400")."""

    name: str
    n: int
    kind: str
    classes: int


SIZES = {
    s.name: s
    for s in (
        Size("ntu60", 56_578, "ntu", 60),
        Size("ntu120", 113_945, "ntu", 120),
        Size("k400-10", 24_000, "k400", 400),
        Size("k400", 240_000, "k400", 400),
        Size("tiny-ntu", 300, "ntu", 60),  # --quick
        Size("tiny-k400", 60, "k400", 400),
    )
}
QUICK = ("tiny-ntu", "tiny-k400")


class Synthetic(Dataset):
    """Clip i generated on access from (size, i): a dataset of any size in constant memory (for `pack`).

    Arrays are slices of a shared random pool (copied, float16): the content is random, the layout and the sizes
    are the published ones. `pack` reads `len`, `clip`, `split`, `label_names`, `top`.
    """

    def __init__(self, size: Size, *, seed: int = 0):
        self.size, self.source, self.seed = size, f"<synthetic {size.name}>", seed
        rng = np.random.default_rng(seed)
        self.pool_xy = (rng.random(1 << 22) * 1000).astype(np.float16)  # 4M values: 8 MiB
        self.pool_score = rng.random(1 << 22).astype(np.float16)
        self._split = None

    def __len__(self) -> int:
        return self.size.n

    def shape(self, i: int) -> tuple[int, int]:
        """(M, T) of clip i."""
        rng = np.random.default_rng([self.seed, i])
        if self.size.kind == "ntu":  # lognormal around 62 frames, clipped to 30-300: mean ~72
            t = int(np.clip(rng.lognormal(np.log(62.0), 0.5), 30, 300))
            return (2 if rng.random() < 0.9 else 1), t
        return int(rng.choice(5, p=[0.3, 0.3, 0.2, 0.1, 0.1])) + 1, int(rng.integers(250, 301))

    def frame_dir(self, i: int) -> str:
        if self.size.kind == "k400":
            return f"yt{i:09d}"
        a, rest = i % self.size.classes + 1, i // self.size.classes
        r, rest = rest % 2 + 1, rest // 2
        c, rest = rest % 3 + 1, rest // 3
        p, s = rest % 106 + 1, rest // 106 + 1
        return f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}"

    @property
    def frame_dirs(self) -> list[str]:
        return [self.frame_dir(i) for i in range(len(self))]

    @property
    def split(self) -> dict[str, list[str]]:
        if self._split is None:
            names = self.frame_dirs
            if self.size.kind == "k400":
                cut = int(0.92 * len(names))
                self._split = {"train": names[:cut], "val": names[cut:]}
            else:
                p = [int(n[9:12]) for n in names]
                c = [int(n[5:8]) for n in names]
                self._split = {
                    "xsub_train": [n for n, pi in zip(names, p) if pi % 2],
                    "xsub_val": [n for n, pi in zip(names, p) if not pi % 2],
                    "xview_train": [n for n, ci in zip(names, c) if ci != 1],
                    "xview_val": [n for n, ci in zip(names, c) if ci == 1],
                }
        return self._split

    @property
    def label_names(self) -> list[str] | None:
        return None  # as PYSKL's published pickles

    @property
    def top(self) -> dict:
        return {}

    def clip(self, i: int) -> dict:
        m, t = self.shape(i)
        start = (i * 7919) % (len(self.pool_xy) - m * t * 17 * 2)
        kp = self.pool_xy[start : start + m * t * 17 * 2].reshape(m, t, 17, 2).copy()
        score = self.pool_score[start : start + m * t * 17].reshape(m, t, 17).copy()
        h, w = (1080, 1920) if self.size.kind == "ntu" else (360, 640)
        return {
            "frame_dir": self.frame_dir(i),
            "label": i % self.size.classes,
            "img_shape": (h, w),
            "original_shape": (h, w),
            "total_frames": t,
            "keypoint": kp,
            "keypoint_score": score,
        }

    def data_bytes(self, sample: int = 2000) -> int:
        """Estimated bytes of keypoint + keypoint_score (float16) over all clips."""
        idx = np.linspace(0, len(self) - 1, min(sample, len(self))).astype(int)
        mean = np.mean([np.prod(self.shape(int(i))) for i in idx])
        return int(mean * len(self) * 17 * 3 * 2)


# ------------------------------------------------------------------------------------------
# Children: each measurement runs in a fresh process and prints one JSON line
# ------------------------------------------------------------------------------------------


def _status(key: str) -> int:
    """A /proc/self/status value in KiB (VmHWM: peak RSS; RssAnon: anonymous memory now)."""
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith(key + ":")).split()[1])


def _touch(kp: np.ndarray, score: np.ndarray) -> float:
    return float(np.asarray(kp, np.float32).sum() + np.asarray(score, np.float32).sum())


def child(name: str, args: dict) -> dict:
    base = _status("VmHWM")
    t0 = time.perf_counter()
    out: dict = {}
    if name == "write-pickle":
        syn = Synthetic(SIZES[args["size"]])
        index = {"split": syn.split, "annotations": [syn.clip(i) for i in range(len(syn))]}
        with open(args["path"], "wb") as fh:
            pickle.dump(index, fh, protocol=2)  # mmcv's default, so PYSKL's published files are protocol 2
    elif name == "pack-cli":  # what `python -m pipeline pack PKL STORE` runs
        from pipeline.__main__ import main

        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            assert main(["pack", args["path"], args["out"]]) == 0
    elif name == "pack-stream":
        from pipeline.store import pack

        pack(Synthetic(SIZES[args["size"]]), args["out"], source=f"synthetic {args['size']}")
    elif name == "open-store":
        from pipeline.store import open_dataset

        ds = open_dataset(args["path"])
        _ = ds.split, ds.labels, ds.frame_dirs, ds.position(ds.frame_dirs[-1])
    elif name == "setup":  # what `recognition train` does before its first step, data side
        from pipeline.store import open_dataset
        from recognition.config import TrainConfig
        from recognition.data import make_dataset

        base, t0 = _status("VmHWM"), time.perf_counter()  # torch imported: measure from here
        ds = open_dataset(args["path"])
        train = next(k for k in ds.split if k.endswith("train"))
        out["clips"] = len(make_dataset(TrainConfig(), ds, train, train=True, num_classes=int(ds.labels.max()) + 1))
    elif name == "pickle-load":
        with open(args["path"], "rb") as fh:
            pickle.load(fh)
    elif name == "read-index":
        from pipeline.schema import read_index

        index = read_index(args["path"])
        out["load_s"] = time.perf_counter() - t0
        anns = index["annotations"]
        t1 = time.perf_counter()
        for i in np.random.default_rng(0).permutation(len(anns)):
            _touch(anns[i]["keypoint"], anns[i]["keypoint_score"])
        out["touch_s"] = time.perf_counter() - t1
    elif name == "epoch":
        out.update(_epoch(args["path"]))
    elif name == "preprocess":
        out.update(_preprocess(args))
    else:
        raise SystemExit(f"unknown child {name!r}")
    out.update(seconds=time.perf_counter() - t0, peak_mib=_status("VmHWM") / 1024, base_mib=base / 1024)
    return out


def _epoch(path: str) -> dict:
    """Every clip once in random order, cold (page cache of the .bin files dropped) then warm."""
    from pipeline.store import open_dataset

    store = Path(path)
    for f in store.glob("*.bin"):
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    ds = open_dataset(store)
    order = np.random.default_rng(0).permutation(len(ds))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        for i in order:
            _touch(*ds.pose(int(i)))
        times.append(time.perf_counter() - t0)
    return {"cold_s": times[0], "warm_s": times[1], "anon_mib": _status("RssAnon") / 1024}


def _preprocess(args: dict) -> dict:
    """Clips/s through SkeletonDataset (train path, clip_len 243): store, in-memory records, 2-worker DataLoader."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from pipeline.store import IndexDataset, open_dataset
    from recognition.data import SkeletonDataset
    from recognition.preprocess import PreprocessOptions

    torch.set_num_threads(1)
    budget = args["budget_s"]
    store = open_dataset(args["path"])
    rng = np.random.default_rng(1)

    def dataset(source) -> SkeletonDataset:  # noqa: ANN001
        return SkeletonDataset(
            annotations=source,
            frame_dirs=source.frame_dirs,
            train=True,
            opts=PreprocessOptions(clip_len=243),
            seed=0,
            num_classes=int(source.labels.max()) + 1,
        )

    def rate(ds: SkeletonDataset, seconds: float) -> float:
        order, done, t0 = rng.permutation(len(ds)), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ds[int(order[done % len(ds)])]
            done += 1
        return done / (time.perf_counter() - t0)

    ds = dataset(store)
    picked = rng.choice(len(store), size=min(len(store), 2000), replace=False)
    copied = [
        {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in store.clip(int(i)).items()} for i in picked
    ]
    memory = dataset(IndexDataset({"split": {}, "annotations": copied}))  # arrays in memory, as from a pickle
    rates: dict[str, list[float]] = {"store_per_worker": [], "memory_per_worker": []}
    for _ in range(3):  # interleaved, best of 3: on a loaded machine either one may be slowed for a while
        rates["store_per_worker"].append(rate(ds, budget / 3))
        rates["memory_per_worker"].append(rate(memory, budget / 3))
    out = {k: max(v) for k, v in rates.items()}
    n = max(64, int(out["store_per_worker"] * budget * 2))  # about `budget` seconds with two workers
    sampler = RandomSampler(ds, num_samples=n, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=32, sampler=sampler, num_workers=2)
    t0 = time.perf_counter()
    seen = sum(len(y) for _, y in loader)
    out["loader_2w"] = seen / (time.perf_counter() - t0)
    return out


def run_child(name: str, **args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"child {name} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        return int(next(line for line in fh if line.startswith("MemAvailable:")).split()[1]) * 1024


def bench_size(size: Size, workdir: Path, *, budget_s: float, keep: bool) -> dict:
    syn = Synthetic(size)
    est = syn.data_bytes()
    free = shutil.disk_usage(workdir).free
    with_pickle = 2.5 * est < _mem_available()  # pickle.load holds the file's content; read_index the bytes too
    need = est * (2 if with_pickle else 1) * 1.1 + (2 << 30)
    row: dict = {"size": size.name, "clips": size.n, "est_mib": est / MIB}
    if need > free:
        row["skipped"] = f"needs ~{need / (1 << 30):.1f} GiB of disk, {free / (1 << 30):.1f} GiB free in {workdir}"
        return row
    folder = workdir / size.name
    folder.mkdir(parents=True, exist_ok=True)
    pkl, store = folder / f"{size.name}.pkl", folder / f"{size.name}.store"
    try:
        if with_pickle:
            print(f"[{size.name}] writing the pickle (~{est / MIB:.0f} MiB)", file=sys.stderr, flush=True)
            run_child("write-pickle", size=size.name, path=str(pkl))
            row["pickle_mib"] = pkl.stat().st_size / MIB
            print(f"[{size.name}] python -m pipeline pack", file=sys.stderr, flush=True)
            row["pack"] = run_child("pack-cli", path=str(pkl), out=str(store))
        else:
            row["no_pickle"] = (
                f"pickle.load would need ~{2.5 * est / (1 << 30):.0f} GiB of memory, "
                f"{_mem_available() / (1 << 30):.0f} GiB available: store packed from the generator"
            )
            print(f"[{size.name}] packing from the generator (~{est / MIB:.0f} MiB)", file=sys.stderr, flush=True)
            row["pack"] = run_child("pack-stream", size=size.name, out=str(store))
        row["store_mib"] = sum(f.stat().st_size for f in store.iterdir()) / MIB
        row["meta_kib"] = (store / "meta.pkl").stat().st_size / 1024
        print(f"[{size.name}] open, epoch, preprocess", file=sys.stderr, flush=True)
        row["open_store"] = min(
            (run_child("open-store", path=str(store)) for _ in range(3)), key=lambda r: r["seconds"]
        )
        row["setup"] = run_child("setup", path=str(store))
        if with_pickle:
            row["pickle_load"] = run_child("pickle-load", path=str(pkl))
            row["read_index"] = run_child("read-index", path=str(pkl))
        row["epoch"] = run_child("epoch", path=str(store))
        row["preprocess"] = run_child("preprocess", path=str(store), budget_s=budget_s)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return row


COLUMNS = (
    "size",
    "clips",
    "pickle MiB",
    "store MiB (meta KiB)",
    "pack s / peak MiB",
    "open store s / peak MiB",
    "store + make_dataset(train split) s / peak MiB above torch",
    "pickle.load s / peak MiB",
    "read_index s / peak MiB",
    "epoch store cold / warm s",
    "epoch pickle s",
    "preprocess clips/s per worker: store / in-memory",
    "2-worker DataLoader clips/s",
)


def _cells(r: dict) -> list[str]:
    sp = lambda m: f"{m['seconds']:.2f} / {m['peak_mib']:.0f}" if m else "-"
    ri, ep, pre = r.get("read_index"), r["epoch"], r["preprocess"]
    return [
        r["size"],
        str(r["clips"]),
        f"{r['pickle_mib']:.0f}" if "pickle_mib" in r else "-",
        f"{r['store_mib']:.0f} ({r['meta_kib']:.0f})",
        sp(r["pack"]),
        sp(r["open_store"]),
        f"{r['setup']['seconds']:.2f} / {r['setup']['peak_mib'] - r['setup']['base_mib']:.0f}",
        sp(r.get("pickle_load")),
        sp(ri),
        f"{ep['cold_s']:.1f} / {ep['warm_s']:.1f}",
        f"{ri['load_s'] + ri['touch_s']:.1f}" if ri else "-",
        f"{pre['store_per_worker']:.0f} / {pre['memory_per_worker']:.0f}",
        f"{pre['loader_2w']:.0f}",
    ]


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["size"], str(r["clips"]), f"skipped: {r['skipped']}"] if "skipped" in r else _cells(r)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{r['size']}: {r['no_pickle']}" for r in rows if "no_pickle" in r]
    base = [r["open_store"]["base_mib"] for r in rows if "open_store" in r]
    if base:
        notes.append(
            f"peak MiB: the process's VmHWM; python + numpy + pipeline imported, nothing read: {min(base):.0f} MiB"
        )
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="ntu60,ntu120,k400-10,k400", help=f"comma-separated, of {sorted(SIZES)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and short timings: a smoke run")
    parser.add_argument("--workdir", default=None, help="where the data is written (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files (with --workdir)")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per preprocessing measurement")
    parser.add_argument("--json", default=None, help="also write the measurements as JSON")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return 0
    names = QUICK if args.quick else tuple(args.sizes.split(","))
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; valid: {sorted(SIZES)}")
    budget = 0.25 if args.quick else args.budget
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="bench-data-")
    workdir = Path(args.workdir or tmp)
    rows = []
    try:
        for name in names:
            rows.append(bench_size(SIZES[name], workdir, budget_s=budget, keep=args.keep and tmp is None))
            print(f"[{name}] done", file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

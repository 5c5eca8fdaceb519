"""Soak test of stage 1's output folder: kills, restarts and a second process, on 1,000 tiny videos.

Writes N tiny videos (a share of them corrupt: random bytes), then runs `python -m pose_extraction
extract` (the stand-in estimator, slowed per video so runs last long enough to be killed) in P
slots at once, all pointed at one output folder. Each slot SIGKILLs its process at random
intervals (uniform in [--kill-min, --kill-max] s) and starts it again, until the process exits on
its own. Then it checks what the cache guarantees (pose_extraction/cache.py):

- every good video has exactly one valid record, of its own frame count; no corrupt one has any;
- no temporary file of an atomic write and no claim file is left;
- `failures.jsonl` lists exactly the corrupt videos;
- no video whose record was written was extracted again (from the processes' logs, every line
  time-stamped as it arrives: an "extracting" line for a video after its "persons kept" line);
- every process that ended on its own exited 0.

    python bench/soak.py                              # 1,000 videos, 5 % corrupt, 2 slots
    python bench/soak.py --videos 200 --kill-max 4    # shorter
    python bench/soak.py --videos 200 --workers 2     # the pipelined engine (workers die with their process)
Prints the figures and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
START = re.compile(r"pose_extraction\.extract: (\S+): extracting$")
WROTE = re.compile(r"pose_extraction\.extract: (\S+): \d+ frames, \d+ persons kept")


def write_videos(folder: Path, n: int, corrupt: float, rng: random.Random) -> tuple[dict[str, int], set[str]]:
    """Tiny videos (32x24, 3-8 frames); returns {good name: frames} and the corrupt names."""
    import cv2

    folder.mkdir(parents=True)
    good, bad = {}, set()
    bad_ids = set(rng.sample(range(n), round(n * corrupt)))
    for i in range(n):
        name = f"v{i:04d}.mp4"
        if i in bad_ids:
            (folder / name).write_bytes(rng.randbytes(rng.randint(200, 4000)))
            bad.add(name)
            continue
        frames = rng.randint(3, 8)
        vw = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (32, 24))
        for t in range(frames):
            img = np.full((24, 32, 3), 60 + 10 * t, np.uint8)
            vw.write(img)
        vw.release()
        good[name] = frames
    return good, bad


class Slot(threading.Thread):
    """Runs the extract command, killing and restarting it until it exits on its own."""

    def __init__(
        self,
        index: int,
        cmd: list[str],
        env: dict,
        kill: tuple[float, float],
        seed: int,
        events: list,
        lock: threading.Lock,
    ):
        super().__init__(daemon=True)
        self.index, self.cmd, self.env, self.kill = index, cmd, env, kill
        self.rng = random.Random(seed)
        self.events, self.lock = events, lock
        self.kills = self.starts = 0
        self.exit_code: int | None = None

    def _read(self, proc: subprocess.Popen, pid_tag: str) -> None:
        for line in proc.stderr:
            with self.lock:
                self.events.append((time.monotonic(), pid_tag, line.rstrip("\n")))

    def run(self) -> None:
        while True:
            self.starts += 1
            proc = subprocess.Popen(self.cmd, cwd=REPO, env=self.env, stderr=subprocess.PIPE, text=True)
            reader = threading.Thread(target=self._read, args=(proc, f"{self.index}:{proc.pid}"), daemon=True)
            reader.start()
            try:
                rc = proc.wait(timeout=self.rng.uniform(*self.kill))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                reader.join()
                self.kills += 1
                continue
            reader.join()
            self.exit_code = rc
            return


def check(out: Path, good: dict[str, int], bad: set[str], events: list, slots: list[Slot]) -> list[str]:
    """The guarantees; returns the failures (empty: all hold)."""
    from pipeline.schema import read_record

    problems = []
    records = {p.stem for p in out.glob("*.pkl")}
    missing = sorted(set(Path(n).stem for n in good) - records)
    extra = sorted(records - set(Path(n).stem for n in good))
    if missing or extra:
        problems.append(
            f"records: {len(missing)} good videos without one ({missing[:3]}), {len(extra)} extra ({extra[:3]})"
        )
    for name, frames in good.items():
        p = out / f"{Path(name).stem}.pkl"
        if p.exists() and read_record(p)["total_frames"] != frames:
            problems.append(f"{p.name}: {read_record(p)['total_frames']} frames, expected {frames}")
    leftovers = [str(p.relative_to(out)) for p in out.rglob("*") if ".tmp-" in p.name or p.suffix == ".lock"]
    if leftovers or (out / ".claims").exists():
        problems.append(f"left behind: {leftovers[:5]} (claims dir exists: {(out / '.claims').exists()})")
    listed = sorted(Path(json.loads(x)["video"]).name for x in (out / "failures.jsonl").read_text().splitlines())
    if listed != sorted(bad):
        problems.append(f"failures.jsonl lists {len(listed)} videos, expected the {len(bad)} corrupt ones")
    written_at: dict[str, float] = {}
    redone = []
    for t, _, line in sorted(events):
        if m := WROTE.search(line):
            written_at.setdefault(m.group(1), t)
        elif (m := START.search(line)) and m.group(1) in written_at:
            redone.append(m.group(1))
    if redone:
        problems.append(f"{len(redone)} videos extracted again after their record was written: {redone[:5]}")
    codes = [s.exit_code for s in slots]
    if any(c != 0 for c in codes):
        problems.append(f"final exit codes {codes}, expected 0")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--corrupt", type=float, default=0.05, help="share of corrupt videos")
    ap.add_argument("--processes", type=int, default=2, help="slots working on the one folder at once")
    ap.add_argument("--kill-min", type=float, default=2.0)
    ap.add_argument("--kill-max", type=float, default=10.0)
    ap.add_argument("--per-video-sleep", type=float, default=0.05, help="stand-in delay per chunk (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="extract --workers: 1 in-process, N >= 2 the engine")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="rsa-soak-"))
    t0 = time.monotonic()
    good, bad = write_videos(work / "videos", args.videos, args.corrupt, rng)
    print(f"{len(good)} good + {len(bad)} corrupt videos in {time.monotonic() - t0:.1f} s ({work})")
    out = work / "poses"
    cmd = [
        sys.executable,
        "-m",
        "pose_extraction",
        "extract",
        "--estimator",
        "standin",
        "--videos",
        str(work / "videos"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--set",
        f"max_failures={len(bad)}",
        "--workers",
        str(args.workers),
    ]
    env = dict(os.environ, RSA_EXTRACT_SLEEP=str(args.per_video_sleep))
    events: list = []
    lock = threading.Lock()
    slots = [
        Slot(i, cmd, env, (args.kill_min, args.kill_max), args.seed * 100 + i, events, lock)
        for i in range(args.processes)
    ]
    t0 = time.monotonic()
    for s in slots:
        s.start()
    for s in slots:
        s.join()
    wall = time.monotonic() - t0
    starts = Counter(m.group(1) for _, _, ln in events if (m := START.search(ln)))
    wrote = Counter(m.group(1) for _, _, ln in events if (m := WROTE.search(ln)))
    per_proc = defaultdict(int)
    for _, tag, ln in events:
        if WROTE.search(ln):
            per_proc[tag.split(":")[0]] += 1
    problems = check(out, good, bad, events, slots)
    print(
        f"wall {wall:.1f} s; processes started {sum(s.starts for s in slots)}, SIGKILLed {sum(s.kills for s in slots)}"
        f" ({', '.join(f'slot {s.index}: {s.starts} starts, {s.kills} kills, exit {s.exit_code}' for s in slots)})"
    )
    print(
        f"extractions started {sum(starts.values())} (videos started more than once: "
        f"{sum(1 for c in starts.values() if c > 1)}, i.e. in flight at a kill), records written "
        f"{sum(wrote.values())} for {len(wrote)} videos; written per slot: {dict(sorted(per_proc.items()))}"
    )
    print(
        f"records {len(list(out.glob('*.pkl')))} / {len(good)} good videos; failures.jsonl "
        f"{len((out / 'failures.jsonl').read_text().splitlines())} / {len(bad)} corrupt"
    )
    if not args.keep:
        shutil.rmtree(work)
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("all guarantees hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())

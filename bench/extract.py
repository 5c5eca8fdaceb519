"""Stage-1 throughput: our batched extraction against a per-frame loop, same models and weights.

The per-frame loop is how PYSKL's and MMAction2's NTU scripts run: detect one frame, estimate
that frame's boxes, next frame. Ours detects a whole chunk of frames in one batch and sends the
crops of every box in the chunk through the pose network together. Both paths see the same
video (generated: two person-sized moving shapes) and the same person boxes (the generated
shapes' boxes, so the pose workload is identical even with random detector weights; the
detector still runs on every frame in both paths). Prints frames/s side by side, the time
spent in the detector, the ratio, and the largest keypoint difference between the two paths.

Batching shares forward passes; it saves no arithmetic. On a GPU that is what throughput
needs; on a small CPU both paths are compute-bound and run at about the same speed (the
Faster R-CNN v2 box head over 1000 proposals is most of a frame's time there).

    python bench/extract.py --estimator hrnet --frames 16 --device auto
Weights: the local cache (make weights) when present, else random weights (timing only).

`--engine` compares instead the in-process path (`extract --workers 1`) with the pipelined
engine (`--workers N`, pose_extraction/engine.py) on a folder of generated videos, through
`run_extract` as the command line calls it: the stand-in estimator (decoding and tracking are
the work), then random-weight HRNet at a small input size behind a stand-in detector that finds
the generated figures (the models are the work; 4 of the videos, the CPU is slow at it). After one warm-up
run per path, each path runs `--repeats` times in alternating order; prints the median seconds, frames/s,
the cores used (CPU seconds of the process, its threads and its workers, over the wall time), the speed-up
and whether the records are identical. On a machine of C cores a path using c of them can gain at most C / c:

    python bench/extract.py --engine --videos 24 --frames 48 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int, w: int, h: int) -> list[np.ndarray]:
    """Two moving bright figures; returns the per-frame person boxes [2, 4] xyxy."""
    import cv2

    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    boxes = []
    for t in range(frames):
        img = np.full((h, w, 3), 40, np.uint8)
        fb = []
        for p, cx in enumerate((0.3, 0.7)):
            x = int((cx + 0.05 * np.sin(0.2 * t + p)) * w)
            bw, bh = w // 8, int(h * 0.7)
            x1, y1 = x - bw // 2, int(h * 0.15)
            cv2.rectangle(img, (x1, y1), (x1 + bw, y1 + bh), (200, 180, 160), -1)
            cv2.circle(img, (x, y1 - bw // 3), bw // 3, (220, 200, 180), -1)
            fb.append([x1, y1 - 2 * bw // 3, x1 + bw, y1 + bh])
        vw.write(img)
        boxes.append(np.asarray(fb, np.float32))
    vw.release()
    return boxes


class FigureDetector:
    """A stand-in person detector for the generated videos: boxes of the bright figures."""

    weights = ""

    def detect(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        import cv2

        out = []
        for f in frames:
            mask = (f[:, :, 0] > 120).astype(np.uint8)  # figures are (200, 180, 160) on 40
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            big = [s for s in stats[1:n] if s[4] >= 400]
            boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h, _ in big], np.float32).reshape(-1, 4)
            out.append((boxes, np.ones(len(boxes), np.float32)))
        return out


def cpu_seconds() -> float:
    """CPU time of this process (all its threads: OpenCV's decode threads too) and of its reaped children (the
    engine's workers, joined when a run ends)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def same_records(a: Path, b: Path) -> bool:
    from pipeline.schema import read_record

    names = sorted(p.name for p in a.glob("*.pkl"))
    if not names or names != sorted(p.name for p in b.glob("*.pkl")):
        return False
    for name in names:
        ra, rb = read_record(a / name), read_record(b / name)
        for k in ra.keys() | rb.keys():
            va, vb = ra.get(k), rb.get(k)
            same = np.array_equal(va, vb) if isinstance(va, np.ndarray) else va == vb
            if not same:
                return False
    return True


def bench_engine(args: argparse.Namespace) -> None:
    """In-process path vs the engine on a folder of generated videos (module docstring)."""
    from pose_extraction.estimators import build_estimator
    from pose_extraction.extract import PoseConfig, VideoExtractor, run_extract

    logging.getLogger("pose_extraction").setLevel(logging.ERROR)
    w, h = (int(v) for v in args.size.split("x"))
    small = {"input_size": (96, 128), "heatmap_size": (24, 32), "flip_test": False, "batch_size": 64}
    cases = [
        ("standin", lambda: build_estimator("standin", weights=None, settings={}), None, args.videos),
        ("hrnet 96x128, random", lambda: build_estimator("hrnet", weights=None, settings=small), FigureDetector, 4),
    ]
    print(f"{args.videos} videos x {args.frames} frames {w}x{h}, chunk {args.chunk}, {os.cpu_count()} CPUs")
    print(f"{'estimator':<24}{'path':<18}{'seconds':>9}{'frames/s':>10}{'cores':>7}{'speed-up':>10}  records")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        for i in range(args.videos):
            write_video(folder / f"v{i:03d}.mp4", args.frames, w, h)
        for name, make_estimator, detector, n in cases:
            videos = sorted(folder.glob("*.mp4"))[:n]
            total = n * args.frames
            est = make_estimator()
            cfg = PoseConfig(estimator=est.name, chunk_size=args.chunk)
            samples: dict[int, list[float]] = {1: [], args.workers: []}
            cpu: dict[int, list[float]] = {1: [], args.workers: []}
            for workers in (1, args.workers):  # warm-up: imports (scipy's for tracking) and first-call costs
                extractor = VideoExtractor(cfg=cfg, estimator=est, detector=detector() if detector else None)
                run_extract(extractor, videos[:2], Path(tmp) / f"warm-{workers}", progress=False, workers=workers)
            for rep in range(args.repeats):  # alternating order, so drifting load favours neither path
                for workers in (1, args.workers) if rep % 2 == 0 else (args.workers, 1):
                    extractor = VideoExtractor(cfg=cfg, estimator=est, detector=detector() if detector else None)
                    out = Path(tmp) / f"{est.name}-{workers}"
                    shutil.rmtree(out, ignore_errors=True)
                    t0, c0 = time.perf_counter(), cpu_seconds()
                    run_extract(extractor, videos, out, progress=False, workers=workers)
                    samples[workers].append(time.perf_counter() - t0)
                    cpu[workers].append(cpu_seconds() - c0)
            times = {w: float(np.median(v)) for w, v in samples.items()}
            same = same_records(Path(tmp) / f"{est.name}-1", Path(tmp) / f"{est.name}-{args.workers}")
            for workers, label in ((1, "--workers 1"), (args.workers, f"--workers {args.workers}")):
                t = times[workers]
                ratio = times[1] / t
                cores = float(np.median(cpu[workers])) / t
                tail = "" if workers == 1 else f"  {'identical' if same else 'DIFFER'}"
                print(f"{name:<24}{label:<18}{t:>9.2f}{total / t:>10.1f}{cores:>7.2f}{ratio:>9.2f}x{tail}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--estimator", default="hrnet", choices=("hrnet", "vitpose"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", default="640x360", help="WxH of the generated video")
    ap.add_argument("--chunk", type=int, default=16, help="frames per batch in our path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--detector-min-size", type=int, default=800)
    ap.add_argument("--engine", action="store_true", help="in-process path vs the engine on a folder (see above)")
    ap.add_argument("--videos", type=int, default=24, help="--engine: videos in the folder")
    ap.add_argument("--workers", type=int, default=2, help="--engine: the engine's decode processes")
    ap.add_argument("--repeats", type=int, default=3, help="--engine: runs per path (alternating), median shown")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.engine:
        bench_engine(args)
        return

    import torch

    from pipeline.config import load_config
    from pose_extraction.build import build_detector_from, build_estimator_from, resolve_device
    from pose_extraction.extract import PoseConfig
    from pose_extraction.video import open_video

    cfg = load_config(PoseConfig, None, [f"estimator={args.estimator}", f"device={args.device}", "batch_size=64"])
    device = resolve_device(cfg.device)
    w, h = (int(v) for v in args.size.split("x"))
    estimator = build_estimator_from(cfg, random_if_missing=True)
    detector = build_detector_from(cfg, random_if_missing=True, min_size=args.detector_min_size, batch_size=args.chunk)
    est_w, det_w = estimator.weights, detector.weights
    print(
        f"device {device}; {args.estimator} weights: {est_w or 'random'}; detector weights: {det_w or 'random'}; "
        f"{args.frames} frames {w}x{h}, 2 persons per frame, chunk {args.chunk}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        gt_boxes = write_video(video, args.frames, w, h)

        def sync() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        def run(batched: bool) -> tuple[float, float, np.ndarray]:
            """Total seconds, seconds in the detector, keypoints [frames, 2, 17, 2]."""
            kps, t_det = [], 0.0
            sync()
            t0 = time.perf_counter()
            with open_video(video, chunk_size=args.chunk) as reader:
                for start, chunk in reader.iter_chunks():
                    frames = list(chunk)
                    boxes = gt_boxes[start : start + len(frames)]
                    if batched:
                        td = time.perf_counter()
                        detector.detect(frames)
                        sync()
                        t_det += time.perf_counter() - td
                        out = estimator.estimate(frames, boxes)
                    else:
                        out = []
                        for f, b in zip(frames, boxes):
                            td = time.perf_counter()
                            detector.detect([f])
                            sync()
                            t_det += time.perf_counter() - td
                            out.append(estimator.estimate_one(f, b))
                    kps.extend(k for k, _ in out)
            sync()
            return time.perf_counter() - t0, t_det, np.stack(kps)

        run(True) if device == "cuda" else None  # CUDA warm-up (kernels, cudnn autotune)
        t_frame, d_frame, kp_frame = run(False)
        t_batch, d_batch, kp_batch = run(True)
    diff = float(np.abs(kp_frame - kp_batch).max())
    print(f"{'path':<28}{'seconds':>10}{'frames/s':>10}{'detector s':>12}{'rest s':>10}")
    for name, t, d in (("per-frame (PYSKL-style)", t_frame, d_frame), ("batched (ours)", t_batch, d_batch)):
        print(f"{name:<28}{t:>10.2f}{args.frames / t:>10.2f}{d:>12.2f}{t - d:>10.2f}")
    print(f"batched / per-frame throughput: {t_frame / t_batch:.2f}x; max keypoint difference {diff:.2e} px")


if __name__ == "__main__":
    main()

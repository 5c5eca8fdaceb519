"""One GPU benchmark of both stages: one table on stdout, the same rows as JSON.

Rows:
- extraction frames/s of vitpose and hrnet (random weights unless cached) on a generated
  1920x1080 video of moving person-like figures (or `--video`), for three paths: the per-frame
  loop (PYSKL-style: detect one frame, estimate it), today's batched in-process path
  (`extract --workers 1`) and the pipelined engine (`--workers N`), with the seconds spent in
  the detector and in the pose network (the rest: decoding, cropping, tracking, writing). The
  detector (Faster R-CNN) runs on every frame, but the boxes given to the pose network are the
  generated figures' (random detector weights find none), so every path does the same work;
- decode frames/s of each installed reader (opencv, pyav, decord) on the same video;
- training clips/s of DSTFormer-base at 243 frames, bf16 autocast on CUDA: fused and explicit
  attention, and the MaskCLR step against the baseline step (bench/train_step.py's steps).

    python bench/gpu.py                      # on the GPU; writes artifacts/reports/bench-gpu/gpu.json
    python bench/gpu.py --video clip.mp4 --json out.json
    python bench/gpu.py --smoke              # the same code at tiny sizes on the CPU (tests)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from extract import FigureDetector, write_video  # bench/extract.py, beside this script
from train_step import baseline_step, make_batch, make_maskclr_step, time_step

from pipeline.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


class Timed:
    """A detector or estimator wrapper adding up the seconds of its calls (synchronised on CUDA)."""

    def __init__(self, inner, method: str, device: str, boxes_from=None) -> None:
        self.inner, self.method, self.device, self.boxes_from = inner, method, device, boxes_from
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _call(self, *args, **kwargs):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = getattr(self.inner, self.method)(*args, **kwargs)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out

    def detect(self, frames):
        self._call(frames)  # the detector's cost, on every frame
        return self.boxes_from.detect(frames)  # the figures' boxes: the same pose work in every path

    def estimate(self, frames, boxes=None, *, start_index=0):
        return self._call(frames, boxes, start_index=start_index)


def extraction_rows(args: argparse.Namespace, folder: Path, device: str) -> list[dict]:
    """Per-frame loop (first video), batched in-process path and engine (all videos), per estimator."""
    from pipeline.config import load_config
    from pose_extraction.build import build_detector_from, build_estimator_from
    from pose_extraction.estimators import build_estimator, load_settings
    from pose_extraction.extract import PoseConfig, VideoExtractor, run_extract
    from pose_extraction.video import open_video

    videos = sorted(folder.iterdir())
    rows = []
    det = None  # one detector for every estimator (the same file and settings)
    for name in args.estimators.split(","):
        sets = [f"estimator={name}", f"device={device}", f"chunk_size={args.chunk}", f"batch_size={args.batch}"]
        cfg = load_config(PoseConfig, None, [*sets, f"detector.input_size={args.detector_input}"])
        if args.smoke:  # a tiny network through the same code
            small = {"input_size": (64, 96), "heatmap_size": (16, 24), "flip_test": False, "batch_size": args.batch}
            if name == "vitpose":
                small.update(hidden_size=32, num_layers=1, num_heads=2)
            if name == "hrnet":
                small.update(variant="hrnet_w18_small")
            est = build_estimator(name, weights=None, device=device, settings={**load_settings(name), **small})
        else:
            est = build_estimator_from(cfg, random_if_missing=True)
        if det is None:
            det = build_detector_from(
                cfg, random_if_missing=True, **({"rpn_post_nms_top_n_test": 50} if args.smoke else {})
            )
        if device.startswith("cuda"):  # warm-up: kernels, cudnn autotune
            with tempfile.TemporaryDirectory() as tmp:
                warm = VideoExtractor(cfg=cfg, estimator=est, detector=Timed(det, "detect", device, FigureDetector()))
                run_extract(warm, videos[:1], Path(tmp), progress=False, workers=1)

        pose, detector = Timed(est, "estimate", device), Timed(det, "detect", device, FigureDetector())
        n = 0
        t0 = time.perf_counter()
        with open_video(videos[0], chunk_size=args.chunk) as reader:
            for _, chunk in reader.iter_chunks():
                for frame in chunk:  # detect one frame, estimate its boxes, next frame
                    ((boxes, _),) = detector.detect([frame])
                    pose.estimate([frame], [boxes])
                    n += 1
        rows.append(_row(name, "per-frame loop", n, time.perf_counter() - t0, detector, pose))
        for workers, label in ((1, "batched, --workers 1"), (args.workers, f"engine, --workers {args.workers}")):
            pose, detector = Timed(est, "estimate", device), Timed(det, "detect", device, FigureDetector())
            with tempfile.TemporaryDirectory() as tmp:
                extractor = VideoExtractor(cfg=cfg, estimator=pose, detector=detector)
                t0 = time.perf_counter()
                run_extract(extractor, videos, Path(tmp), progress=False, workers=workers)
                seconds = time.perf_counter() - t0
            rows.append(_row(name, label, args.frames * len(videos), seconds, detector, pose))
    return rows


def _row(est: str, path: str, frames: int, seconds: float, det: Timed, pose: Timed) -> dict:
    return {
        "what": f"extract {est}",
        "path": path,
        "seconds": round(seconds, 4),
        "per_s": round(frames / seconds, 2),
        "unit": "frames/s",
        "detector_s": round(det.seconds, 4),
        "pose_s": round(pose.seconds, 4),
        "rest_s": round(seconds - det.seconds - pose.seconds, 4),
    }


def decode_rows(video: Path, chunk: int) -> list[dict]:
    """Frames/s of each installed reader, chunked as stage 1 reads."""
    import importlib.util

    from pose_extraction.video import BACKENDS, open_video

    modules = {"opencv": "cv2", "pyav": "av", "decord": "decord"}
    rows = []
    for backend in BACKENDS:
        if importlib.util.find_spec(modules[backend]) is None:
            continue
        n, t0 = 0, time.perf_counter()
        with open_video(video, backend=backend, chunk_size=chunk) as reader:
            for _, frames in reader.iter_chunks():
                n += len(frames)
        seconds = time.perf_counter() - t0
        rows.append({"what": "decode", "path": backend, "seconds": round(seconds, 4), "per_s": round(n / seconds, 2)})
        rows[-1]["unit"] = "frames/s"
    return rows


def training_rows(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """DSTFormer clips/s: baseline fused, baseline explicit, MaskCLR fused (bench/train_step.py's steps)."""
    from recognition.config import MaskCLRConfig, TrainConfig
    from recognition.maskclr.losses import MLCLLoss
    from recognition.models.action import build_action_model

    classes = 60
    torch.manual_seed(0)
    model = build_action_model(
        num_classes=classes, backbone="dstformer", preset=args.preset, maxlen=args.clip_frames, use_mask_token=True
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = make_batch(args.clips, args.clip_frames, classes, device)
    mstep = make_maskclr_step(
        TrainConfig(maskclr=MaskCLRConfig(enabled=True)), MLCLLoss(num_classes=classes).to(device)
    )
    rows = []
    for label, step, explicit in (
        ("baseline, fused attention", baseline_step, False),
        ("baseline, explicit attention", baseline_step, True),
        ("maskclr, fused attention", mstep, False),
    ):
        model.backbone.explicit_attention = explicit
        sec = time_step(step, model, x, y, opt, device, warmup=args.warmup, repeats=args.repeats)
        rows.append({"what": f"train dstformer-{args.preset} T={args.clip_frames}", "path": label})
        rows[-1].update(seconds=round(sec, 4), per_s=round(args.clips / sec, 2), unit="clips/s")
    model.backbone.explicit_attention = False
    rows[1]["vs_fused"] = round(rows[1]["seconds"] / rows[0]["seconds"], 3)
    rows[2]["vs_baseline"] = round(rows[2]["seconds"] / rows[0]["seconds"], 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--video", default=None, help="a video instead of the generated one")
    ap.add_argument("--size", default="1920x1080", help="WxH of the generated video")
    ap.add_argument("--frames", type=int, default=128, help="frames of the generated video")
    ap.add_argument("--videos", type=int, default=4, help="copies of the video the batched path and engine run on")
    ap.add_argument("--estimators", default="vitpose,hrnet")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="pose crops per forward")
    ap.add_argument("--detector-input", type=int, default=800, help="detector input size (shorter side)")
    ap.add_argument("--workers", type=int, default=4, help="the engine's decode processes")
    ap.add_argument("--preset", default="base", help="DSTFormer preset")
    ap.add_argument("--clip-frames", type=int, default=243)
    ap.add_argument("--clips", type=int, default=32, help="clips per training step")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(REPO / "artifacts/reports/bench-gpu/gpu.json"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, the same code (well under a minute)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.size, args.frames, args.videos, args.chunk, args.batch = "cpu", "160x96", 4, 2, 4, 8
        args.detector_input, args.workers, args.preset, args.clip_frames, args.clips = 64, 2, "tiny", 16, 2
        args.warmup, args.repeats = 0, 1
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pose_extraction").setLevel(logging.ERROR)

    from pose_extraction.build import resolve_device
    from recognition.runtime import pick_device

    device = resolve_device(args.device)
    info = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        source = Path(args.video) if args.video else Path(tmp) / "generated.mp4"
        if not args.video:
            w, h = (int(v) for v in args.size.split("x"))
            write_video(source, args.frames, w, h)
        else:
            from pose_extraction.video import open_video

            with open_video(source) as reader:
                args.frames = sum(len(c) for _, c in reader.iter_chunks())
        for i in range(args.videos):  # one id per copy: the engine overlaps their decoding
            os.symlink(source.resolve(), folder / f"copy{i}{source.suffix}")
        rows += extraction_rows(args, folder, device)
        rows += decode_rows(source, args.chunk)
    rows += training_rows(args, pick_device(device))
    print(
        f"device {device} ({info}); video {args.video or args.size} x {args.frames} frames; torch {torch.__version__}"
    )
    print(
        f"{'what':<30}{'path':<30}{'seconds':>9}{'per s':>10}  {'unit':<9}{'detector s':>11}{'pose s':>8}{'rest s':>8}"
    )
    for r in rows:
        stages = "".join(
            f"{r[k]:>{w}.2f}" if k in r else " " * w for k, w in (("detector_s", 11), ("pose_s", 8), ("rest_s", 8))
        )
        extra = "".join(f"  {k} {r[k]:.2f}x" for k in ("vs_fused", "vs_baseline") if k in r)
        print(f"{r['what']:<30}{r['path']:<30}{r['seconds']:>9.3f}{r['per_s']:>10.2f}  {r['unit']:<9}{stages}{extra}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "device_name": info, "torch": torch.__version__, "args": vars(args), "rows": rows}
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Raw video to action labels: stage 1 on the video(s), then a trained model on the poses.

    python -m recognition predict --video clip.mp4|DIR --run artifacts/runs/X --out DIR [--estimator E]

Stage 1 runs as `python -m pose_extraction extract` in the estimator's own interpreter
(`--estimator-python`, e.g. `.venv-mediapipe/bin/python` for BlazePose), because the two stages
never import each other. Then, per video, the model scores the whole clip (MotionBERT's test
protocol: resampled to the clip length) and, when the video is longer than the clip length,
every sliding window of `clip_len` frames (stride `clip_len // 2`, the last window aligned to the
end). Outputs in OUT: `poses/<estimator>/<video>.pkl`, `<video>.labels.json` (top-k labels with
probabilities for the clip and each window), `<video>.overlay.mp4` (skeletons and the label of
the current window), `labels.json` (the video's result, or the list of them for a folder) and
`labels.csv` (one line per video).

Records are reused by stage 1's cache rule (pose_extraction/cache.py): only when made from the
same video with the same estimator and settings. A video that yields no record this time (no
person, unreadable) has its earlier outputs in OUT removed and an error row, never an old label.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from pipeline.atomic import atomic_write_text
from pipeline.datasets import VIDEO_SUFFIXES, check_unique_video_ids
from pipeline.schema import read_record
from recognition.checkpoint import build_model_from_checkpoint
from recognition.evaluate import eval_config
from recognition.preprocess import preprocess_clip, select_two_persons
from recognition.runtime import pick_device

log = logging.getLogger(__name__)


def window_starts(total: int, clip_len: int) -> list[int]:
    """Starts of the sliding windows over `total` frames (one window when total <= clip_len)."""
    if total <= clip_len:
        return [0]
    stride = max(1, clip_len // 2)
    starts = list(range(0, total - clip_len + 1, stride))
    if starts[-1] != total - clip_len:
        starts.append(total - clip_len)
    return starts


def topk(probs: np.ndarray, names: list[str], k: int) -> list[dict]:
    order = np.argsort(-probs)[:k]
    return [{"label": names[i], "index": int(i), "prob": round(float(probs[i]), 6)} for i in order]


def resolve_checkpoint(run: str | Path) -> Path:
    """A run folder (its best.pt) or a checkpoint file."""
    p = Path(run)
    if p.is_dir():
        p = p / "best.pt"
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}: train a model first (make train, or make demo)")
    return p


@torch.no_grad()
def predict_record(model, rec: dict, *, opts, names: list[str], device: torch.device, k: int = 5) -> dict:
    """Top-k for the whole clip and for each sliding window of a pose record."""
    kp, score = rec["keypoint"], rec["keypoint_score"]
    total = int(rec["total_frames"])
    fps = float(rec.get("fps", 30.0))
    if kp.shape[0] == 0 or total == 0:
        raise ValueError(f"{rec['frame_dir']}: no person in the pose record; nothing to classify")
    kp, score, _ = select_two_persons(kp, score)  # the training code's choice (recognition/data.py)
    clip_len = opts.clip_len
    starts = window_starts(total, clip_len)
    spans = [(0, total)] + ([(s, s + clip_len) for s in starts] if total > clip_len else [])
    x = np.stack(
        [
            preprocess_clip(
                kp[:, s:e],
                score[:, s:e],
                rec["img_shape"],
                train=False,
                opts=opts,
                rng=None,
                clip_name=rec["frame_dir"],
            )
            for s, e in spans
        ]
    )  # [W, 2, T, V, C]
    probs = torch.softmax(model(torch.from_numpy(x).to(device)).logits.float(), dim=1).cpu().numpy()
    windows = [
        {
            "start_frame": s,
            "end_frame": e,
            "start_s": round(s / fps, 3),
            "end_s": round(e / fps, 3),
            "top": topk(p, names, k),
        }
        for (s, e), p in zip(spans[1:], probs[1:])
    ]
    if not windows:
        windows = [
            {
                "start_frame": 0,
                "end_frame": total,
                "start_s": 0.0,
                "end_s": round(total / fps, 3),
                "top": topk(probs[0], names, k),
            }
        ]
    return {
        "video": rec.get("source", rec["frame_dir"]),
        "frame_dir": rec["frame_dir"],
        "total_frames": total,
        "fps": fps,
        "persons": int(rec["keypoint"].shape[0]),
        "clip_len": clip_len,
        "clip": {"top": topk(probs[0], names, k)},
        "windows": windows,
    }


def frame_captions(result: dict) -> list[str]:
    """Per frame: the top-1 label of the window whose centre is nearest (for the overlay)."""
    centres = np.array([(w["start_frame"] + w["end_frame"]) / 2 for w in result["windows"]])
    caps = []
    for t in range(result["total_frames"]):
        w = result["windows"][int(np.abs(centres - t).argmin())]
        top = w["top"][0]
        caps.append(f"{top['label']} {100 * top['prob']:.0f}%")
    return caps


def run_extraction(videos: list[Path], poses: Path, *, estimator: str, python: str, device: str) -> None:
    """Stage 1 in the estimator's interpreter; existing valid records are reused."""
    poses.mkdir(parents=True, exist_ok=True)
    listing = poses / "videos.txt"
    atomic_write_text(listing, "".join(f"{v.resolve()}\n" for v in videos))
    cmd = [
        python,
        "-m",
        "pose_extraction",
        "extract",
        "--estimator",
        estimator,
        "--videos",
        str(listing),
        "--out",
        str(poses),
        "--set",
        f"max_failures={len(videos)}",
    ]
    if device != "auto":
        cmd += ["--device", device]
    log.info("stage 1: %s", " ".join(cmd))
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise RuntimeError(f"pose extraction failed (exit {res.returncode}); see the messages above")


def render_overlay(python: str, record: Path, video: Path, out: Path, captions: list[str]) -> None:
    cap_file = out.with_suffix(".captions.json")
    atomic_write_text(cap_file, json.dumps(captions))
    cmd = [python, "-m", "pose_extraction", "render", str(record), str(video), str(out), "--captions", str(cap_file)]
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"rendering {out} failed")
    cap_file.unlink()


def run_predict(
    *,
    video: str | Path,
    run: str | Path,
    out: str | Path,
    estimator: str = "blazepose",
    estimator_python: str | None = None,
    device: str = "auto",
    k: int = 5,
    overlay: bool = True,
    poses: str | Path | None = None,
) -> list[dict]:
    """Predict labels for a video or a folder of videos; returns one result per video."""
    src, out = Path(video), Path(out)
    if src.is_dir():
        videos = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise FileNotFoundError(f"no videos found in {src} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    elif src.is_file():
        videos = [src]
    else:
        raise FileNotFoundError(f"{src}: no such video or folder")
    check_unique_video_ids(videos)
    ck = resolve_checkpoint(run)
    dev = pick_device(device)
    model, meta = build_model_from_checkpoint(ck)
    model.to(dev)
    names = meta.get("label_names") or [f"class_{i}" for i in range(meta["model_config"]["num_classes"])]
    opts = eval_config(meta, faithful=None).data
    python = estimator_python or sys.executable
    poses = Path(poses) if poses else out / "poses" / estimator  # records there are reused if their key matches
    run_extraction(videos, poses, estimator=estimator, python=python, device=device)
    results, rows = [], []
    for v in videos:
        rec_path = poses / f"{v.stem}.pkl"
        if not rec_path.is_file():
            log.error("%s: no pose record (see %s)", v, poses / "failures.jsonl")
            for stale in (out / f"{v.stem}.labels.json", out / f"{v.stem}.overlay.mp4"):
                stale.unlink(missing_ok=True)  # an earlier video of this name: its label is not this one's
            rows.append(
                {"video": str(v), "top1": "", "prob": "", "top5": "", "error": "no person found / extraction failed"}
            )
            continue
        res = predict_record(model, read_record(rec_path), opts=opts, names=names, device=dev, k=k)
        res.update(video=str(v), checkpoint=str(ck), estimator=estimator)
        atomic_write_text(out / f"{v.stem}.labels.json", json.dumps(res, indent=1) + "\n")
        if overlay:
            render_overlay(python, rec_path, v, out / f"{v.stem}.overlay.mp4", frame_captions(res))
        top = res["clip"]["top"]
        rows.append(
            {
                "video": str(v),
                "top1": top[0]["label"],
                "prob": top[0]["prob"],
                "top5": " ".join(t["label"] for t in top),
                "error": "",
            }
        )
        results.append(res)
        log.info("%s: %s (%.0f%%), %d windows", v.name, top[0]["label"], 100 * top[0]["prob"], len(res["windows"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["video", "top1", "prob", "top5", "error"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "labels.csv", buf.getvalue())
    if results:
        summary = results[0] if src.is_file() else results
        atomic_write_text(out / "labels.json", json.dumps(summary, indent=1) + "\n")
    else:
        (out / "labels.json").unlink(missing_ok=True)
        raise RuntimeError(f"no video could be classified; see {poses / 'failures.jsonl'}")
    return results

"""`python -m pose_extraction <verb>`: stage 1, videos -> pose records.

    extract --estimator E --videos DIR_OR_LIST --out DIR [--shard i/n] [--device D] [--config YAML] [--set k=v]
            [--no-overwrite] [--retry-failed] [--workers N]
    image IMAGE --estimator E [--boxes x1,y1,x2,y2;...] --out OUT.json
    weights E [--from FILE] [--role R] [--path]
    render RECORD VIDEO OUT.mp4

Exit status 0 on success, 1 on a failure (one error line on stderr), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import write_text_if_changed
from pipeline.cli import run_cli
from pipeline.config import ConfigError, dump_yaml, load_config
from pipeline.datasets import check_unique_video_ids
from pipeline.schema import SchemaError, read_record
from pose_extraction.build import build_detector_from, build_estimator_from, build_extractor
from pose_extraction.extract import PoseConfig, distributed_shard, run_extract

log = logging.getLogger("pose_extraction")


def _parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return distributed_shard() or (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n, got {text!r}") from None
    return i, n


def _cmd_extract(args: argparse.Namespace) -> int:
    from pose_extraction.engine import default_workers
    from pose_extraction.video import list_videos

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        print(f"error: --workers must be >= 1 (1 = decode in this process), got {workers}", file=sys.stderr)
        return 2

    sets = list(args.set) + [f"estimator={args.estimator}"] + ([f"device={args.device}"] if args.device else [])
    cfg = load_config(PoseConfig, args.config, sets)
    from pose_extraction.estimators import get_estimator_class

    get_estimator_class(cfg.estimator)  # an unknown name fails before any video is listed
    videos = list_videos(args.videos)
    check_unique_video_ids(videos)  # before any model is loaded
    shard = _parse_shard(args.shard)
    extractor = build_extractor(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_overwrite:  # the records will all match it; with --no-overwrite, only if none was refused
        write_text_if_changed(out / "pose_config.yaml", dump_yaml(extractor.effective_config()))
    run_extract(
        extractor,
        videos,
        out,
        shard=shard,
        max_failures=cfg.max_failures,
        overwrite=not args.no_overwrite,
        retry_failed=args.retry_failed,
        workers=workers,
    )
    if args.no_overwrite:
        write_text_if_changed(out / "pose_config.yaml", dump_yaml(extractor.effective_config()))
    return 0


def _parse_boxes(text: str) -> np.ndarray:
    try:
        boxes = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        boxes = [[]]
    if not boxes or any(len(b) != 4 for b in boxes):
        raise ValueError(f"--boxes expects x1,y1,x2,y2;... got {text!r}")
    return np.asarray(boxes, dtype=np.float32)


def _cmd_image(args: argparse.Namespace) -> int:
    import cv2

    from pipeline.atomic import atomic_write_text

    img = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{args.image}: cannot read image")
    given = _parse_boxes(args.boxes) if args.boxes else None  # bad boxes fail before any model loads
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    sets = list(args.set) + [f"estimator={args.estimator}", f"device={args.device}"]
    cfg = load_config(PoseConfig, args.config, sets + ([f"weights={args.weights}"] if args.weights else []))
    estimator = build_estimator_from(cfg)
    if estimator.needs_boxes:
        if given is not None:
            boxes = given
            box_scores = np.ones(len(boxes), np.float32)
        else:
            boxes, box_scores = build_detector_from(cfg).detect([rgb])[0]
        ((kp, sc),) = estimator.estimate([rgb], [boxes])
    else:
        ((kp, sc),) = estimator.estimate([rgb], None)
        boxes, box_scores = None, None
    persons = []
    for i in range(kp.shape[0]):
        p = {"keypoints": kp[i].tolist(), "scores": np.clip(sc[i], 0, 1).tolist()}
        if boxes is not None:
            p["box"], p["box_score"] = boxes[i].tolist(), float(box_scores[i])
        persons.append(p)
    atomic_write_text(
        args.out, json.dumps({"image": args.image, "estimator": args.estimator, "persons": persons}, indent=1) + "\n"
    )
    print(f"{len(persons)} persons -> {args.out}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from pose_extraction import weights as wcache

    if args.path:
        print(wcache.resolve(args.estimator, args.role))
    elif args.from_file:
        print(wcache.import_file(args.estimator, args.from_file, role=args.role))
    else:
        for p in wcache.fetch(args.estimator):
            print(p)
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from pose_extraction.render import render_video

    caption = None
    if args.captions:
        caps = json.loads(Path(args.captions).read_text())
        caption = lambda t: caps[t] if t < len(caps) else ""  # noqa: E731
    n = render_video(read_record(args.record), args.video, args.out, caption=caption)
    print(f"{n} frames -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pose_extraction", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("extract", help="videos -> one pose record per video")
    p.add_argument("--estimator", required=True)
    p.add_argument("--videos", required=True, help="a folder of videos or a text file listing them")
    p.add_argument("--out", required=True, help="output folder (one <video_id>.pkl per video)")
    p.add_argument("--shard", default=None, help="i/n: take every n-th video from the i-th (default: torchrun rank)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda")
    p.add_argument("--config", default=None, help="YAML with PoseConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--no-overwrite",
        action="store_true",
        help="keep records made from another video or with other settings (reported, exit 1) "
        "instead of extracting them again",
    )
    p.add_argument("--retry-failed", action="store_true", help="extract again the videos listed in failures.jsonl")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decode processes (default: the CPUs, at most 8); 1 decodes in this process",
    )
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("image", help="one image -> keypoints JSON")
    p.add_argument("image")
    p.add_argument("--estimator", required=True)
    p.add_argument("--boxes", default=None, help="x1,y1,x2,y2;... (skips the detector)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None, help="YAML with PoseConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("weights", help="fetch official weights into the local cache, or import a file")
    p.add_argument("estimator")
    p.add_argument("--from", dest="from_file", default=None, help="import this local file instead of downloading")
    p.add_argument(
        "--role",
        choices=("estimator", "detector", "backbone", "action"),
        default="estimator",
        help="which file of the name (estimator = the name's first; motionbert: backbone)",
    )
    p.add_argument("--path", action="store_true", help="print the cached file's path (error if not fetched)")
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser("render", help="overlay a record on its video")
    p.add_argument("record")
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--captions", default=None, help="JSON list of one caption per frame (e.g. predicted labels)")
    p.set_defaults(func=_cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        build_parser(), argv, (ConfigError, SchemaError, ValueError, KeyError, RuntimeError, ImportError, OSError)
    )


if __name__ == "__main__":
    sys.exit(main())

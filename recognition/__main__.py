"""`python -m recognition <verb>`: train, evaluate, report.

    train     --config C --data INDEX --split xsub|xview|xset|train --out DIR [--init CK [--allow-pickle]] [--resume]
    evaluate  --checkpoint CK --data INDEX --split xview_val --out DIR [--noise-sigma S] [--preprocessing P]
    predict   --video V|DIR --run RUN --out DIR [--estimator E] [--estimator-python PY]
    configs   [--find MODEL BACKBONE DATASET]   the shipped run configs
    report    --runs RUN_DIR... --data INDEX... --out DIR [--config configs/report/default.yaml] [--only SECTION]

Exit status 0 on success, 1 on a failure (one error line on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import run_cli
from pipeline.config import ConfigError, load_config
from pipeline.schema import SchemaError, UnsafePickleError
from recognition.checkpoint_import import CheckpointError
from recognition.config import TrainConfig, resolve


def _cmd_train(args: argparse.Namespace) -> int:
    from recognition.train import run_train

    cfg = resolve(load_config(TrainConfig, args.config, args.set))
    run_train(
        cfg,
        data=args.data,
        split=args.split,
        out=args.out,
        device=args.device,
        init=args.init,
        resume=args.resume,
        allow_pickle=args.allow_pickle,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from recognition.evaluate import run_evaluate

    run_evaluate(
        checkpoint=args.checkpoint,
        data=args.data,
        split=args.split,
        out=args.out,
        device=args.device,
        noise_sigma=args.noise_sigma,
        faithful=args.faithful,
        batch_size=args.batch_size,
        allow_pickle=args.allow_pickle,
        preprocessing=args.preprocessing,
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import shlex

    from recognition.report import ReportConfig, run_report

    cfg = load_config(ReportConfig, args.config, args.set)
    command = ["python", "-m", "recognition", "report", "--runs", *args.runs, "--data", *args.data, "--out", args.out]
    if args.config:
        command += ["--config", args.config]
    for item in args.set:
        command += ["--set", item]
    if args.split:
        command += ["--split", args.split]
    if args.device != "auto":
        command += ["--device", args.device]
    logging.getLogger(__name__).debug("report command: %s", shlex.join(command))
    run_report(
        runs=args.runs,
        data=args.data,
        out=args.out,
        cfg=cfg,
        command=command,
        split=args.split,
        device=args.device,
        only=args.only,
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from recognition.predict import run_predict

    results = run_predict(
        video=args.video,
        run=args.run,
        out=args.out,
        estimator=args.estimator,
        estimator_python=args.estimator_python,
        device=args.device,
        k=args.top_k,
        overlay=not args.no_overlay,
        poses=args.poses,
    )
    for r in results:
        top = r["clip"]["top"][0]
        print(f"{r['video']}: {top['label']} ({100 * top['prob']:.1f}%), {len(r['windows'])} windows")
    print(f"labels: {Path(args.out) / 'labels.json'}")
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from recognition.shipped import find_config, format_table, shipped_configs

    if args.find:
        print(find_config(*args.find))
    else:
        print(format_table(shipped_configs()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recognition", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("train", help="train a model on a dataset index")
    p.add_argument("--config", required=True, help="YAML (configs/recognition/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--data", required=True, help="PYSKL dataset index (.pkl)")
    p.add_argument(
        "--split",
        required=True,
        help="protocol: xsub, xview, xset (uses <split>_train/_val); train, all or '' for the train/val "
        "splits of Kinetics400 and folder indexes",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--init", default=None, help="initial weights: ours, or MotionBERT model_pos/model files")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow full unpickling of a trusted --init file (e.g. MotionBERT's latest_epoch.bin with numpy scalars)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("configs", help="list the shipped run configs (model, backbone, family, splits, file)")
    p.add_argument(
        "--find",
        nargs=3,
        metavar=("MODEL", "BACKBONE", "DATASET"),
        help="print the shipped config for MODEL on BACKBONE for DATASET's family (error if none)",
    )
    p.set_defaults(func=_cmd_configs)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("--checkpoint", required=True, help="ours (.pt) or a MotionBERT action file")
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True, help="full split name, e.g. xview_val")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--noise-sigma", type=float, default=0.0, help="Gaussian noise (docs/method.md §8a)")
    p.add_argument(
        "--faithful",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="official preprocessing quirks (default: the checkpoint's setting)",
    )
    p.add_argument(
        "--preprocessing",
        choices=("auto", "fixed", "faithful"),
        default="auto",
        help="data switches F3/F4 (docs/method.md §10): auto = the checkpoint's own (a MotionBERT/MaskCLR file: "
        "their official test pipeline); fixed or faithful forces them",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--allow-pickle", action="store_true", help="allow full unpickling of a trusted foreign file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="robustness report over trained runs (tables, figures, report.html)")
    p.add_argument("--runs", nargs="+", required=True, help="run directories (their best.pt) or checkpoint files")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="dataset indexes; the first is swept, all enter the cross-estimator and pose-quality tables",
    )
    p.add_argument("--out", required=True, help="report directory (cache in OUT/cache)")
    p.add_argument("--config", default=None, help="YAML (configs/report/*.yaml); default: ReportConfig defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--split", default=None, help="evaluation split (default: <the runs' split>_val)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="SECTION",
        help="write only this section's CSV/PNG and print its table (repeatable); the names are "
        "recognition.report.SECTIONS, e.g. gaussian_noise, masking, pose_quality",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("predict", help="raw video (or a folder) -> action labels + overlay video")
    p.add_argument("--video", required=True, help="a video file or a folder of videos")
    p.add_argument("--run", required=True, help="a run folder (its best.pt) or a checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--estimator", default="blazepose", help="stage-1 estimator (default: blazepose)")
    p.add_argument(
        "--estimator-python",
        default=None,
        help="interpreter that runs stage 1 (e.g. .venv-mediapipe/bin/python for blazepose)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-overlay", action="store_true")
    p.add_argument(
        "--poses",
        default=None,
        help="folder for the pose records (default OUT/poses/ESTIMATOR); reused where made from the same video and settings",
    )
    p.set_defaults(func=_cmd_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        build_parser(),
        argv,
        (
            ConfigError,
            SchemaError,
            UnsafePickleError,
            CheckpointError,
            ValueError,
            KeyError,
            RuntimeError,
            FileNotFoundError,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())

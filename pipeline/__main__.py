"""`python -m pipeline <verb>`: validate, build-demo-dataset, freeze-config, index.

    validate FILE.pkl             check a pose record or dataset index; print a one-line summary
    build-demo-dataset            build the embedded mocap15 dataset (records + PYSKL index)
    freeze-config CONFIG          resolve YAML + --set into a frozen YAML, rewritten only if changed
    index --poses DIR --dataset NAME --out FILE
                                  label pose records, group them into the official splits and
                                  write a PYSKL index; report missing/failed/unlabelled videos

Exit status 0 on success, 1 on any failure (one error line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline import schema
from pipeline.atomic import atomic_write_text, write_text_if_changed
from pipeline.cli import run_cli
from pipeline.config import ConfigError, dump_yaml, load_config, resolve_raw
from pipeline.datasets import DATASETS, DatasetError, get_dataset

log = logging.getLogger("pipeline")


def _cmd_validate(args: argparse.Namespace) -> int:
    """Load FILE with the restricted unpickler and check it (`schema.read_any`: the contract,
    disjoint train/val per protocol, labels within label_names); any refusal is one line."""
    obj = schema.read_any(args.file)
    print(schema.summarize(obj))
    return 0


def _cmd_build_demo(args: argparse.Namespace) -> int:
    from pipeline.mocap15 import Mocap15Config, build_mocap15

    cfg = load_config(Mocap15Config, args.config, args.set)
    index = build_mocap15(cfg)
    records_dir = Path(args.records) if args.records else None
    if records_dir is not None:
        for ann in index["annotations"]:
            rec = {k: v for k, v in ann.items() if k != "label"}
            schema.write_record(rec, records_dir / f"{rec['frame_dir']}.pkl")
    schema.write_index(index, args.out)
    log.info("wrote %s", args.out)
    print(schema.summarize(index))
    return 0


def _cmd_freeze_config(args: argparse.Namespace) -> int:
    text = dump_yaml(resolve_raw(args.config, args.set))
    changed = write_text_if_changed(args.out, text)
    log.info("%s %s", "wrote" if changed else "unchanged", args.out)
    return 0


def _dataset_kwargs(args: argparse.Namespace) -> dict:
    """The adapter's keyword arguments from the dataset-specific options (checked)."""
    given = {"--kinetics-csv": bool(args.kinetics_csv), "--labels": bool(args.labels), "--classes": bool(args.classes)}
    allowed = {"kinetics400": {"--kinetics-csv"}, "folder": {"--labels", "--classes"}}
    wrong = sorted(k for k, v in given.items() if v and k not in allowed.get(args.dataset, set()))
    if wrong:
        raise DatasetError(f"--dataset {args.dataset} takes no {' / '.join(wrong)}")
    if args.dataset == "kinetics400":
        if not args.kinetics_csv:
            raise DatasetError("--dataset kinetics400 needs --kinetics-csv (e.g. train.csv, validate.csv)")
        return {"csv_paths": args.kinetics_csv}
    if args.dataset == "folder":
        if not args.labels:
            raise DatasetError("--dataset folder needs --labels labels.csv")
        return {"labels_csv": args.labels, "classes_txt": args.classes}
    return {}


def _cmd_index(args: argparse.Namespace) -> int:
    from pipeline.index import build_index, format_report, read_video_list

    try:
        dataset = get_dataset(args.dataset, **_dataset_kwargs(args))
        videos = read_video_list(args.videos) if args.videos else None
        index, report = build_index(poses_dir=args.poses, dataset=dataset, video_ids=videos)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report), file=sys.stderr)
    if args.report:
        atomic_write_text(args.report, json.dumps(report, indent=1) + "\n")
    if not index["annotations"]:
        print(f"error: nothing to index in {args.poses}; {args.out} not written", file=sys.stderr)
        return 1
    schema.write_index(index, args.out)
    log.info("wrote %s", args.out)
    print(schema.summarize(index))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("validate", help="validate a pose record or dataset index")
    p.add_argument("file", help="a .pkl pose record or PYSKL dataset index")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("build-demo-dataset", help="build the embedded mocap15 dataset")
    p.add_argument("--config", default=None, help="YAML with Mocap15Config fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="dataset index to write (.pkl)")
    p.add_argument("--records", default=None, help="folder for the per-video records")
    p.set_defaults(func=_cmd_build_demo)

    p = sub.add_parser("freeze-config", help="resolve a config; rewrite only when changed")
    p.add_argument("config", help="YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_freeze_config)

    p = sub.add_parser("index", help="build a PYSKL dataset index from pose records")
    p.add_argument("--poses", required=True, help="folder of <video_id>.pkl pose records")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument(
        "--kinetics-csv",
        action="append",
        default=[],
        metavar="CSV",
        help="kinetics400: official annotation CSV (repeat for train and val)",
    )
    p.add_argument("--labels", default=None, help="folder: labels.csv (video,label[,split])")
    p.add_argument("--classes", default=None, help="folder: classes.txt giving the label order (default: sorted names)")
    p.add_argument(
        "--videos",
        default=None,
        metavar="LIST_OR_DIR",
        help="index only these videos (a folder of videos or a file of names)",
    )
    p.add_argument("--out", required=True, help="dataset index to write (.pkl)")
    p.add_argument("--report", default=None, help="also write the full report as JSON")
    p.set_defaults(func=_cmd_index)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, (schema.SchemaError, schema.UnsafePickleError, ConfigError, ImportError))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m pipeline <verb>`: validate, build-demo-dataset, freeze-config, index, pack, export-pyskl, fetch.

    validate FILE.pkl|STORE       check a pose record, dataset index or store; print a one-line summary
    build-demo-dataset            build the embedded mocap15 dataset (records + PYSKL index)
    freeze-config CONFIG          resolve YAML + --set into a frozen YAML, rewritten only if changed
    index --poses DIR|LIST.pkl --dataset NAME --out FILE
                                  label pose records, group them into the official splits and
                                  write a PYSKL index; report missing/failed/unlabelled/excluded videos
    pack INDEX.pkl OUT.store      any PYSKL pickle -> the memory-mapped dataset store
    export-pyskl STORE OUT.pkl    a store -> a PYSKL pickle (the exchange format)
    fetch NAME [--from FILE]      a published input by name (ntu60_hrnet, ntu120_hrnet, ntu_missing_skeletons)

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
from pipeline.datasets import DATASETS, DatasetError, get_dataset, load_missing_skeletons

log = logging.getLogger("pipeline")


def _cmd_validate(args: argparse.Namespace) -> int:
    """Load FILE with the restricted unpickler and check it (`schema.read_any`: the contract,
    disjoint train/val per protocol, labels within label_names); any refusal is one line."""
    if Path(args.file).is_dir():  # a store (pipeline/store.py): metadata, file sizes and sha256 checked
        from pipeline.store import open_dataset, summarize

        ds = open_dataset(args.file)
        ds.verify()
        print(summarize(ds))
        return 0
    obj = schema.read_any(args.file)
    print(schema.summarize(obj))
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    """PYSKL pickle -> store folder (pipeline/store.py), written atomically."""
    from pipeline.store import pack, summarize

    print(summarize(pack(schema.read_index(args.index), args.out, source=args.index)))
    return 0


def _cmd_export_pyskl(args: argparse.Namespace) -> int:
    """Store (or pickle) -> PYSKL pickle, the exchange format, written atomically."""
    from pipeline.store import export_pyskl, open_dataset, summarize

    ds = open_dataset(args.store)
    export_pyskl(ds, args.out)
    log.info("wrote %s", args.out)
    print(summarize(ds))
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
    given = {
        "--kinetics-csv": bool(args.kinetics_csv),
        "--labels": bool(args.labels),
        "--classes": bool(args.classes),
        "--missing-skeletons": args.missing_skeletons is not None,
        "--keep-missing-skeletons": args.keep_missing_skeletons,
    }
    ntu = {"--missing-skeletons", "--keep-missing-skeletons"}
    allowed = {"kinetics400": {"--kinetics-csv"}, "folder": {"--labels", "--classes"}, "ntu60": ntu, "ntu120": ntu}
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
    if args.dataset in ("ntu60", "ntu120"):
        missing = load_missing_skeletons(args.dataset, path=args.missing_skeletons, keep=args.keep_missing_skeletons)
        return {"missing_skeletons": missing}
    return {}


def _cmd_index(args: argparse.Namespace) -> int:
    from pipeline.index import build_index, format_report, read_video_list

    try:
        dataset = get_dataset(args.dataset, **_dataset_kwargs(args))
        videos = read_video_list(args.videos) if args.videos else None
        index, report = build_index(poses=args.poses, dataset=dataset, video_ids=videos)
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


def _cmd_fetch(args: argparse.Namespace) -> int:
    """Fetch a published input by name (pipeline/fetch.py); print the paths of its files."""
    from pipeline.fetch import FetchError, fetch_input

    try:
        paths = fetch_input(args.name, datasets_dir=args.datasets_dir, from_file=args.from_file)
    except FetchError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("validate", help="validate a pose record or dataset index")
    p.add_argument("file", help="a .pkl pose record or PYSKL dataset index, or a .store folder")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("pack", help="pack a PYSKL dataset pickle into a memory-mapped store folder")
    p.add_argument("index", help="a PYSKL dataset index (.pkl)")
    p.add_argument("out", help="the store folder to write (NAME.store)")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("export-pyskl", help="write a store back as a PYSKL dataset pickle")
    p.add_argument("store", help="a store folder (NAME.store)")
    p.add_argument("out", help="the PYSKL pickle to write (.pkl)")
    p.set_defaults(func=_cmd_export_pyskl)

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
    p.add_argument(
        "--poses",
        required=True,
        metavar="DIR_OR_LIST",
        help="folder of <video_id>.pkl pose records, or a pickle with a list of records "
        "(PYSKL's custom_2d_skeleton.py output)",
    )
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
        "--missing-skeletons",
        default=None,
        metavar="FILE",
        help="ntu60/ntu120: the official list of samples with missing skeletons to exclude "
        "(default: from the data cache, `make fetch DATASET=ntu_missing_skeletons`)",
    )
    p.add_argument(
        "--keep-missing-skeletons",
        action="store_true",
        help="ntu60/ntu120: index the samples with missing skeletons too (no published split does)",
    )
    p.add_argument(
        "--videos",
        default=None,
        metavar="LIST_OR_DIR",
        help="index only these videos (a folder of videos or a file of names)",
    )
    p.add_argument("--out", required=True, help="dataset index to write (.pkl)")
    p.add_argument("--report", default=None, help="also write the full report as JSON")
    p.set_defaults(func=_cmd_index)

    from pipeline.fetch import INPUTS

    p = sub.add_parser(
        "fetch",
        help="download a published input by name (resumable, SHA-256 recorded and checked)",
        description="\n".join(f"  {k:22} {v.about}" for k, v in sorted(INPUTS.items())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=sorted(INPUTS), help="the input")
    p.add_argument(
        "--datasets-dir",
        default="artifacts/datasets",
        help="folder of the dataset pickles (ntu60_hrnet, ...); other inputs go to $RSA_DATA_DIR",
    )
    p.add_argument("--from", dest="from_file", default=None, help="import this local file instead (no network)")
    p.set_defaults(func=_cmd_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, (schema.SchemaError, schema.UnsafePickleError, ConfigError, ImportError))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m pipeline <verb>`: validate, build-demo-dataset, freeze-config.

    validate FILE.pkl             check a pose record or dataset index; print a one-line summary
    build-demo-dataset            build the embedded mocap15 dataset (records + PYSKL index)
    freeze-config CONFIG          resolve YAML + --set into a frozen YAML, rewritten only if changed

Exit status 0 on success, 1 on any failure (one error line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from pipeline import schema
from pipeline.atomic import write_text_if_changed
from pipeline.config import ConfigError, dump_yaml, load_config, resolve_raw

log = logging.getLogger("pipeline")


def _cmd_validate(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    try:
        return args.func(args)
    except (schema.SchemaError, schema.UnsafePickleError, ConfigError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m recognition <verb>`: train, evaluate.

    train     --config C --data INDEX --split xsub|xview|xset --out DIR [--init CK] [--resume]
    evaluate  --checkpoint CK --data INDEX --split xview_val --out DIR [--noise-sigma S] [--faithful]

Exit status 0 on success, 1 on a failure (one error line on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from pipeline.config import ConfigError, load_config
from pipeline.schema import SchemaError, UnsafePickleError
from recognition.checkpoint_import import CheckpointError
from recognition.config import TrainConfig, resolve


def _cmd_train(args: argparse.Namespace) -> int:
    from recognition.train import run_train

    cfg = resolve(load_config(TrainConfig, args.config, args.set))
    run_train(cfg, data=args.data, split=args.split, out=args.out, device=args.device, init=args.init,
              resume=args.resume, halt_after_steps=args.halt_after_steps)  # fmt: skip
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from recognition.evaluate import run_evaluate

    run_evaluate(checkpoint=args.checkpoint, data=args.data, split=args.split, out=args.out, device=args.device,
                 noise_sigma=args.noise_sigma, faithful=args.faithful, batch_size=args.batch_size,
                 allow_pickle=args.allow_pickle)  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recognition", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("train", help="train a model on a dataset index")
    p.add_argument("--config", required=True, help="YAML (configs/recognition/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--data", required=True, help="PYSKL dataset index (.pkl)")
    p.add_argument("--split", required=True, help="split family: xsub, xview, xset (uses <split>_train/_val)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--init", default=None, help="initial weights: ours, or MotionBERT model_pos/model files")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--halt-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("--checkpoint", required=True, help="ours (.pt) or a MotionBERT action file")
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True, help="full split name, e.g. xview_val")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--noise-sigma", type=float, default=0.0, help="Gaussian noise (METHOD §8a)")
    p.add_argument("--faithful", action=argparse.BooleanOptionalAction, default=None,
                   help="official preprocessing quirks (default: the checkpoint's setting)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--allow-pickle", action="store_true", help="allow full unpickling of a trusted foreign file")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    try:
        return args.func(args)
    except (ConfigError, SchemaError, UnsafePickleError, CheckpointError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Progress bars that suit a terminal and a log file alike (every stage's long loops use this).

On a terminal: tqdm as usual (redrawn at most once a second). Redirected to a file (a batch job,
`make ... > log`): at most one update every `LOG_INTERVAL_S` seconds plus the last one, so a log
holds a few lines per loop instead of one per step.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress(iterable: Iterable, *, desc: str, disable: bool = False, leave: bool = False, **kwargs: Any) -> tqdm:
    """`tqdm(iterable)` with the update rate chosen for where stderr goes."""
    tty = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False
    interval = 1.0 if tty else LOG_INTERVAL_S
    kwargs.setdefault("mininterval", interval)
    kwargs.setdefault("maxinterval", max(interval, 10.0))
    return tqdm(iterable, desc=desc, disable=disable, leave=leave, dynamic_ncols=True, file=sys.stderr, **kwargs)

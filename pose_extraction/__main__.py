"""`python -m pose_extraction <verb>`: stage 1 (pose extraction) is not built yet."""

from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("error: pose extraction (stage 1) is not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

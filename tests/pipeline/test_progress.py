"""Progress bars do not flood a log file (pipeline/progress.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_progress_redirected_to_a_file_writes_few_updates(tmp_path):
    log = tmp_path / "log.txt"
    code = (
        "import time\nfrom pipeline.progress import progress\n"
        "for i in progress(range(300), desc='work', leave=True):\n    time.sleep(0.005)\n"
    )
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, stderr=fh, check=True, timeout=120)
    text = log.read_text()
    updates = text.count("\r") + text.count("\n")
    assert "work" in text and "300/300" in text
    assert updates <= 4, text  # first draw, final draw and close; not one per step (300)

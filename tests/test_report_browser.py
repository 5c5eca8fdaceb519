"""The report in headless Chromium (Debian's `chromium`): the page loads, every <img> decodes (naturalWidth > 0), the
tables, the header's choices and a section for each table and figure of the seed are there, and a screenshot is taken.

Opens `artifacts/reports/demo/report.html` (the report of `make demo`) when it exists, else a report built here from
tiny checkpoints. The page's own script writes `data-images-loaded` / `data-images-total` on <body> once the window
has loaded; `--dump-dom` returns the DOM after that. Skips when /usr/bin/chromium is missing
(CI: `apt-get install -y chromium`).
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.recognition.test_report import build_tiny_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DEMO_REPORT = REPO / "artifacts/reports/demo/report.html"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    if DEMO_REPORT.is_file():
        return DEMO_REPORT
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_report(tmp_path_factory.mktemp("browser"))
    finally:
        torch.set_num_threads(threads)


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_report_loads_in_chromium_with_every_image(report_html, tmp_path):
    res = chromium("--dump-dom", report_html.as_uri(), tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stdout[:500]
    total = int(re.search(r'data-images-total="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body.group(0)).group(1))
    assert total >= 10 and loaded == total, f"{loaded} of {total} images decoded"
    assert res.stdout.count("<table>") >= 14  # every section has its table
    assert '<h2 id="choices">Choices</h2>' in res.stdout  # the header's choices: preprocessing, noise, precision
    for title in (
        "Accuracy vs Gaussian noise",
        "Targeted vs random masking",
        "Most confused class pairs",
        "Pose quality",
        *(f"(the seed's {item})" for item in ("Table 3", "Table 4", *(f"Figure {i}" for i in range(1, 10)))),
    ):
        assert title in res.stdout, title

    shot = tmp_path / "report.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1280,2400", report_html.as_uri(), tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert (width, height) == (1280, 2400)

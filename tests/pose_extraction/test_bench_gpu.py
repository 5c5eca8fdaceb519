"""`bench/gpu.py --smoke`: the GPU benchmark's code end to end at tiny sizes on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.pose_extraction.test_extract import REPO


def test_bench_gpu_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run(
        [sys.executable, "bench/gpu.py", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    paths = {(r["what"], r["path"]) for r in rows}
    for est in ("vitpose", "hrnet"):
        for path in ("per-frame loop", "batched, --workers 1", "engine, --workers 2"):
            assert (f"extract {est}", path) in paths
    assert ("decode", "opencv") in paths
    train = [r for r in rows if r["what"].startswith("train dstformer")]
    assert [r["path"] for r in train] == [
        "baseline, fused attention",
        "baseline, explicit attention",
        "maskclr, fused attention",
    ]
    assert all(r["per_s"] > 0 for r in rows) and "vs_baseline" in train[2]
    assert "extract hrnet" in res.stdout and "clips/s" in res.stdout

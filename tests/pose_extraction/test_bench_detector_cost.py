"""`bench/detector_cost.py --smoke`: keyframe detection and detector input size against full detection, end to
end at tiny sizes (random weights: the code runs, the figures mean nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.pose_extraction.test_extract import REPO


def test_bench_detector_cost_smoke(tmp_path):
    out = tmp_path / "cost.json"
    res = subprocess.run(
        [sys.executable, "bench/detector_cost.py", "--smoke", "--estimator", "hrnet", "--device", "cpu"]
        + ["--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["keyframe_interval"], r["input_size"]) for r in rows} == {(1, 128), (4, 128), (1, 96)}
    ref = next(r for r in rows if (r["keyframe_interval"], r["input_size"]) == (1, 128))
    assert ref["missed_pct"] == 0.0 and ref["extra_pct"] == 0.0 and ref["frames"] == 6
    assert (ref["kp_px_mean"] == 0.0) or ref["persons_per_frame"] == 0.0  # the reference agrees with itself
    assert "random weights" in res.stdout


def test_bench_detector_cost_without_weights_is_one_line(tmp_path):
    env_home = {"RSA_WEIGHTS_DIR": str(tmp_path / "empty")}
    res = subprocess.run(
        [sys.executable, "bench/detector_cost.py", "--estimator", "vitpose", "--device", "cpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env_home},
    )
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr[-2000:]
    assert "--random" in res.stderr

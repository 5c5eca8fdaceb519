"""The robustness report end to end on tiny checkpoints and a generated index: two runs, one run, the cache (a re-run
changes no file), the printed reproduction commands, `evaluate` agreement, the cross-estimator table, bad input."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import to_dict
from pipeline.schema import write_index
from recognition.__main__ import main
from recognition.checkpoint import save_checkpoint
from recognition.config import MaskCLRConfig, ModelConfig, TrainConfig
from recognition.evaluate import run_evaluate
from recognition.preprocess import PreprocessOptions
from recognition.report import SECTIONS
from recognition.train import build_model, model_config_of
from tests.helpers import make_index

SMALL = """seeds: [0, 1]
sigmas: [0, 0.005, 0.05]
spatial_sigmas: [0, 0.01]
shift_ks: [1, 3]
mask_ks: [0, 2, 5]
rise_steps: 4
saliency_layers: [0, -1]
tsne_points: 20
batch_size: 8
"""
CSVS = [
    "accuracy",
    "gaussian_noise",
    "spatial_noise",
    "shifted_joints",
    "masking",
    "deletion_insertion",
    "confusion_pairs",
    "classwise_accuracy",
    "pose_quality",
]
PNGS = [
    "gaussian_noise",
    "spatial_noise",
    "shifted_joints",
    "masking",
    "deletion_insertion",
    "confusion_matrices",
    "tsne",
    "attention",
    "noisy_clip",
]


def build_tiny_inputs(root: Path) -> tuple[list[Path], Path, Path]:
    """Two tiny runs (baseline, MaskCLR-shaped) as checkpoint folders, a 4-class index and a small report config."""
    index = make_index(24, num_classes=4, T=20)
    index["label_names"] = ["wave", "sit", "jump", "kick"]
    data = root / "index.pkl"
    write_index(index, data)
    runs = []
    for name, seed, maskclr in (("base", 0, False), ("mclr", 1, True)):
        cfg = TrainConfig(
            model=ModelConfig(preset="tiny", hidden_dim=32, maxlen=16),
            data=PreprocessOptions(clip_len=16),
            maskclr=MaskCLRConfig(enabled=maskclr),
        )
        torch.manual_seed(seed)
        model = build_model(cfg, 4)
        save_checkpoint(
            root / name / "best.pt",
            {
                "model_state": model.state_dict(),
                "model_config": model_config_of(cfg, 4),
                "run_config": to_dict(cfg),
                "label_names": index["label_names"],
                "epoch": 0,
                "split": "xsub",
            },
        )
        runs.append(root / name)
    config = root / "small.yaml"
    config.write_text(SMALL)
    return runs, data, config


def build_tiny_report(root: Path, *, runs: int = 2) -> Path:
    """A complete small report under root/report; returns report.html."""
    run_dirs, data, config = build_tiny_inputs(root)
    argv = [
        "report",
        "--runs",
        *map(str, run_dirs[:runs]),
        "--data",
        str(data),
        "--out",
        str(root / "report"),
        "--config",
        str(config),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    return root / "report/report.html"


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core box, tiny forwards are many times faster without oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report2")
    build_tiny_report(root)
    return root


def test_report_renders_with_two_runs(two_runs):
    out = two_runs / "report"
    for name in CSVS:
        assert (out / f"{name}.csv").is_file(), name
    for name in PNGS:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    page = (out / "report.html").read_text()
    assert page.count("<img ") == len(PNGS) and page.count("data:image/png;base64,") == len(PNGS)
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    for name in SECTIONS:
        assert f"--only {name}" in page, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["runs"] == ["base", "mclr"] and metrics["split"] == "xsub_val"
    gauss = metrics["sections"]["gaussian_noise"]
    assert set(gauss["base"]) == {"0", "0.005", "0.05"}
    assert gauss["base"]["0"]["top1_mean"] == metrics["sections"]["accuracy"]["base"]["top1"]  # σ = 0 is clean
    header = (out / "confusion_pairs.csv").read_text().splitlines()[0]
    assert header == "condition,rank,class_i,class_j,S_base,S_mclr"
    assert "mclr - base clean" in (out / "classwise_accuracy.csv").read_text().splitlines()[0]
    dels = metrics["sections"]["deletion_insertion"]["base"]
    assert set(dels) == {"0", "-1", "random"}
    for curves in dels.values():
        assert len(curves["deletion_curve"]) == 5
    masking = metrics["sections"]["masking"]["base"]
    assert masking["targeted"]["0"] == masking["random"]["0"]  # k = 0 is the clean pass for both
    assert "xsub_val" in (out / "pose_quality.csv").read_text()
    assert "Needs two or more --data" in page


def test_rerun_changes_no_file_and_computes_nothing(two_runs, caplog):
    out = two_runs / "report"
    before = snapshot(out)
    cmd = re.search(r"<p>Produced by:</p><pre>(.*?)</pre>", (out / "report.html").read_text()).group(1)
    argv = shlex.split(cmd.replace("&#x27;", "'"))
    assert argv[:4] == ["python", "-m", "recognition", "report"]
    start = time.perf_counter()
    with caplog.at_level("INFO"):
        assert main(argv[3:]) == 0
    assert time.perf_counter() - start < 60
    assert snapshot(out) == before
    assert "0 computed; files changed: none" in caplog.text


def test_only_command_regenerates_its_table(two_runs, capsys):
    out = two_runs / "report"
    page = (out / "report.html").read_text()
    before = snapshot(out)
    for name in ("gaussian_noise", "masking"):
        cmd = re.search(rf"<pre>(python -m recognition report [^<]*--only {name})</pre>", page).group(1)
        capsys.readouterr()
        assert main(shlex.split(cmd)[3:]) == 0
        assert capsys.readouterr().out == (out / f"{name}.csv").read_text()
    assert snapshot(out) == before


def test_gaussian_numbers_match_evaluate(two_runs, tmp_path):
    """The row of the run's own seed is what `python -m recognition evaluate --noise-sigma` gives."""
    metrics = json.loads((two_runs / "report/metrics.json").read_text())
    for sigma in ("0.005", "0.05"):
        ev = run_evaluate(
            checkpoint=two_runs / "base/best.pt",
            data=two_runs / "index.pkl",
            split="xsub_val",
            out=tmp_path / sigma,
            device="cpu",
            noise_sigma=float(sigma),
        )
        assert ev["top1"] == metrics["sections"]["gaussian_noise"]["base"][sigma]["top1_per_seed"]["0"]
    clean = run_evaluate(
        checkpoint=two_runs / "mclr/best.pt",
        data=two_runs / "index.pkl",
        split="xsub_val",
        out=tmp_path / "clean",
        device="cpu",
    )
    assert clean["top1"] == metrics["sections"]["accuracy"]["mclr"]["top1"]


def test_report_renders_with_one_run(two_runs, tmp_path):
    out = tmp_path / "one"
    shutil.copytree(two_runs / "report/cache", out / "cache")  # keys are contents, not paths: all hits
    argv = [
        "report",
        "--runs",
        str(two_runs / "base"),
        "--data",
        str(two_runs / "index.pkl"),
        "--out",
        str(out),
        "--config",
        str(two_runs / "small.yaml"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PNGS)
    assert (out / "confusion_pairs.csv").read_text().splitlines()[0] == "condition,rank,class_i,class_j,S_base"
    assert " - " not in (out / "classwise_accuracy.csv").read_text().splitlines()[0]
    assert json.loads((out / "metrics.json").read_text())["runs"] == ["base"]


def test_cross_estimator_table(tmp_path):
    run_dirs, data, config = build_tiny_inputs(tmp_path)
    from pipeline.schema import read_index

    other = read_index(data)
    for ann in other["annotations"]:
        ann["keypoint"] = ann["keypoint"] + np.float32(25.0)
        ann["keypoint_score"][:, :, :2] = 0.0  # an estimator that misses the eyes
        ann["estimator"] = {"name": "other", "weights": "", "version": "1"}
    data2 = tmp_path / "other.pkl"
    write_index(other, data2)
    out = tmp_path / "rep"
    argv = [
        "report",
        "--runs",
        *map(str, run_dirs),
        "--data",
        str(data),
        str(data2),
        "--out",
        str(out),
        "--config",
        str(config),
        "--device",
        "cpu",
    ]
    assert main([*argv, "--only", "cross_estimator", "--only", "pose_quality"]) == 0
    rows = (out / "cross_estimator.csv").read_text().splitlines()
    assert rows[0] == "run,index (random),other (other)" and len(rows) == 3
    quality = (out / "pose_quality.csv").read_text()
    assert "other,other,xsub_val" in quality
    miss = [float(r.split(",")[5]) for r in quality.splitlines()[1:] if r.startswith("other,")]
    assert all(m == pytest.approx(100 * 2 / 17) for m in miss)
    assert not (out / "report.html").exists()  # --only writes only its sections


def test_bad_input(tmp_path, capsys):
    run_dirs, data, config = build_tiny_inputs(tmp_path)
    base = ["report", "--runs", str(run_dirs[0]), "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cpu"]
    assert main([*base, "--only", "nonsense"]) == 1
    assert "unknown report section" in capsys.readouterr().err
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("sigma: [0.1]\n")
    assert main([*base, "--config", str(bad_cfg)]) == 1
    assert "did you mean 'sigmas'" in capsys.readouterr().err
    assert main([*base, "--split", "nope_val", "--only", "accuracy"]) == 1
    assert "nope_val" in capsys.readouterr().err


def test_report_leaves_gradients_on(two_runs):
    """run_report scopes no_grad; it used to switch gradients off for the whole process (and the tests after it)."""
    assert torch.is_grad_enabled()

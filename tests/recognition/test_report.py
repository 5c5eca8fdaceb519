"""The robustness report end to end on tiny checkpoints and a generated index: two runs, one run, the cache (a re-run
changes no file), the printed reproduction commands, `evaluate` agreement, the cross-estimator table, bad input; and
each section as the seed defines it (docs/method.md §8): one noise mode for every run, class-wise accuracy at
σ = 0.002, Table 4's four blocks and failure shares, deletion/insertion on accuracy per layer, both readings of shifted
joints, the header's choices, the clip of Figure 9."""

from __future__ import annotations

import csv
import html
import json
import re
import shlex
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.config import load_config, to_dict
from pipeline.schema import write_index
from recognition import diagnostics as dg
from recognition.__main__ import main
from recognition.checkpoint import save_checkpoint
from recognition.config import MaskCLRConfig, ModelConfig, RandomMaskConfig, TrainConfig, resolve
from recognition.evaluate import run_evaluate
from recognition.preprocess import PreprocessOptions
from recognition.report import (
    SECTIONS,
    ReportConfig,
    model_label,
    pick_attention_clip,
    run_report,
    saliency_layers_of,
)
from recognition.train import build_model, model_config_of
from tests.helpers import make_index

SMALL = """seeds: [0, 1, 2]
sigmas: [0, 0.002, 0.005, 0.05]
spatial_sigmas: [0, 0.01]
shift_ks: [1, 3]
mask_ks: [0, 2, 5]
rise_steps: 4
rise_random_baseline: true
sweep_clips: 8
tsne_points: 20
batch_size: 8
"""
CSVS = list(SECTIONS)  # every section has its CSV
PNGS = [
    "gaussian_noise",
    "spatial_noise",
    "shifted_joints",
    "masking",
    "deletion_insertion",
    "classwise_accuracy",
    "confusion_matrices",
    "tsne",
    "attention",
    "noisy_clip",
]


def build_tiny_inputs(root: Path, *, faithful_base: bool = False) -> tuple[list[Path], Path, Path]:
    """Two tiny runs (baseline, MaskCLR-shaped) as checkpoint folders, a 4-class index and a small report config.

    The index mixes one-person and two-person clips. `faithful_base`: the baseline is a `faithful: true` run, whose
    own resolved noise mode is the official broadcast (F6).
    """
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
            faithful=faithful_base and not maskclr,
        )
        cfg = resolve(cfg)
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
        assert f"<section id='{name}'>" in page, name  # every section is on the page, with its CSV
        assert f"<code>{name}.csv</code>" in page, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["runs"] == ["base", "mclr"] and metrics["split"] == "xsub_val"
    assert metrics["models"] == {"base": "MotionBERT", "mclr": "MaskCLR"}
    gauss = metrics["sections"]["gaussian_noise"]
    assert set(gauss["base"]) == {"0", "0.002", "0.005", "0.05"}
    assert gauss["base"]["0"]["top1_mean"] == metrics["sections"]["accuracy"]["base"]["top1"]  # σ = 0 is clean
    assert all(len(point["top1_per_seed"]) == 3 for point in gauss["base"].values())  # 3 seeds per noise point
    masking = metrics["sections"]["masking"]["base"]
    assert masking["targeted"]["0"]["top1"] == masking["random"]["0"]["top1"]  # k = 0 is the clean pass for both
    assert "xsub_val" in (out / "pose_quality.csv").read_text()
    assert "Needs two or more --data" in page
    seed_items = ["Table 3", "Table 4", *(f"Figure {i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9))]
    for title in seed_items:  # every table and figure of the seed's supplementary has its section
        assert f"the seed&#x27;s {title}" in page, title


def test_header_states_the_choices(two_runs):
    """Preprocessing per run, the one noise mode, precision and seeds: what makes two reports comparable."""
    page = (two_runs / "report/report.html").read_text()
    choices = json.loads((two_runs / "report/metrics.json").read_text())["choices"]
    assert "fixed preprocessing" in choices["run base"] and "MaskCLR" in choices["run mclr"]
    assert choices["Gaussian noise mode"].startswith("independent per person, the same for every run")
    assert choices["precision"].startswith("float32 on every device")
    assert choices["seeds"].startswith("0, 1, 2:")
    header = page[: page.index("<ul>")]  # before the table of contents
    assert "<h2 id='choices'>Choices</h2>" in header
    for value in choices.values():
        assert html.escape(value) in header


def test_one_noise_mode_for_every_run(tmp_path):
    """A faithful run (its own mode: the F6 broadcast) and a fixed run get the report's noise mode (default:
    independent per person), so both are compared under the same noise on two-person clips."""
    run_dirs, data, config = build_tiny_inputs(tmp_path, faithful_base=True)
    cfg = ReportConfig(seeds=(0, 1, 2), sigmas=(0.0, 0.05), batch_size=8)
    out = tmp_path / "rep"
    only = ["gaussian_noise", "accuracy"]
    metrics = run_report(runs=run_dirs, data=[data], out=out, cfg=cfg, command=["report"], device="cpu", only=only)
    keys = [json.loads(p.read_text()) for p in (out / "cache").glob("*.json") if p.name != "files.json"]
    modes = {(k["checkpoint"], k["noise_per_person"]) for k in keys if k["perturbation"]["kind"] == "gaussian"}
    assert len(modes) == 2 and {mode for _, mode in modes} == {True}  # both runs, one mode
    rows = (out / "accuracy.csv").read_text().splitlines()
    assert ",True,faithful," in rows[1] and ",False,fixed," in rows[2]  # the runs do differ in preprocessing
    choices = metrics["choices"]
    assert "faithful preprocessing" in choices["run base"] and "the report's mode applies" in choices["run base"]
    assert "fixed preprocessing" in choices["run mclr"] and "mode applies" not in choices["run mclr"]
    broadcast = load_config(ReportConfig, config, ["noise_per_person=false"])
    assert broadcast.noise_per_person is False


def test_classwise_accuracy_at_sigma_0002(two_runs):
    """The seed's Figure 3 is at σ = 0.002 (the confusion matrices, Figure 7, at 0.005)."""
    out = two_runs / "report"
    header = (out / "classwise_accuracy.csv").read_text().splitlines()[0].split(",")
    assert "base sigma=0.002" in header and "mclr - base sigma=0.002" in header and "mclr - base clean" in header
    assert not any("0.005" in h for h in header)
    metrics = json.loads((out / "metrics.json").read_text())["sections"]
    assert set(metrics["classwise_accuracy"]) == {"clean", "sigma=0.002"}
    assert set(metrics["confusion_matrices"]) == {"sigma=0.005"}
    assert "base sigma=0.002 std" in header  # mean and std over the 3 seeds


def test_table4_has_four_blocks_and_the_failure_share(two_runs):
    out = two_runs / "report"
    header, *rows = csv.reader((out / "confusion_pairs.csv").read_text().splitlines())
    assert header == ["ranked_by", "condition", "rank", "class_i", "class_j", "S_base", "S_mclr"]
    blocks = {(r[0], r[1]) for r in rows}
    assert blocks == {("base", "clean"), ("base", "sigma=0.005"), ("mclr", "clean"), ("mclr", "sigma=0.005")}
    metrics = json.loads((out / "metrics.json").read_text())["sections"]
    for run, col in (("base", 5), ("mclr", 6)):
        block = [r for r in rows if r[0] == run and r[1] == "clean"]
        assert block[-1][2].startswith("share of all failures") and len(block) - 1 <= 5
        s_sum = sum(float(r[col]) for r in block[:-1])
        acc = metrics["accuracy"][run]
        failures = acc["n"] * (1 - acc["top1"] / 100)
        share = metrics["confusion_pairs"][run]["clean"]["own_failure_share_pct"]
        assert float(block[-1][col]) == pytest.approx(share, abs=1e-4)
        assert share == pytest.approx(100 * s_sum / failures) if failures else share == 0.0


def test_deletion_and_insertion_on_accuracy_per_layer(two_runs):
    """Figure 1: AUCs on accuracy (the seed's measure) for the first, middle and last layer; probability labelled."""
    out = two_runs / "report"
    metrics = json.loads((out / "metrics.json").read_text())["sections"]
    for run in ("base", "mclr"):
        dels = metrics["deletion_insertion"][run]
        assert set(dels) == {"0", "1", "random"}  # the tiny preset serves 2 layers: first (= middle) and last
        assert dels["0"]["label"] == "attention, block 1 of 2 (first)"
        assert dels["1"]["label"] == "attention, block 2 of 2 (last)"
        clean = metrics["accuracy"][run]["top1"]
        for entry in dels.values():
            acc, prob = entry["accuracy"], entry["probability"]
            assert len(acc["deletion_curve"]) == 5 and len(prob["deletion_curve"]) == 5
            assert acc["deletion_curve"][0] == pytest.approx(clean)  # step 0: the clean input, every clip
            assert acc["insertion_curve"][-1] == pytest.approx(clean)  # every real token back: the clean input
            assert acc["deletion_auc"] == pytest.approx(dg.rise_auc(acc["deletion_curve"]))
            assert 0 <= prob["deletion_auc"] <= 1
    rows = (out / "deletion_insertion.csv").read_text().splitlines()
    assert rows[0] == "run,saliency,score,deletion_auc,insertion_auc"
    assert sum(",accuracy," in r for r in rows) == sum(",probability," in r for r in rows) == 6


def test_saliency_layers_are_first_middle_and_last():
    def run(depth):
        return SimpleNamespace(name="r", model=SimpleNamespace(backbone=SimpleNamespace(attention_layers=depth)))

    assert saliency_layers_of(run(5), ()) == [
        (0, "attention, block 1 of 5 (first)"),
        (2, "attention, block 3 of 5 (middle)"),
        (4, "attention, block 5 of 5 (last)"),
    ]
    only = saliency_layers_of(run(1), ())
    assert only == [(0, "attention, last block (the only layer this backbone serves)")]
    assert [i for i, _ in saliency_layers_of(run(5), (-1, 1))] == [1, 4]
    with pytest.raises(ValueError, match="out of range"):
        saliency_layers_of(run(2), (3,))


def test_shifted_joints_in_both_readings(two_runs):
    """Figure 5: re-drawn in every frame (jitter) and drawn once and held, labelled, over the same k and seeds."""
    out = two_runs / "report"
    rows = list(csv.reader((out / "shifted_joints.csv").read_text().splitlines()))
    assert rows[0] == ["run", "variant", "k", "top1_mean", "top1_std", "top1_seed0", "top1_seed1", "top1_seed2"]
    assert {r[1] for r in rows[1:]} == {"re-drawn every frame (jitter)", "drawn once per clip, held"}
    metrics = json.loads((out / "metrics.json").read_text())["sections"]["shifted_joints"]["base"]
    assert set(metrics) == {"re-drawn every frame (jitter)", "drawn once per clip, held"}
    for per_k in metrics.values():
        assert set(per_k) == {"0", "1", "3"}
    page = (out / "report.html").read_text()
    assert page.count("On a fixed random subset of 8 clips (sweep_clips") == 2  # shifted joints and masking


def test_attention_clip_rule():
    labels = np.array([2, 1, 0, 1, 0, 1])
    names = np.array([f"c{i}" for i in range(6)])
    clip, rule = pick_attention_clip(labels, names, ["sit", "Drink_Water.", "jump"], split="xsub_val")
    assert clip == "c1" and "'Drink_Water.'" in rule  # the first clip of the class named like "drink water"
    clip, rule = pick_attention_clip(labels, names, ["sit", "wave", "jump"], split="xsub_val")
    assert clip == "c1" and "most frequent class, 'wave'" in rule
    clip, _ = pick_attention_clip(np.array([2, 0, 2, 0]), names[:4], ["a", "b", "c"], split="s")
    assert clip == "c1"  # a tie goes to the lower class index


def test_motionbert_r_is_labelled():
    cfg = TrainConfig(random_mask=RandomMaskConfig(ratio=0.3))
    assert model_label(SimpleNamespace(run_config=to_dict(cfg), cfg=cfg)) == "MotionBERT-R"
    mclr = TrainConfig(maskclr=MaskCLRConfig(enabled=True), model=ModelConfig(backbone="sttformer"))
    assert model_label(SimpleNamespace(run_config=to_dict(mclr), cfg=mclr)) == "MaskCLR (sttformer)"
    assert model_label(SimpleNamespace(run_config=None, cfg=TrainConfig())) == "official checkpoint"


def test_shipped_report_config_follows_the_protocol():
    """configs/report/default.yaml (the demo's): 3 seeds, one noise mode, Figure 3 at 0.002, Figure 7 at 0.005."""
    cfg = load_config(ReportConfig, Path(__file__).resolve().parents[2] / "configs/report/default.yaml")
    assert len(cfg.seeds) >= 3 and len(ReportConfig().seeds) >= 3
    assert cfg.noise_per_person is True and cfg.classwise_sigma == 0.002 and cfg.failure_sigma == 0.005
    assert {cfg.classwise_sigma, cfg.failure_sigma} <= set(cfg.sigmas)  # shared with the sweep: cached once


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
    assert (out / "confusion_pairs.csv").read_text().splitlines()[
        0
    ] == "ranked_by,condition,rank,class_i,class_j,S_base"
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

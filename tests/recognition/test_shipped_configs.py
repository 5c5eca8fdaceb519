"""The shipped run configs (configs/recognition/): each loads strictly, says in its name what it is, builds its model at
full size and runs one training step at batch 2 on a short clip; `make configs` lists every one; Make finds the
config from the dataset's family; a config refuses another family's index."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import load_config
from pipeline.schema import write_index
from recognition.config import FAMILY_CLASSES, TrainConfig, check_family, resolve, split_names
from recognition.runtime import Dist
from recognition.shipped import CONFIG_DIR, FAMILY_SPLITS, find_config, parse_name, shipped_configs
from recognition.train import random_token_mask, setup, train_one_epoch
from tests.helpers import make_record
from tests.test_make import REPO, make

SHIPPED = shipped_configs()
PAPER = [c for c in SHIPPED if c.family != "mocap15"]
SHORT = 12  # frames of the one-step clips (a multiple of STTFormer's tuple length 6)


def test_every_yaml_follows_the_naming_convention():
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert sorted(c.path.name for c in SHIPPED) == names
    # the paper's experiments: three families x (scratch, finetuned, -R, MaskCLR on DSTFormer; baseline and MaskCLR on
    # the transformer and STTFormer)
    for family in ("ntu60", "ntu120", "kinetics400"):
        got = {(c.model, c.backbone) for c in PAPER if c.family == family}
        want = {(m, "dstformer") for m in ("motionbert", "motionbert_ft", "motionbert_r", "maskclr")}
        want |= {(m, b) for m in ("motionbert", "maskclr") for b in ("transformer", "sttformer")}
        assert got == want, family
    with pytest.raises(ValueError, match="not named"):
        parse_name(Path("maskclr_ntu61.yaml"))


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda c: c.path.name)
def test_config_loads_strictly_and_matches_its_name(shipped):
    cfg = resolve(load_config(TrainConfig, shipped.path))
    assert cfg.model.backbone == shipped.backbone
    assert cfg.maskclr.enabled == (shipped.model == "maskclr")
    assert (cfg.random_mask.ratio > 0) == (shipped.model == "motionbert_r")
    if shipped.family == "mocap15":
        assert cfg.dataset is None
        return
    assert cfg.dataset == shipped.family
    assert cfg.data.clip_len == cfg.model.maxlen == 243
    assert cfg.model.preset == "base"  # STTFormer's base is the seed's width 512, depth 5
    if shipped.model == "motionbert_r":
        assert cfg.random_mask.ratio == 0.15
    # the official recipes: MotionBERT's MB_train / MB_ft, MaskCLR's maskclrv2 (docs/method.md §7)
    head = {"motionbert": 1e-4, "motionbert_r": 1e-4, "motionbert_ft": 1e-3, "maskclr": 1e-3}[shipped.model]
    batch = 4 if shipped.model == "maskclr" else 32
    assert (cfg.optim.lr_backbone, cfg.optim.lr_head, cfg.optim.batch_size) == (1e-4, head, batch)
    assert (cfg.optim.weight_decay, cfg.optim.lr_decay, cfg.optim.epochs) == (0.01, 0.99, 300)
    assert cfg.optim.num_workers > 0 and cfg.optim.pin_memory
    # each hyper-parameter line carries a comment naming its source
    for line in shipped.path.read_text().splitlines():
        if line.startswith("  ") and ":" in line and not line.strip().startswith(("backbone:", "enabled:")):
            assert "#" in line, f"{shipped.path.name}: no source comment on {line.strip()!r}"


def _family_index(family: str, path: Path) -> Path:
    """Two training and two validation clips of SHORT frames under the family's label names and first protocol."""
    names = [f"class {i}" for i in range(FAMILY_CLASSES[family])]
    anns = [
        make_record(M=1 + i % 2, T=SHORT + i, seed=i, frame_dir=f"c{i}", label=(7 * i) % len(names)) for i in range(4)
    ]
    train, val = split_names(FAMILY_SPLITS[family][0])
    index = {
        "split": {train: ["c0", "c1"], val: ["c2", "c3"]},
        "annotations": anns,
        "label_names": names,
        "dataset": family,
    }
    write_index(index, path)
    return path


@pytest.mark.parametrize("shipped", PAPER, ids=lambda c: c.path.name)
def test_config_builds_and_trains_one_step_at_batch_2(shipped, tmp_path):
    """The full-size model of every paper config takes one optimiser step (CPU, batch 2, a short clip, no workers)."""
    overrides = [f"data.clip_len={SHORT}", "optim.batch_size=2", "optim.num_workers=0"]
    cfg = resolve(load_config(TrainConfig, shipped.path, overrides))
    data = _family_index(shipped.family, tmp_path / "index.pkl")
    torch.manual_seed(0)
    env = Dist(rank=0, world=1, device=torch.device("cpu"))
    run = setup(cfg, env, data=data, split=shipped.splits[0], out=tmp_path, init=None, resume=False)
    before = [p.detach().clone() for p in run.core.parameters()]
    metrics = train_one_epoch(run, 0, masked=cfg.maskclr.enabled)
    assert len(run.train_loader) == 1 and math.isfinite(metrics["train_loss"])
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, run.core.parameters()))
    assert changed > len(before) // 2, f"{shipped.path.name}: only {changed}/{len(before)} tensors were updated"
    if cfg.maskclr.enabled:
        assert "train_loss_sc" in metrics and "train_loss_cc" in metrics


def test_make_configs_lists_every_shipped_config():
    res = make("configs")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["model", "backbone", "family", "splits", "file"]
    for c in SHIPPED:
        row = f"configs/recognition/{c.path.name}"
        match = [ln.split() for ln in lines if ln.endswith(row)]
        assert match == [[c.model, c.backbone, c.family, ",".join(c.splits), row]], c.path.name


def test_make_train_finds_the_config_from_the_dataset_family(tmp_path):
    """`make train MODEL=maskclr DATASET=ntu60_vitpose SPLIT=xsub` freezes maskclr_ntu60.yaml (and its motionbert_ntu60
    baseline) with the ntu60_vitpose index; no file to write."""
    index = _family_index("ntu60", tmp_path / "datasets" / "ntu60_vitpose.pkl")
    res = make("-n", "train", "MODEL=maskclr", "DATASET=ntu60_vitpose", "SPLIT=xsub", f"ART={tmp_path}")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert (
        f"freeze-config configs/recognition/maskclr_ntu60.yaml  --out {tmp_path}/runs/maskclr_ntu60_vitpose_xsub" in out
    )
    assert "freeze-config configs/recognition/motionbert_ntu60.yaml" in out
    assert f"--data {index} --split xsub --out {tmp_path}/runs/maskclr_ntu60_vitpose_xsub" in out
    assert f"--init {tmp_path}/runs/motionbert_ntu60_vitpose_xsub/best.pt" in out
    assert "--split xsub_val" in out
    # the default protocol follows the family; Kinetics400 and folder indexes use train/val
    res = make("-n", "train", "MODEL=motionbert", "DATASET=kinetics400_hrnet", f"ART={tmp_path}", f"INDEX={index}")
    assert (
        "recognition/maskclr" not in res.stdout
        and "freeze-config configs/recognition/motionbert_kinetics400.yaml" in res.stdout
    )
    assert "--split train --out" in res.stdout and "--split val --out" in res.stdout


def test_make_train_errors_are_one_line(tmp_path):
    res = make("train", "MODEL=maskclr", "DATASET=ntu61_vitpose", f"ART={tmp_path}")
    assert res.returncode != 0
    assert "no shipped config for MODEL=maskclr BACKBONE=dstformer on ntu61_vitpose (family ntu61)" in res.stderr
    assert "Traceback" not in res.stderr
    res = make("train", "MODEL=maskclr", "DATASET=ntu60_vitpose", "SPLIT=xsub", f"ART={tmp_path}")
    assert res.returncode != 0
    assert f"no dataset index {tmp_path}/datasets/ntu60_vitpose.pkl" in res.stderr and "make fetch" in res.stderr


def test_a_config_refuses_another_familys_index(tmp_path):
    """The NTU60 config given NTU120 labels: one line naming the index and both families, exit 1, nothing written."""
    cfg = resolve(load_config(TrainConfig, find_config("motionbert", "dstformer", "ntu60")))
    with pytest.raises(ValueError, match=r"x.pkl: a ntu120 index of 120 classes, but the config is for ntu60"):
        check_family(cfg, family="ntu120", num_classes=120, source="x.pkl")
    with pytest.raises(ValueError, match="an index of 15 classes, but the config is for ntu60"):
        check_family(cfg, family=None, num_classes=15, source="x.pkl")
    check_family(cfg, family=None, num_classes=60, source="x.pkl")  # a PYSKL pickle names no family
    data = _family_index("ntu120", tmp_path / "ntu120.pkl")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recognition", "train", "--config", str(find_config("maskclr", "dstformer", "ntu60"))]
    cmd += ["--data", str(data), "--split", "xsub", "--out", str(out), "--set", "data.clip_len=12"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "but the config is for ntu60 (60 classes)" in lines[0] and str(data) in lines[0]
    assert not out.exists()


def test_split_names_of_a_protocol():
    assert split_names("xsub") == ("xsub_train", "xsub_val")
    for plain in ("", "train", "all"):
        assert split_names(plain) == ("train", "val")


def test_motionbert_r_masks_its_ratio_of_each_real_persons_tokens():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 20, 17, 3)
    x[1, 1] = 0  # a padded second person
    mask = random_token_mask(x, 0.15)
    k = round(0.15 * 20 * 17)
    per_person = mask.flatten(2).sum(-1)
    assert per_person[1, 1] == 0
    assert [int(v) for v in per_person.flatten()] == [k, k, k, 0, k, k]
    # different draws for different persons and steps
    assert not torch.equal(mask[0, 0], mask[0, 1]) and not torch.equal(mask, random_token_mask(x, 0.15))


def test_the_configs_yaml_is_plain():
    """No anchors, no inheritance: each file alone says everything (`yaml.safe_load` of it is what runs)."""
    for c in SHIPPED:
        text = c.path.read_text()
        assert "&" not in text and "<<" not in text, c.path.name
        assert isinstance(yaml.safe_load(text), dict)
    assert np.all([c.path.parent == CONFIG_DIR for c in SHIPPED])


def test_head_lr_follows_the_recipe_unless_set(tmp_path):
    """Unset `optim.lr_head` is MotionBERT's: 1e-4 from scratch (MB_train), 1e-3 when --init loads weights (MB_ft);
    the value that ran is what config.yaml records."""
    from recognition.config import head_lr_for
    from recognition.train import run_train

    cfg = TrainConfig()
    assert cfg.optim.lr_head is None
    assert head_lr_for(cfg, init=False).optim.lr_head == 1e-4
    assert head_lr_for(cfg, init=True).optim.lr_head == 1e-3
    fixed = load_config(TrainConfig, None, ["optim.lr_head=5e-4"])
    assert head_lr_for(fixed, init=True).optim.lr_head == head_lr_for(fixed, init=False).optim.lr_head == 5e-4
    tiny = ["model.preset=tiny", "model.hidden_dim=16", "model.maxlen=12", "optim.epochs=1", "optim.batch_size=2"]
    cfg = resolve(load_config(TrainConfig, None, [*tiny, f"data.clip_len={SHORT}"]))
    data = _family_index("ntu60", tmp_path / "index.pkl")
    run_train(cfg, data=data, split="xsub", out=tmp_path / "scratch")
    assert yaml.safe_load((tmp_path / "scratch/config.yaml").read_text())["optim"]["lr_head"] == 1e-4
    run_train(cfg, data=data, split="xsub", out=tmp_path / "ft", init=str(tmp_path / "scratch/best.pt"))
    assert yaml.safe_load((tmp_path / "ft/config.yaml").read_text())["optim"]["lr_head"] == 1e-3


def test_make_train_motionbert_ft_needs_the_pretrained_backbone(tmp_path, monkeypatch):
    """MODEL=motionbert_ft passes the cached pretrained backbone as --init; without it, one line saying how to get it,
    and no training from scratch in its place."""
    index = _family_index("ntu60", tmp_path / "datasets" / "ntu60_hrnet.pkl")
    monkeypatch.setenv("RSA_WEIGHTS_DIR", str(tmp_path / "weights"))  # an empty weights cache
    res = make("train", "MODEL=motionbert_ft", "DATASET=ntu60_hrnet", "SPLIT=xsub", f"ART={tmp_path}")
    assert res.returncode != 0
    assert "run `make weights MODEL=motionbert`" in res.stderr
    assert not (tmp_path / "runs/motionbert_ft_ntu60_hrnet_xsub/best.pt").exists()
    res = make("-n", "train", "MODEL=motionbert_ft", "DATASET=ntu60_hrnet", "SPLIT=xsub", f"ART={tmp_path}")
    assert "init=$(.venv/bin/python -m pose_extraction weights motionbert --path) &&" in res.stdout
    assert '--init "$init" --allow-pickle' in res.stdout and str(index) in res.stdout

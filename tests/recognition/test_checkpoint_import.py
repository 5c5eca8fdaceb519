"""Importing MotionBERT's official checkpoint layouts (`model_pos` pretrained, `model` finetuned)."""

from __future__ import annotations

import argparse

import pytest
import torch

from recognition.checkpoint_import import (
    CheckpointError,
    load_into,
    load_motionbert_into,
    load_motionbert_state,
)
from recognition.models.action import ActionModel, build_action_model

V = 17


def make_model(*, num_classes: int = 5, use_mask_token: bool = False, seed: int = 0) -> ActionModel:
    torch.manual_seed(seed)
    model = build_action_model(
        num_classes=num_classes, preset="tiny", hidden_dim=32, maxlen=12, use_mask_token=use_mask_token
    )
    with torch.no_grad():  # non-trivial BN statistics and fusion weights, so a copy is really tested
        model.head.bn.running_mean.normal_()
        model.head.bn.running_var.uniform_(0.5, 1.5)
        for fuse in model.backbone.ts_attn:
            fuse.weight.normal_()
    return model.eval()


def save_official(path, model: ActionModel, *, layout: str) -> None:
    """Write `model` as MotionBERT does: DataParallel `module.` names plus training state."""
    sd = model.state_dict()
    if layout == "model_pos":
        backbone = {"module." + k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
        payload = {
            "model_pos": backbone,
            "epoch": 10,
            "lr": 2e-4,
            "optimizer": {"state": {}, "param_groups": []},
            "min_loss": 1.5,
        }
    else:
        payload = {
            "model": {"module." + k: v for k, v in sd.items()},
            "epoch": 3,
            "lr": 1e-3,
            "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-3}]},
            "best_acc": 90.0,
        }
    torch.save(payload, path)


def test_action_layout_round_trip(tmp_path) -> None:
    source = make_model(seed=0)
    save_official(tmp_path / "best_epoch.bin", source, layout="model")
    state, kind = load_motionbert_state(tmp_path / "best_epoch.bin")
    assert kind == "motionbert_action"
    assert set(state) == set(source.state_dict())
    target = make_model(seed=1)
    assert load_into(target, state) == []
    x = torch.randn(2, 2, 9, V, 3)
    with torch.no_grad():
        assert torch.equal(target(x).logits, source(x).logits)


def test_pretrained_layout_round_trip(tmp_path) -> None:
    source = make_model(seed=0)
    save_official(tmp_path / "latest_epoch.bin", source, layout="model_pos")
    state, kind = load_motionbert_state(tmp_path / "latest_epoch.bin")
    assert kind == "motionbert_pretrained"
    assert all(k.startswith("backbone.") for k in state) and "backbone.head.weight" in state
    target = make_model(seed=1)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    with pytest.raises(CheckpointError, match="head.fc1.weight"):  # strict unless head.* is allowed
        load_into(target, state)
    left_out = load_into(target, state, allow_missing_prefixes=("head.",))
    assert left_out == sorted(f"head.{k}" for k in head_before)
    assert all(torch.equal(v, target.head.state_dict()[k]) for k, v in head_before.items())
    x = torch.randn(4, 9, V, 3)
    with torch.no_grad():
        assert torch.equal(target.backbone(x), source.backbone(x))


def test_mask_token_model_from_official_files(tmp_path) -> None:
    save_official(tmp_path / "pre.bin", make_model(), layout="model_pos")
    save_official(tmp_path / "act.bin", make_model(), layout="model")
    target = make_model(use_mask_token=True, seed=2)
    with pytest.raises(CheckpointError, match="backbone.mask_token"):
        load_into(target, load_motionbert_state(tmp_path / "act.bin")[0])
    assert load_motionbert_into(target, tmp_path / "act.bin") == "motionbert_action"
    assert load_motionbert_into(target, tmp_path / "pre.bin") == "motionbert_pretrained"


def test_only_a_leading_module_prefix_is_stripped(tmp_path) -> None:
    w = torch.ones(2)
    torch.save({"model": {"module.backbone.x": w, "head.y": w, "backbone.module.z": w}}, tmp_path / "f.bin")
    state, _ = load_motionbert_state(tmp_path / "f.bin")
    assert set(state) == {"backbone.x", "head.y", "backbone.module.z"}


def test_mismatches_name_the_keys(tmp_path) -> None:
    model = make_model()
    sd = model.state_dict()
    extra = {**sd, "backbone.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): \['backbone.extra.weight'\]"):
        load_into(model, extra)
    missing = {k: v for k, v in sd.items() if k != "backbone.norm.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): \['backbone.norm.bias'\]"):
        load_into(model, missing)
    wrong_shape = {**sd, "backbone.pos_embed": torch.zeros(1, 16, 32)}
    with pytest.raises(CheckpointError, match=r"backbone.pos_embed: model \(1, 17, 32\) vs checkpoint \(1, 16, 32\)"):
        load_into(model, wrong_shape)


def test_class_count_mismatch(tmp_path) -> None:
    save_official(tmp_path / "ntu120.bin", make_model(num_classes=120), layout="model")
    with pytest.raises(CheckpointError, match="checkpoint has 120 classes, model has 60"):
        load_motionbert_into(make_model(num_classes=60), tmp_path / "ntu120.bin")


def test_layout_and_pickle_errors(tmp_path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="'model_pos'.*state_dict"):
        load_motionbert_state(tmp_path / "other.bin")
    torch.save({"model": {"head.y": torch.ones(1)}, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.bin")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_motionbert_state(tmp_path / "pickled.bin")
    state, kind = load_motionbert_state(tmp_path / "pickled.bin", allow_pickle=True)
    assert kind == "motionbert_action" and set(state) == {"head.y"}

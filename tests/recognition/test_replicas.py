"""`optim.replica_groups: 2` reproduces the official 2-replica DataParallel split of a batch of 4 in one process:
AGPM per replica (two calls on halves, bit for bit under one seed), BatchNorm statistics per group of 2 with the
first replica's running statistics kept, and the losses over all 4 (docs/method.md §7.2)."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.config import load_config
from pipeline.schema import write_index
from recognition.config import TrainConfig, resolve
from recognition.maskclr.agpm import agpm_mask
from recognition.models.action import build_action_model
from recognition.replicas import per_replica, replica_forward
from recognition.runtime import Dist
from recognition.train import run_train, setup
from tests.helpers import make_index


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_action_model(num_classes=5, preset="tiny", hidden_dim=16, maxlen=12, use_mask_token=True).train()


def test_agpm_per_replica_equals_two_calls_on_halves():
    scores = torch.rand(4, 2, 12, 17)
    torch.manual_seed(7)
    grouped = per_replica(lambda s: agpm_mask(s, ratio=0.5, tau=0.75), scores, 2)
    torch.manual_seed(7)
    halves = torch.cat([agpm_mask(scores[:2], ratio=0.5, tau=0.75), agpm_mask(scores[2:], ratio=0.5, tau=0.75)])
    assert torch.equal(grouped, halves)
    torch.manual_seed(7)
    whole = agpm_mask(scores, ratio=0.5, tau=0.75)
    assert not torch.equal(whole, grouped)  # one group normalises each joint over all 4 clips' tokens
    # every joint is masked in exactly half of each replica's (clip, person, frame) slots
    assert torch.all(grouped[:2].sum(dim=(0, 1, 2)) == 2 * 2 * 12 // 2)


def test_batchnorm_statistics_per_group_of_two_and_the_first_replicas_running_stats():
    model = _model()
    ref = copy.deepcopy(model)
    x = torch.rand(4, 2, 12, 17, 3)
    torch.manual_seed(3)
    out = replica_forward(model, x, 2)
    torch.manual_seed(3)
    first = ref(x[:2])
    kept = {k: v.clone() for k, v in ref.head.bn.named_buffers()}
    second = ref(x[2:])
    assert torch.equal(out.logits, torch.cat([first.logits, second.logits]))
    assert torch.equal(out.features, torch.cat([first.features, second.features]))
    for k, v in model.head.bn.named_buffers():
        assert torch.equal(v, kept[k]), k  # the second replica's update is dropped, as DataParallel drops it
    torch.manual_seed(3)
    assert not torch.allclose(_model()(x).logits, out.logits)  # statistics over 4 clips differ


def test_training_with_the_replica_split(tmp_path):
    index = make_index(8, num_classes=3, T=14)
    data = tmp_path / "idx.pkl"
    write_index(index, data)
    sets = ["model.preset=tiny", "model.hidden_dim=16", "model.maxlen=12", "data.clip_len=12", "optim.epochs=1"]
    sets += ["optim.batch_size=4", "optim.replica_groups=2", "maskclr.enabled=true", "optim.lr_head=1e-3"]
    cfg = resolve(load_config(TrainConfig, None, sets))
    last = run_train(cfg, data=data, split="xsub", out=tmp_path / "run")
    assert last["maskclr_active"] and (tmp_path / "run/best.pt").is_file()
    with pytest.raises(ValueError, match="under torchrun every rank is already one replica"):
        setup(cfg, Dist(rank=0, world=2), data=data, split="xsub", out=tmp_path / "x", init=None, resume=False)


def test_the_masked_pass_leaves_the_backbones_batchnorm_statistics_alone():
    """STTFormer's BatchNorms keep the statistics of the standard pass only (whole skeletons, as evaluation sees);
    the head's BatchNorm learns from both passes, as in the official code."""
    from recognition.train import make_loss, maskclr_step

    sets = ["model.backbone=sttformer", "model.preset=tiny", "model.hidden_dim=16", "model.maxlen=12"]
    cfg = resolve(load_config(TrainConfig, None, [*sets, "data.clip_len=12", "maskclr.enabled=true"]))
    torch.manual_seed(0)
    model = build_action_model(num_classes=3, backbone="sttformer", preset="tiny", hidden_dim=16, maxlen=12).train()
    ref = copy.deepcopy(model)
    x, y = torch.rand(4, 2, 12, 17, 3), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(5)
    ref(x, return_attention=True)  # the standard pass alone
    torch.manual_seed(5)
    maskclr_step(cfg, model, model, make_loss(cfg, 3), x, y, update_memory=True)
    for (name, got), want in zip(model.backbone.named_buffers(), ref.backbone.buffers()):
        assert torch.equal(got, want), name
    assert not torch.equal(model.head.bn.running_mean, ref.head.bn.running_mean)

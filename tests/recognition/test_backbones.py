"""Baseline backbones of docs/method.md §9: the vanilla transformer and STTFormer (tiny presets, CPU-fast).

Parameter counts of the base presets (backbone only / with MotionBERT's head for 60 classes):
transformer `base` 16,160,768 / 34,115,644; `maskclr` (mlp 2) 10,912,768 / 28,867,644;
STTFormer `base` (paper table) 6,059,448 / 24,014,324; `maskclr` (5 blocks to 512) 10,628,747 / 28,583,623.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recognition.config import MaskCLRConfig, ModelConfig, TrainConfig
from recognition.maskclr.agpm import agpm_mask
from recognition.maskclr.losses import MLCLLoss
from recognition.models import MODELS, Backbone
from recognition.models.action import build_action_model
from recognition.models.sttformer import STTFormer
from recognition.models.transformer import SkeletonTransformer

V = 17
BACKBONES = ("transformer", "sttformer")


def tiny_backbone(name: str, *, maxlen: int = 16, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = {"transformer": SkeletonTransformer, "sttformer": STTFormer}[name]
    kwargs = {**cls.PRESETS["tiny"], "num_joints": V, "maxlen": maxlen, "use_mask_token": True, **overrides}
    return cls(**kwargs)


def randomize_(model: torch.nn.Module, *, seed: int = 0) -> None:
    """Perturb every parameter and BN statistic, so zero-initialised parts are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.add_(torch.randn(t.shape, generator=g) * 0.2)


@pytest.mark.parametrize(
    "name, preset, backbone_params, total_params",
    [
        ("transformer", "base", 16_160_768, 34_115_644),
        ("transformer", "maskclr", 10_912_768, 28_867_644),
        ("sttformer", "paper", 6_059_448, 24_014_324),
        ("sttformer", "base", 10_628_747, 28_583_623),
    ],
)
def test_base_parameter_counts(name: str, preset: str, backbone_params: int, total_params: int) -> None:
    with torch.device("meta"):
        model = build_action_model(backbone=name, preset=preset, num_classes=60)
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone_params
    assert sum(p.numel() for p in model.parameters()) == total_params
    assert model.backbone.dim_rep == 512 and model.head.fc1.in_features == V * 512


@pytest.mark.parametrize("name", BACKBONES)
def test_shapes_and_contract(name: str) -> None:
    model = build_action_model(backbone=name, preset="tiny", num_classes=5, hidden_dim=16, maxlen=16).eval()
    net = model.backbone
    assert isinstance(net, Backbone) and isinstance(net.explicit_attention, bool)
    assert {"base", "tiny"} <= set(type(net).PRESETS)
    x = torch.randn(3, 2, 8, V, 3)
    with torch.no_grad():
        out = model(x, return_attention=True)
        rep = net(x.reshape(6, 8, V, 3))
    assert out.logits.shape == (3, 5) and out.features.shape == (3, 16) and out.activation.shape == (3, 2, 8, V)
    assert rep.shape == (6, 8, V, 32) and torch.all(rep.abs() <= 1)
    H = net.num_heads
    expected = (3, 2, H, 2 * V, 2 * V) if name == "transformer" else (3, 2, 8, H, 4 * V, V)  # t_patch 4 / len_parts 4
    assert out.attention.shape == expected
    with pytest.raises(ValueError, match="maxlen"):
        model(torch.randn(1, 2, 20, V, 3))


@pytest.mark.parametrize("name", BACKBONES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    net = tiny_backbone(name).train()
    x = torch.randn(4, 8, V, 3)
    mask = torch.zeros(4, 8, V, dtype=torch.bool)
    mask[0, :4, :3] = True  # a whole patch, so the transformer's mask token is used
    rep, attn = net(x, token_mask=mask, return_attention=True)
    (rep.square().mean() + attn.square().mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("name", BACKBONES)
def test_token_activation(name: str) -> None:
    net = tiny_backbone(name).eval()
    randomize_(net)
    rep, attn = net(torch.randn(2, 8, V, 3), return_attention=True)
    assert attn.requires_grad
    act = net.token_activation(attn)
    assert act.shape == (2, 8, V) and act.dtype == torch.float32
    assert not act.requires_grad and torch.all(act >= 0)


def test_transformer_activation_sums_over_queries_and_repeats_over_the_patch() -> None:
    net = tiny_backbone("transformer").eval()
    with torch.no_grad():
        _, attn = net(torch.randn(2, 8, V, 3), return_attention=True)  # [B, H, L, L], L = 2·V
    act = net.token_activation(attn)  # [B, T, V]
    expected = attn.mean(1).sum(1).reshape(2, 2, V)  # [B, T', V]
    torch.testing.assert_close(act[:, 0::4], expected)
    assert torch.equal(act, act[:, 0::4].repeat_interleave(4, dim=1))  # constant over each patch's frames
    torch.testing.assert_close(act.sum(dim=(1, 2)), torch.full((2,), 4.0 * 2 * V))  # each query row sums to 1


def test_transformer_fused_and_explicit_agree() -> None:
    net = tiny_backbone("transformer").eval()
    randomize_(net)
    x = torch.randn(2, 12, V, 3)
    with torch.no_grad():
        fused = net(x)
        rep, attn = net(x, return_attention=True)
        net.explicit_attention = True
        explicit, attn_explicit = net(x, return_attention=True)
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(rep, fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(attn_explicit, attn, atol=1e-6, rtol=0)


def test_transformer_attention_is_last_block_softmax() -> None:
    net = tiny_backbone("transformer").eval()
    randomize_(net)
    attn_mod = net.blocks[-1].attn
    captured = []
    attn_mod.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    B, T = 2, 8
    with torch.no_grad():
        _, attn = net(torch.randn(B, T, V, 3), return_attention=True)
    (tokens,) = captured  # [B, L, D], the normed input to the last attention
    L, D, H = tokens.shape[1], tokens.shape[2], attn_mod.num_heads
    q, k, _ = F.linear(tokens, attn_mod.qkv.weight, attn_mod.qkv.bias).reshape(B, L, 3, H, D // H).unbind(2)
    expected = (torch.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(D // H)).softmax(-1)  # [B, H, L, L]
    assert L == T // net.t_patch * V
    torch.testing.assert_close(attn, expected, atol=1e-5, rtol=0)


def test_transformer_masked_inputs_do_not_matter() -> None:
    net = tiny_backbone("transformer", t_patch=1).eval()
    randomize_(net)
    x = torch.randn(2, 6, V, 3)
    mask = torch.rand(2, 6, V) < 0.4
    x2 = torch.where(mask[..., None], torch.randn_like(x) * 100, x)
    with torch.no_grad():
        out, out2 = net(x, token_mask=mask), net(x2, token_mask=mask)
        assert torch.equal(out, out2)
        assert not torch.allclose(net(x), net(x2))
        torch.testing.assert_close(net(x, token_mask=torch.zeros_like(mask)), net(x))
    with pytest.raises(ValueError, match="use_mask_token"):
        tiny_backbone("transformer", t_patch=1, use_mask_token=False)(x, token_mask=mask)
    with pytest.raises(ValueError, match="torch.bool"):
        net(x, token_mask=mask.float())


def test_transformer_patch_mask_is_a_majority_vote_with_first_frame_ties() -> None:
    net = tiny_backbone("transformer")  # t_patch 4
    frames = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    token_mask = frames.bool().reshape(6, 4, 1).expand(6, 4, V).reshape(1, 24, V)  # six patches, one per case
    got = net.patch_mask(token_mask)  # [1, 6, V]
    assert got[0, :, 0].tolist() == [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="t_patch"):
        net(torch.randn(1, 6, V, 3))


def test_transformer_residual_bug_flag_changes_the_output() -> None:
    x = torch.randn(2, 8, V, 3)
    fixed, buggy = tiny_backbone("transformer").eval(), tiny_backbone("transformer", faithful_residual_bug=True).eval()
    buggy.load_state_dict(fixed.state_dict())
    with torch.no_grad():
        assert not torch.allclose(fixed(x), buggy(x), atol=1e-3)


def test_faithful_switches_the_transformer_residual_bug(tmp_path) -> None:
    """F9 through the run config: `faithful: true` builds the transformer with the port's
    x = 2·attn(x), records it in the checkpoint's model config (so evaluate/predict rebuild the
    same model), and leaves other backbones and non-faithful runs untouched."""
    from recognition.checkpoint import build_model_from_checkpoint, save_checkpoint
    from recognition.config import resolve
    from recognition.preprocess import PreprocessOptions
    from recognition.train import build_model, model_config_of

    tiny = ModelConfig(backbone="transformer", preset="tiny", hidden_dim=16, maxlen=16)
    data = PreprocessOptions(clip_len=16)
    cfg = resolve(TrainConfig(faithful=True, model=tiny, data=data))
    assert cfg.model.faithful_residual_bug
    model = build_model(cfg, 3)
    assert all(b.residual_bug for b in model.backbone.blocks)
    mcfg = model_config_of(cfg, 3)
    assert mcfg["backbone_options"] == {"faithful_residual_bug": True}
    save_checkpoint(
        tmp_path / "ck.pt",
        {
            "model_state": model.state_dict(),
            "model_config": mcfg,
            "run_config": None,
            "label_names": ["a", "b", "c"],
            "epoch": 0,
        },
    )
    again, _ = build_model_from_checkpoint(tmp_path / "ck.pt")
    assert all(b.residual_bug for b in again.backbone.blocks)
    x = torch.randn(1, 2, 16, V, 3)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model.eval()(x).logits)

    plain = resolve(TrainConfig(model=tiny, data=data))
    assert not plain.model.faithful_residual_bug and "backbone_options" not in model_config_of(plain, 3)
    assert not any(b.residual_bug for b in build_model(plain, 3).backbone.blocks)
    dst = resolve(TrainConfig(faithful=True, model=ModelConfig(preset="tiny", hidden_dim=16, maxlen=16), data=data))
    assert not dst.model.faithful_residual_bug and "backbone_options" not in model_config_of(dst, 3)
    with pytest.raises(ValueError, match="only for the transformer backbone"):
        resolve(TrainConfig(model=ModelConfig(faithful_residual_bug=True)))


def test_sttformer_attention_layout() -> None:
    """attn[b, t, h, i, j] = A_h[f·V + j, i] of the last block, f = t mod len_parts; padded frames cropped."""
    net = tiny_backbone("sttformer").eval()  # len_parts 4
    randomize_(net)
    captured = []
    net.blocks[-1].register_forward_hook(lambda mod, args, out: captured.append(out[1]))
    B, T, P = 2, 10, 4  # 10 frames -> 3 tuples, 2 zero frames
    with torch.no_grad():
        rep, attn = net(torch.randn(B, T, V, 3), return_attention=True)
    (A,) = captured  # [B, H, V', V']
    H = net.num_heads
    assert rep.shape == (B, T, V, 32) and attn.shape == (B, T, H, P * V, V)
    for t in (0, 3, 5, 9):
        f = t % P
        torch.testing.assert_close(attn[:, t], A[:, :, f * V : (f + 1) * V, :].transpose(-2, -1))
    act = net.token_activation(attn)
    torch.testing.assert_close(act, A.mean(1).sum(-1).clamp(min=0).reshape(B, P, V).repeat(1, 3, 1)[:, :T])


def test_sttformer_pads_with_zero_frames() -> None:
    net = tiny_backbone("sttformer").eval()
    randomize_(net)
    x = torch.randn(2, 10, V, 3)
    with torch.no_grad():
        padded = net(torch.cat([x, torch.zeros(2, 2, V, 3)], dim=1))  # [B, 12, V, C]
        torch.testing.assert_close(net(x), padded[:, :10])


def test_sttformer_token_mask_zeroes_input_joints() -> None:
    net = tiny_backbone("sttformer").eval()
    randomize_(net)
    x = torch.randn(2, 8, V, 3)
    mask = torch.rand(2, 8, V) < 0.4
    with torch.no_grad():
        masked = net(x, token_mask=mask)
        torch.testing.assert_close(masked, net(torch.where(mask[..., None], 0.0, x)), atol=0, rtol=0)
        assert not torch.allclose(masked, net(x))


def test_sttformer_common_size_arguments() -> None:
    blocks = STTFormer.PRESETS["tiny"]["blocks"]
    STTFormer(blocks=blocks, dim_feat=32, depth=2, maxlen=8)  # consistent with the table: fine
    with pytest.raises(ValueError, match="dim_feat"):
        STTFormer(blocks=blocks, dim_feat=64)
    with pytest.raises(ValueError, match="depth"):
        STTFormer(blocks=blocks, depth=3)
    with pytest.raises(ValueError, match="mlp_ratio"):
        build_action_model(backbone="sttformer", preset="tiny", num_classes=3, mlp_ratio=2.0)
    with pytest.raises(ValueError, match="chain"):
        STTFormer(blocks=((16, 32, 8), (16, 32, 8)))


@pytest.mark.parametrize("name", BACKBONES)
def test_maskclr_step_end_to_end(name: str) -> None:
    from recognition.train import maskclr_step

    torch.manual_seed(0)
    cfg = TrainConfig(
        model=ModelConfig(backbone=name, preset="tiny", hidden_dim=16, maxlen=8), maskclr=MaskCLRConfig(enabled=True)
    )
    model = build_action_model(
        backbone=name, preset="tiny", num_classes=5, hidden_dim=16, maxlen=8, use_mask_token=True
    ).train()
    loss_fn = MLCLLoss(num_classes=5)
    x, y = torch.randn(4, 2, 8, V, 3), torch.tensor([0, 1, 2, 3])
    loss, logits, parts = maskclr_step(cfg, model, model, loss_fn, x, y, update_memory=True)
    assert torch.isfinite(loss) and logits.shape == (4, 5) and set(parts) == {"ce", "loss_sc", "loss_cc"}
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # The mask AGPM draws from this backbone's activation covers half of each joint's tokens.
    with torch.no_grad():
        act = model(x, return_attention=True).activation  # [N, M, T, V]
    mask = agpm_mask(act, ratio=0.5, axis="joint")
    assert mask.shape == (4, 2, 8, V) and torch.all(mask.sum(dim=(0, 1, 2)) == 4 * 2 * 8 // 2)


def hooked_spatial_attention(backbone: torch.nn.Module, x: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
    """How `recognition.robustness` read DSTFormer's inner layers before `layer_attention` (issue 14): forward hooks on
    the ST blocks' spatial attention in a pass with every attention explicit. x [B, T, V, 3] -> {layer: [B, T, H, V, V]}.
    """
    store: dict[int, torch.Tensor] = {}
    old = backbone.explicit_attention
    backbone.explicit_attention = True
    handles = [
        backbone.blocks_st[layer].attn_s.register_forward_hook(
            lambda _m, _i, out, layer=layer: store.__setitem__(layer, out[1])
        )
        for layer in layers
    ]
    try:
        backbone(x)
    finally:
        for h in handles:
            h.remove()
        backbone.explicit_attention = old
    B, T = x.shape[:2]
    return {layer: a.reshape(B, T, *a.shape[1:]) for layer, a in store.items()}  # [B·T, H, V, V] -> [B, T, H, V, V]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_layer_attention_contract(name: str) -> None:
    """Every registered backbone serves `attention_layers` layers in forward's attention layout; the last is forward's."""
    model = build_action_model(backbone=name, preset="tiny", num_classes=5, hidden_dim=16, maxlen=16).eval()
    net = model.backbone
    randomize_(net)
    n = net.attention_layers
    assert isinstance(n, int) and n >= 1
    x = torch.randn(2, 8, V, 3)
    with torch.no_grad():
        _, last = net(x, return_attention=True)
        attn = net.layer_attention(x, [*range(n), -1])
        assert net.layer_attention(x, []) == []
    assert len(attn) == n + 1
    for a in attn:
        assert a.shape == last.shape and net.token_activation(a).shape == (2, 8, V)
    assert torch.equal(attn[-1], last) and torch.equal(attn[n - 1], last)
    for bad in (n, -n - 1):
        with pytest.raises(IndexError, match="out of range"):
            net.layer_attention(x, [bad])


def test_dstformer_serves_every_layer_as_the_old_hooks_read_it() -> None:
    """Inner layers: exactly what the hook-based extraction gave; every layer differs from the last."""
    model = build_action_model(preset="tiny", depth=3, num_classes=5, hidden_dim=16, maxlen=16).eval()
    net = model.backbone
    randomize_(net)
    assert net.attention_layers == len(net.blocks_st) == 3
    x = torch.randn(4, 8, V, 3)
    with torch.no_grad():
        got = net.layer_attention(x, [1, 0, -1, 1])
        old = hooked_spatial_attention(net, x, [0, 1])
        _, last = net(x, return_attention=True)
    assert torch.equal(got[0], old[1]) and torch.equal(got[3], old[1]) and torch.equal(got[1], old[0])
    assert torch.equal(got[2], last) and not net.explicit_attention
    assert got[0].shape == (4, 8, net.num_heads, V, V) and not torch.allclose(got[0], got[2])


@pytest.mark.parametrize("name", ["dstformer", *BACKBONES])
def test_input_embedding_runs_in_float32_under_bf16_autocast(name: str) -> None:
    """Training's bf16 autocast never rounds the joint coordinates: the input embedding sees and computes float32."""
    model = build_action_model(backbone=name, preset="tiny", num_classes=5, hidden_dim=16, maxlen=16)
    first = model.backbone.input_map if name == "sttformer" else model.backbone.joints_embed
    seen = []
    first.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    x = torch.rand(2, 2, 16, V, 3) + 1000.0  # bf16 would round 1000.x to a multiple of 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert seen == [(torch.float32, torch.float32)]

"""DSTFormer and the action model: names/shapes vs docs/method.md §14, attention paths, mask token, reference match."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_motionbert import reference_action_forward, reference_action_logits

from recognition.models import MODELS, Backbone, get_backbone_class
from recognition.models.action import ActionHead, ActionModel, build_action_model, count_state_numbers
from recognition.models.dstformer import DSTFORMER_PRESETS, DSTFormer

V = 17


def appendix_shapes(
    *,
    num_classes: int = 60,
    D: int = 512,
    depth: int = 5,
    mlp_ratio: float = 2.0,
    dim_rep: int = 512,
    maxlen: int = 243,
    hidden: int = 2048,
) -> dict[str, tuple]:
    """The docs/method.md §14 table, generated from its rules."""
    H = int(D * mlp_ratio)
    shapes = {
        "backbone.temp_embed": (1, maxlen, 1, D),
        "backbone.pos_embed": (1, V, D),
        "backbone.joints_embed.weight": (D, 3),
        "backbone.joints_embed.bias": (D,),
        "backbone.norm.weight": (D,),
        "backbone.norm.bias": (D,),
        "backbone.pre_logits.fc.weight": (dim_rep, D),
        "backbone.pre_logits.fc.bias": (dim_rep,),
        "backbone.head.weight": (3, dim_rep),
        "backbone.head.bias": (3,),
        "head.fc1.weight": (hidden, V * dim_rep),
        "head.fc1.bias": (hidden,),
        "head.bn.weight": (hidden,),
        "head.bn.bias": (hidden,),
        "head.bn.running_mean": (hidden,),
        "head.bn.running_var": (hidden,),
        "head.bn.num_batches_tracked": (),
        "head.fc2.weight": (num_classes, hidden),
        "head.fc2.bias": (num_classes,),
    }
    for i in range(depth):
        shapes[f"backbone.ts_attn.{i}.weight"] = (2, 2 * D)
        shapes[f"backbone.ts_attn.{i}.bias"] = (2,)
        for stream in ("blocks_st", "blocks_ts"):
            p = f"backbone.{stream}.{i}"
            for norm in ("norm1_s", "norm1_t", "norm2_s", "norm2_t"):
                shapes[f"{p}.{norm}.weight"] = shapes[f"{p}.{norm}.bias"] = (D,)
            for attn in ("attn_s", "attn_t"):
                shapes[f"{p}.{attn}.qkv.weight"], shapes[f"{p}.{attn}.qkv.bias"] = (3 * D, D), (3 * D,)
                shapes[f"{p}.{attn}.proj.weight"], shapes[f"{p}.{attn}.proj.bias"] = (D, D), (D,)
            for mlp in ("mlp_s", "mlp_t"):
                shapes[f"{p}.{mlp}.fc1.weight"], shapes[f"{p}.{mlp}.fc1.bias"] = (H, D), (H,)
                shapes[f"{p}.{mlp}.fc2.weight"], shapes[f"{p}.{mlp}.fc2.bias"] = (D, H), (D,)
    return shapes


def tiny_model(*, num_classes: int = 5, maxlen: int = 16, use_mask_token: bool = False, seed: int = 0) -> ActionModel:
    torch.manual_seed(seed)
    return build_action_model(
        num_classes=num_classes, preset="tiny", hidden_dim=64, maxlen=maxlen, use_mask_token=use_mask_token
    ).eval()


def randomize_(model: torch.nn.Module, *, seed: int = 0) -> None:
    """Perturb every parameter and BN statistic, so zero-initialised parts (fusion, biases) are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g) * 0.2
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.add_(noise)


def test_base_state_dict_matches_appendix() -> None:
    with torch.device("meta"):
        model = build_action_model(num_classes=60)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == appendix_shapes()
    assert len(got) == 269
    assert count_state_numbers(model) == 60_425_290
    n_bn_buffers = 3 * 2048 + 1 - 2048  # running_mean, running_var, num_batches_tracked
    assert sum(p.numel() for p in model.parameters()) == 60_425_290 - n_bn_buffers


def test_lite_backbone_size() -> None:
    with torch.device("meta"):
        model = build_action_model(num_classes=60, preset="lite")
    backbone = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    expected = {k: v for k, v in appendix_shapes(D=256, mlp_ratio=4.0).items() if k.startswith("backbone.")}
    assert backbone == expected
    assert sum(math.prod(s) for s in backbone.values()) == 16_001_549  # docs/method.md §3.2: ≈ 16.0 M


def test_mask_token_only_when_asked() -> None:
    assert "backbone.mask_token" not in tiny_model().state_dict()
    sd = tiny_model(use_mask_token=True).state_dict()
    assert sd["backbone.mask_token"].shape == (1, 1, DSTFORMER_PRESETS["tiny"]["dim_feat"])


def test_init() -> None:
    torch.manual_seed(0)
    net = DSTFormer(dim_feat=64, dim_rep=64, depth=2, num_heads=4, maxlen=32, use_mask_token=True)
    for m in net.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == 1e-6 and torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, torch.nn.GELU):
            assert m.approximate == "none"
    for fuse in net.ts_attn:
        assert torch.all(fuse.weight == 0) and torch.all(fuse.bias == 0.5)
    qkv = net.blocks_st[0].attn_s.qkv
    assert torch.all(qkv.bias == 0) and abs(qkv.weight.std().item() - 0.02) < 0.003
    assert qkv.weight.abs().max() <= 2  # truncated at ±2 absolute (timm's default, as in MotionBERT), not ±2σ
    for p in (net.temp_embed, net.pos_embed, net.mask_token):
        assert 0 < p.std().item() < 0.03


def test_registry() -> None:
    assert get_backbone_class("dstformer") is DSTFormer
    with pytest.raises(KeyError, match="dstformer"):
        get_backbone_class("nope")
    with pytest.raises(KeyError, match="tiny"):
        build_action_model(num_classes=3, preset="huge")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_backbone_builds_and_runs(name: str) -> None:
    torch.manual_seed(0)
    model = build_action_model(backbone=name, preset="tiny", num_classes=4, hidden_dim=16, maxlen=8).eval()
    assert isinstance(model.backbone, Backbone)
    out = model(torch.randn(2, 2, 8, V, 3))
    assert out.logits.shape == (2, 4) and out.features.shape == (2, 16) and out.attention is None


def test_tiny_shapes() -> None:
    model = tiny_model(maxlen=16)
    x = torch.randn(3, 2, 10, V, 3)  # T = 10 < maxlen
    out = model(x, return_attention=True)
    assert out.logits.shape == (3, 5)
    assert out.features.shape == (3, 64)
    assert out.attention.shape == (3, 2, 10, 4, V, V)
    rep, attn = model.backbone(x.reshape(6, 10, V, 3), return_attention=True)
    assert rep.shape == (6, 10, V, 32) and attn.shape == (6, 10, 4, V, V)
    assert torch.all(rep.abs() <= 1)  # Tanh
    with pytest.raises(ValueError, match="maxlen"):
        model(torch.randn(1, 2, 17, V, 3))


def test_fused_and_explicit_attention_agree() -> None:
    model = tiny_model()
    randomize_(model)
    x = torch.randn(2, 2, 12, V, 3)
    with torch.no_grad():
        fused = model(x).logits
        with_attn = model(x, return_attention=True)
        model.backbone.explicit_attention = True
        explicit = model(x, return_attention=True)
    torch.testing.assert_close(explicit.logits, fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_attn.logits, fused, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit.attention, with_attn.attention, atol=1e-5, rtol=0)


def test_attention_is_last_st_spatial_softmax() -> None:
    model = tiny_model()
    randomize_(model)
    attn_s = model.backbone.blocks_st[-1].attn_s
    captured = []
    attn_s.register_forward_pre_hook(lambda mod, args, kwargs: captured.append(args[0]), with_kwargs=True)
    N, M, T = 2, 2, 6
    with torch.no_grad():
        out = model(torch.randn(N, M, T, V, 3), return_attention=True)
    (tokens,) = captured  # [B·T, V, D], the normed input to the spatial attention
    D, H = tokens.shape[-1], attn_s.num_heads
    q, k, _ = F.linear(tokens, attn_s.qkv.weight, attn_s.qkv.bias).reshape(N * M * T, V, 3, H, D // H).unbind(2)
    scores = torch.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(D // H)  # [B·T, H, V, V]
    expected = scores.softmax(-1).reshape(N, M, T, H, V, V)
    torch.testing.assert_close(out.attention, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(N, M, T, H, V), atol=1e-6, rtol=0)


def test_masked_tokens_get_the_mask_token() -> None:
    model = tiny_model(use_mask_token=True)
    randomize_(model)
    net = model.backbone
    x = torch.randn(2, 2, 8, V, 3)
    mask = torch.rand(2, 2, 8, V) < 0.3
    entering = []
    net.blocks_st[0].register_forward_pre_hook(lambda mod, args: entering.append(args[0]))
    with torch.no_grad():
        out = model(x, token_mask=mask)
        # Changing the poses at masked tokens changes nothing.
        x2 = torch.where(mask[..., None], torch.randn_like(x) * 100, x)
        out2 = model(x2, token_mask=mask)
    assert torch.equal(out.logits, out2.logits) and torch.equal(out.features, out2.features)
    # The embedding entering the first block is mask_token + positional embeddings at masked tokens.
    emb = entering[0].reshape(4, 8, V, -1) - net.pos_embed[:, None] - net.temp_embed[:, :8]  # [B, T, V, D]
    flat_mask = mask.reshape(4, 8, V)
    torch.testing.assert_close(emb[flat_mask], net.mask_token[0].expand(int(flat_mask.sum()), -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        emb[~flat_mask], net.joints_embed(x.reshape(4, 8, V, 3))[~flat_mask].detach(), atol=1e-6, rtol=0
    )
    # An all-False mask equals no mask; a mask without a mask token is refused.
    with torch.no_grad():
        torch.testing.assert_close(model(x, token_mask=torch.zeros_like(mask)).logits, model(x).logits)
    with pytest.raises(ValueError, match="use_mask_token"):
        tiny_model()(x, token_mask=mask)


def test_head_mean_includes_zero_person() -> None:
    torch.manual_seed(0)
    head = ActionHead(num_classes=3, dim_rep=4, num_joints=V, hidden_dim=8, dropout=0.0).eval()
    rep = torch.randn(2, 1, 5, V, 4)
    padded = torch.cat([rep, torch.zeros_like(rep)], dim=1)  # [N, M=2, T, V, C]
    _, h_padded = head(padded)
    expected = F.relu(head.bn(head.fc1(rep.mean(2).flatten(1) / 2)))
    torch.testing.assert_close(h_padded, expected)


@pytest.mark.parametrize(
    "size",
    [dict(preset="tiny"), dict(preset="lite", dim_feat=48, dim_rep=24, depth=3, num_heads=6, mlp_ratio=3.0)],
    ids=["tiny", "small"],
)
def test_matches_reference(size: dict) -> None:
    torch.manual_seed(1)
    model = build_action_model(num_classes=7, hidden_dim=40, maxlen=20, use_mask_token=True, **size).eval()
    randomize_(model, seed=1)
    sd = model.state_dict()
    x = torch.randn(3, 2, 11, V, 3)
    x[:, 1] = 0  # a padded person, as the data pipeline produces
    mask = torch.rand(3, 2, 11, V) < 0.4
    with torch.no_grad():
        for token_mask in (None, mask):
            out = model(x, token_mask=token_mask, return_attention=True)
            logits, hidden, attn = reference_action_forward(
                sd, x, num_heads=model.backbone.num_heads, token_mask=token_mask
            )
            torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.features, hidden, atol=1e-5, rtol=0)
            torch.testing.assert_close(out.attention, attn, atol=1e-5, rtol=0)
        ref = reference_action_logits(sd, x, num_heads=model.backbone.num_heads)
    torch.testing.assert_close(model(x).logits.detach(), ref, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_base_forward_backward_full_length() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_action_model(num_classes=60).train()
    model.head.bn.eval()  # BatchNorm cannot train on a batch of one clip
    x = torch.randn(1, 2, 243, V, 3)
    x[:, 1] = 0  # padded second person
    out = model(x, return_attention=True)
    assert out.logits.shape == (1, 60) and out.attention.shape == (1, 2, 243, 8, V, V)
    out.logits.sum().backward()
    unused = {"backbone.head.weight", "backbone.head.bias"}
    assert all((p.grad is None) == (n in unused) for n, p in model.named_parameters())


def test_activation_matches_joint_activation() -> None:
    """ActionOutput.activation equals AGPM's joint_activation of the returned attention."""
    from recognition.maskclr.agpm import joint_activation

    torch.manual_seed(0)
    model = build_action_model(num_classes=4, preset="tiny", maxlen=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, 8, 17, 3), return_attention=True)
    torch.testing.assert_close(out.activation, joint_activation(out.attention))
    torch.testing.assert_close(out.activation.sum(-1), torch.full((2, 2, 8), 17.0))
    assert not out.activation.requires_grad

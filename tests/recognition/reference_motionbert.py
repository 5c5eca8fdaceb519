"""Independent reference of MotionBERT's action model forward (docs/method.md §3–4), eval mode, for tests.

Plain functional torch on a state dict (ActionModel names: `backbone.*`, `head.*`), written
from the spec and not from `recognition.models`: tokens stay in one [B, T, V, D] layout and each
attention is an einsum over the attended axis (joints V or frames T), with an explicit softmax.
Dropout is off and BatchNorm uses its running statistics.

Entry point: `reference_action_logits(state_dict, x [N, M, T, V, 3], *, num_heads) -> [N, classes]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

LN_EPS = 1e-6
BN_EPS = 1e-5


def _linear(x: Tensor, sd: Mapping[str, Tensor], name: str) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _layer_norm(x: Tensor, sd: Mapping[str, Tensor], name: str) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], LN_EPS)


def _mhsa(x: Tensor, sd: Mapping[str, Tensor], name: str, *, num_heads: int, over: str) -> tuple[Tensor, Tensor]:
    """Multi-head self-attention on x [B, T, V, D] over joints (over="V") or frames (over="T").

    Returns (out [B, T, V, D], probs): probs [B, T, H, V, V] for "V", [B, V, H, T, T] for "T".
    """
    D = x.shape[-1]
    d = D // num_heads
    qkv = _linear(x, sd, f"{name}.qkv")  # [B, T, V, 3D], channels ordered (q|k|v, head, d)
    q, k, v = (t.unflatten(-1, (num_heads, d)) for t in qkv.split(D, dim=-1))  # each [B, T, V, H, d]
    if over == "V":
        scores = torch.einsum("btihc,btjhc->bthij", q, k) / math.sqrt(d)  # [B, T, H, V, V]
        probs = scores.softmax(dim=-1)
        out = torch.einsum("bthij,btjhc->btihc", probs, v)  # [B, T, V, H, d]
    elif over == "T":
        scores = torch.einsum("bivhc,bjvhc->bvhij", q, k) / math.sqrt(d)  # [B, V, H, T, T]
        probs = scores.softmax(dim=-1)
        out = torch.einsum("bvhij,bjvhc->bivhc", probs, v)  # [B, T, V, H, d]
    else:
        raise ValueError(over)
    return _linear(out.flatten(-2), sd, f"{name}.proj"), probs


def _mlp(x: Tensor, sd: Mapping[str, Tensor], name: str) -> Tensor:
    return _linear(F.gelu(_linear(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def _block(x: Tensor, sd: Mapping[str, Tensor], name: str, *, num_heads: int, order: str) -> tuple[Tensor, Tensor]:
    """One DSTFormer block on x [B, T, V, D]; returns (x, spatial attention probs [B, T, H, V, V])."""
    probs = None
    for stream in order:  # "st" or "ts": spatial (over V) and temporal (over T) sub-blocks in that order
        over = "V" if stream == "s" else "T"
        normed = _layer_norm(x, sd, f"{name}.norm1_{stream}")
        out, p = _mhsa(normed, sd, f"{name}.attn_{stream}", num_heads=num_heads, over=over)
        if stream == "s":
            probs = p
        x = x + out
        x = x + _mlp(_layer_norm(x, sd, f"{name}.norm2_{stream}"), sd, f"{name}.mlp_{stream}")
    return x, probs


def reference_representation(
    sd: Mapping[str, Tensor], x: Tensor, *, num_heads: int, token_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """DSTFormer on x [B, T, V, 3] → (rep [B, T, V, dim_rep], last ST spatial attention [B, T, H, V, V])."""
    sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    T = x.shape[1]
    h = _linear(x, sd, "joints_embed")  # [B, T, V, D]
    if token_mask is not None:
        h = torch.where(token_mask[..., None], sd["mask_token"].reshape(-1), h)
    h = h + sd["pos_embed"][0] + sd["temp_embed"][0, :T]  # + [V, D] + [T, 1, D]
    depth = sum(1 for k in sd if k.startswith("blocks_st.") and k.endswith(".norm1_s.weight"))
    for i in range(depth):
        h_st, probs = _block(h, sd, f"blocks_st.{i}", num_heads=num_heads, order="st")
        h_ts, _ = _block(h, sd, f"blocks_ts.{i}", num_heads=num_heads, order="ts")
        if f"ts_attn.{i}.weight" in sd:
            alpha = _linear(torch.cat([h_st, h_ts], dim=-1), sd, f"ts_attn.{i}").softmax(dim=-1)  # [B, T, V, 2]
            h = alpha[..., :1] * h_st + alpha[..., 1:] * h_ts
        else:
            h = (h_st + h_ts) / 2
    rep = torch.tanh(_linear(_layer_norm(h, sd, "norm"), sd, "pre_logits.fc"))
    return rep, probs


def reference_action_forward(
    sd: Mapping[str, Tensor], x: Tensor, *, num_heads: int, token_mask: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """x [N, M, T, V, 3] → (logits [N, C], hidden [N, hidden], attention [N, M, T, H, V, V])."""
    N, M = x.shape[:2]
    mask = None if token_mask is None else token_mask.flatten(0, 1)
    rep, probs = reference_representation(sd, x.flatten(0, 1), num_heads=num_heads, token_mask=mask)
    rep = rep.unflatten(0, (N, M))  # [N, M, T, V, R]
    feat = rep.mean(dim=2).flatten(2).mean(dim=1)  # [N, V·R], the zero person included in the mean
    h = _linear(feat, sd, "head.fc1")
    h = (h - sd["head.bn.running_mean"]) / torch.sqrt(sd["head.bn.running_var"] + BN_EPS)
    h = torch.relu(h * sd["head.bn.weight"] + sd["head.bn.bias"])
    return _linear(h, sd, "head.fc2"), h, probs.unflatten(0, (N, M))


def reference_action_logits(
    sd: Mapping[str, Tensor], x: Tensor, *, num_heads: int, token_mask: Tensor | None = None
) -> Tensor:
    """Eval-mode logits [N, num_classes] of MotionBERT's action model for poses x [N, M, T, V, 3]."""
    return reference_action_forward(sd, x, num_heads=num_heads, token_mask=token_mask)[0]

"""Vanilla skeleton transformer, MAMP's ViT-style encoder as MaskCLR ports it (docs/method.md §9.1).

Our own implementation. Tokens are one joint over `t_patch` consecutive frames: a clip [B, T, V, 3]
becomes T' = T / t_patch frames of V tokens, embedded by Linear(t_patch·3 → D) (MAMP's Conv2d with a
(t_patch, 1) kernel and stride, written as a Linear), plus a learnable joint embedding (1, 1, V, D) and
frame embedding (1, maxlen / t_patch, 1, D). `depth` pre-norm blocks run global self-attention over all
L = T'·V tokens, then LayerNorm, `pre_logits` Linear(D → dim_rep) + Tanh, and each patch's output is
repeated over its t_patch frames, giving rep [B, T, V, dim_rep] for MotionBERT's head.

Differences from MaskCLR's `MAMPformer` port, on purpose:
- one stack of `depth` blocks (the port chains 3 "encoder" + Linear + 2 "decoder" blocks with a second set
  of positional embeddings, an artefact of MAE pre-training);
- the residual is x + attn(x); the port computes x = 2·attn(x) (switch F9, docs/method.md §10), reproduced only with
  `faithful_residual_bug=True`;
- `base` uses mlp_ratio 4 (FFN 2048, the project's spec); the port's config has mlp_ratio 2 (preset
  `maskclr`).

Masking (MaskCLR, §9.1): a masked token's patch embedding is replaced by the learnable `mask_token`
before the positional embeddings are added. The mask is given per frame, [B, T, V]; with t_patch > 1 a
patch is masked when the majority of its frames are, a tie (exactly half) going to the patch's first
frame. For frame decisions that are independent with probability ½ (AGPM at ratio 0.5) this keeps the
expected ratio at ½; other ratios are pulled towards 0 or 1.

Attention for AGPM: the softmax attention of the last block, [B, H, L, L] (rows = queries, tokens in
(frame patch, joint) order). `token_activation` averages the heads and sums over queries, giving the
attention each token receives, repeated over the patch's frames → [B, T, V].

T must be a multiple of t_patch (no padding: the activation could not recover T from the attention).
243 frames work with t_patch 1 or 3 (`base`, `base_p3`), not 4 (`base_p4` wants e.g. 240 frames).

Memory. Fused `scaled_dot_product_attention` never stores the [H, L, L] map; the explicit path does,
and AGPM's standard pass needs it in the last block. At 243 frames and t_patch 1, L = 243·17 = 4131, so
one sequence's map is 8·4131²·4 B ≈ 546 MB in float32 (≈ 273 MB in bf16); with batch 32 and 2 persons
that is 64 maps ≈ 35 GB, kept for the backward pass. The map is quadratic in L: t_patch 3 (L = 1377)
divides it by 9 (≈ 61 MB per sequence), t_patch 4 by 16 (≈ 34 MB), and the fused blocks' compute by as
much.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recognition.models import full_precision, layer_indices
from recognition.models.dstformer import Mlp

_BASE = dict(dim_feat=512, dim_rep=512, depth=5, num_heads=8, mlp_ratio=4.0)
TRANSFORMER_PRESETS: dict[str, dict] = {
    "base": dict(_BASE, t_patch=1),  # MaskCLR's setting (t_patch 1, 243 frames) with FFN 2048
    "base_p3": dict(_BASE, t_patch=3),  # 243 = 81·3 frames: 1377 tokens
    "base_p4": dict(_BASE, t_patch=4),  # MAMP's patch size; T must be a multiple of 4
    "maskclr": dict(_BASE, mlp_ratio=2.0, t_patch=1),  # the widths of MaskCLR's MAMPformer config
    "tiny": dict(dim_feat=32, dim_rep=32, depth=2, num_heads=4, mlp_ratio=4.0, t_patch=4),  # CPU tests/demo
}

LAYER_NORM_EPS = 1e-6


class Attention(nn.Module):
    """Multi-head self-attention over all tokens: [B, L, D] → [B, L, D] (+ probs [B, H, L, L] when explicit)."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, *, explicit: bool = False) -> tuple[Tensor, Tensor | None]:
        B, L, D = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).reshape(B, L, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each [B, H, L, d]
        if explicit:
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # [B, H, L, L], rows = queries
            out = attn @ v  # [B, H, L, d]
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, H, L, d]
        out = out.transpose(1, 2).reshape(B, L, D)  # [B, H, L, d] -> [B, L, H, d] -> [B, L, D]
        return self.proj(out), attn


class Block(nn.Module):
    """Pre-norm transformer block. `residual_bug` reproduces the MaskCLR port's x = 2·attn(norm1(x))."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, residual_bug: bool) -> None:
        super().__init__()
        self.residual_bug = residual_bug
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(self, x: Tensor, *, explicit: bool = False) -> tuple[Tensor, Tensor | None]:
        """x [B, L, D] → (x [B, L, D], attention probs [B, H, L, L] or None)."""
        out, attn = self.attn(self.norm1(x), explicit=explicit)
        x = out + out if self.residual_bug else x + out  # the port: `x, attn = attn(...); x = x + drop_path(x)`
        return x + self.mlp(self.norm2(x)), attn


class SkeletonTransformer(nn.Module):
    """Global joint-time transformer over (frame patch, joint) tokens (docs/method.md §9.1).

    Args:
        dim_in: input channels per joint (x, y, confidence).
        dim_feat: model width D.
        dim_rep: width of the output representation (`pre_logits`).
        depth: number of blocks.
        num_heads: attention heads H.
        mlp_ratio: MLP hidden width as a multiple of D.
        t_patch: frames per token; T must be a multiple of it.
        num_joints: V.
        maxlen: longest sequence; the frame embedding has maxlen // t_patch rows.
        qkv_bias: bias in the qkv projections.
        use_mask_token: add the learnable `mask_token` that replaces masked patch embeddings.
        explicit_attention: explicit softmax(QKᵀ·scale)·V in every block instead of the fused kernel.
        faithful_residual_bug: reproduce the MaskCLR port's x = 2·attn(x) (switch F9, docs/method.md §10);
            off by default.
    """

    PRESETS = TRANSFORMER_PRESETS
    attention_layers = 1  # `layer_attention` serves the last block's attention only

    def __init__(
        self,
        *,
        dim_in: int = 3,
        dim_feat: int = 512,
        dim_rep: int = 512,
        depth: int = 5,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        t_patch: int = 1,
        num_joints: int = 17,
        maxlen: int = 243,
        qkv_bias: bool = True,
        use_mask_token: bool = False,
        explicit_attention: bool = False,
        faithful_residual_bug: bool = False,
    ) -> None:
        super().__init__()
        if t_patch < 1 or maxlen < t_patch:
            raise ValueError(f"need 1 <= t_patch <= maxlen, got t_patch={t_patch}, maxlen={maxlen}")
        self.dim_feat = dim_feat
        self.dim_rep = dim_rep
        self.num_heads = num_heads
        self.num_joints = num_joints
        self.maxlen = maxlen
        self.t_patch = t_patch
        self.use_mask_token = use_mask_token
        self.explicit_attention = explicit_attention  # plain attribute: a benchmark may flip it on a built model

        self.joints_embed = nn.Linear(t_patch * dim_in, dim_feat)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, num_joints, dim_feat))  # joint embedding
        self.temp_embed = nn.Parameter(torch.zeros(1, maxlen // t_patch, 1, dim_feat))  # frame-patch embedding
        if use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim_feat))
        self.blocks = nn.ModuleList(
            Block(
                dim=dim_feat,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                residual_bug=faithful_residual_bug,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim_feat, eps=LAYER_NORM_EPS)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(dim_feat, dim_rep))
        self.pre_logits.add_module("act", nn.Tanh())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MAMP's init: xavier-uniform Linear weights, zero biases, LayerNorm 1/0, trunc-normal(0.02) embeddings."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        if self.use_mask_token:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    def patch_mask(self, token_mask: Tensor) -> Tensor:
        """Per-frame mask [B, T, V] → per-patch mask [B, T', V]: majority of its frames, ties → its first."""
        B, T, V = token_mask.shape
        p = self.t_patch
        frames = token_mask.reshape(B, T // p, p, V)  # [B, T, V] -> [B, T', p, V]
        twice_count = 2 * frames.sum(dim=2)  # [B, T', V]
        return (twice_count > p) | ((twice_count == p) & frames[:, :, 0])  # [B, T', V]

    def layer_attention(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """The last block's attention [B, H, L, L], forward's, for each index of `layers` (0 or -1).

        Inner-layer saliency (docs/method.md §8(e)) reads DSTFormer's spatial attention; this backbone's is a
        global joint-time attention, so it serves only the last block's, the one AGPM uses, as its single layer.
        """
        layer_indices(layers, self.attention_layers)
        if not layers:
            return []
        attn = self(x, return_attention=True)[1]
        return [attn for _ in layers]

    def token_activation(self, attn: Tensor) -> Tensor:
        """Attention each token receives: attn [B, H, L, L] → [B, T, V], detached.

        Heads averaged, summed over queries, then each patch's score repeated over its t_patch frames.
        """
        with torch.no_grad():
            a = attn.detach().float().mean(dim=1).sum(dim=-2)  # [B, H, L, L] -> [B, L, L] -> [B, L]
            a = a.reshape(a.shape[0], -1, self.num_joints)  # [B, L] -> [B, T', V]
            return a.repeat_interleave(self.t_patch, dim=1)  # [B, T', V] -> [B, T, V]

    def forward(
        self, x: Tensor, *, token_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Representation of each (sequence, frame, joint) token.

        Args:
            x: [B, T, V, C_in] with B = N·M, T ≤ maxlen and T a multiple of t_patch.
            token_mask: optional bool [B, T, V]; True tokens (patches, see the module docstring) get
                `mask_token` instead of their patch embedding. Needs use_mask_token.
            return_attention: also return the last block's softmax attention.

        Returns:
            rep [B, T, V, dim_rep], or (rep, attn) with attn [B, H, L, L], L = (T / t_patch)·V, rows = queries.
        """
        B, T, V, C_in = x.shape
        p = self.t_patch
        if T > self.maxlen:
            raise ValueError(f"sequence has {T} frames, more than maxlen={self.maxlen}")
        if T % p != 0:
            raise ValueError(f"sequence has {T} frames, not a multiple of t_patch={p}")
        if V != self.num_joints:
            raise ValueError(f"input has {V} joints, the model expects {self.num_joints}")
        Tp = T // p
        # [B, T, V, C_in] -> [B, T', p, V, C_in] -> [B, T', V, p, C_in]
        x = x.reshape(B, Tp, p, V, C_in).transpose(2, 3)
        with full_precision(x):  # the joint coordinates are not rounded to bf16
            x = self.joints_embed(x.float().reshape(B, Tp, V, p * C_in))  # [B, T', V, p·C_in] -> [B, T', V, D]
        if token_mask is not None:
            if not self.use_mask_token:
                raise ValueError("token_mask given but the model was built with use_mask_token=False")
            if token_mask.shape != (B, T, V) or token_mask.dtype != torch.bool:
                got = f"{token_mask.dtype} {tuple(token_mask.shape)}"
                raise ValueError(f"token_mask must be torch.bool of shape {(B, T, V)}, got {got}")
            masked = self.patch_mask(token_mask)[..., None]  # [B, T', V, 1]
            x = torch.where(masked, self.mask_token.to(x.dtype), x)  # [B, T', V, D]
        x = x + self.pos_embed + self.temp_embed[:, :Tp]  # [B, T', V, D] + [1, 1, V, D] + [1, T', 1, D]
        x = x.reshape(B, Tp * V, -1)  # [B, T', V, D] -> [B, L, D]

        attn = None
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            want = return_attention and i == last
            x, attn_i = blk(x, explicit=self.explicit_attention or want)  # [B, L, D]
            if want:
                attn = attn_i
        x = self.norm(x)
        rep = self.pre_logits(x.reshape(B, Tp, V, -1))  # [B, L, D] -> [B, T', V, D] -> [B, T', V, dim_rep]
        rep = rep.repeat_interleave(p, dim=1)  # [B, T', V, dim_rep] -> [B, T, V, dim_rep]
        return (rep, attn) if return_attention else rep

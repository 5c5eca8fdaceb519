"""DSTFormer, the dual-stream spatio-temporal transformer of MotionBERT (docs/method.md §3, §5.2).

Our own implementation with MotionBERT's exact parameter names and shapes (docs/method.md §14), so the
official `model_pos` (pretrained) and `model` (action-finetuned) checkpoints load with strict=True.

Input  x:   [B, T, V, C_in] with B = N·M sequences (one per person), T ≤ maxlen frames, V joints.
Output rep: [B, T, V, dim_rep], the representation after `pre_logits` (Linear + Tanh).

Attention uses `F.scaled_dot_product_attention` everywhere, except the spatial attention of the
ST-stream block of the last layer when its probabilities are asked for (`return_attention=True`,
used by AGPM and the reports); `explicit_attention=True` forces the explicit softmax(QKᵀ·scale)·V
path in every attention (fused-vs-explicit benchmark and tests). `layer_attention` gives the spatial
attention of any layers (the reports' inner-layer saliency).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recognition.models import full_precision, layer_indices

DSTFORMER_PRESETS: dict[str, dict] = {
    "base": dict(dim_feat=512, dim_rep=512, depth=5, num_heads=8, mlp_ratio=2.0),
    "lite": dict(dim_feat=256, dim_rep=512, depth=5, num_heads=8, mlp_ratio=4.0),
    "tiny": dict(dim_feat=32, dim_rep=32, depth=2, num_heads=4, mlp_ratio=2.0),
}

LAYER_NORM_EPS = 1e-6


def _attend(q: Tensor, k: Tensor, v: Tensor, *, scale: float, explicit: bool) -> tuple[Tensor, Tensor | None]:
    """Attention over the second-to-last axis. q, k, v: [..., L, d] → ([..., L, d], probs [..., L, L] or None)."""
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, scale=scale), None
    attn = (q @ k.transpose(-2, -1)) * scale  # [..., L, L], rows = queries
    attn = attn.softmax(dim=-1)
    return attn @ v, attn  # [..., L, d], [..., L, L]


class Attention(nn.Module):
    """Multi-head self-attention over joints (`mode="spatial"`) or over frames (`mode="temporal"`).

    Both modes take and return tokens [B·T, V, C]; only the axis attended over differs.
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, mode: str) -> None:
        super().__init__()
        if mode not in ("spatial", "temporal"):
            raise ValueError(f"mode must be 'spatial' or 'temporal', got {mode!r}")
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.mode = mode
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, *, seqlen: int, explicit: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: [B·T, V, C] → (out [B·T, V, C], probs or None).

        probs (only when `explicit`): spatial [B·T, H, V, V]; temporal [B·V, H, T, T].
        """
        BT, V, C = x.shape
        H = self.num_heads
        qkv = self.qkv(x).reshape(BT, V, 3, H, C // H)  # [B·T, V, 3, H, d]
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B·T, H, V, d]
        if self.mode == "spatial":
            out, attn = _attend(q, k, v, scale=self.scale, explicit=explicit)  # [B·T, H, V, d]
            out = out.transpose(1, 2).reshape(BT, V, C)  # [B·T, H, V, d] -> [B·T, V, H, d] -> [B·T, V, C]
        else:
            B, T = BT // seqlen, seqlen
            # 4-D [B·V, H, T, d], so the fused kernels (which take 4-D inputs) are eligible:
            # [B·T, H, V, d] -> [B, T, H, V, d] -> [B, V, H, T, d] -> [B·V, H, T, d]
            q, k, v = (
                t.reshape(B, T, H, V, C // H).permute(0, 3, 2, 1, 4).reshape(B * V, H, T, C // H) for t in (q, k, v)
            )
            out, attn = _attend(q, k, v, scale=self.scale, explicit=explicit)  # [B·V, H, T, d]
            # [B·V, H, T, d] -> [B, V, H, T, d] -> [B, T, V, H, d] -> [B·T, V, C]
            out = out.reshape(B, V, H, T, C // H).permute(0, 3, 1, 2, 4).reshape(BT, V, C)
        return self.proj(out), attn


class Mlp(nn.Module):
    """Linear(D → hidden) → GELU (exact) → Linear(hidden → D)."""

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block with a spatial and a temporal attention/MLP pair, in ST or TS order."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, order: str) -> None:
        super().__init__()
        if order not in ("st", "ts"):
            raise ValueError(f"order must be 'st' or 'ts', got {order!r}")
        self.order = order
        self.norm1_s = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm1_t = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn_s = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, mode="spatial")
        self.attn_t = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, mode="temporal")
        self.norm2_s = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2_t = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp_s = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        self.mlp_t = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, *, seqlen: int, explicit: bool = False, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x: [B·T, V, C] → (x [B·T, V, C], spatial attention probs [B·T, H, V, V] or None)."""
        if self.order == "st":
            x, attn = self._spatial(x, explicit=explicit or return_attention)
            x = self._temporal(x, seqlen=seqlen, explicit=explicit)
        else:
            x = self._temporal(x, seqlen=seqlen, explicit=explicit)
            x, attn = self._spatial(x, explicit=explicit or return_attention)
        return x, (attn if return_attention else None)

    def _spatial(self, x: Tensor, *, explicit: bool) -> tuple[Tensor, Tensor | None]:
        out, attn = self.attn_s(self.norm1_s(x), seqlen=1, explicit=explicit)
        x = x + out
        return x + self.mlp_s(self.norm2_s(x)), attn

    def _temporal(self, x: Tensor, *, seqlen: int, explicit: bool) -> Tensor:
        x = x + self.attn_t(self.norm1_t(x), seqlen=seqlen, explicit=explicit)[0]
        return x + self.mlp_t(self.norm2_t(x))


class DSTFormer(nn.Module):
    """MotionBERT's DSTFormer backbone (docs/method.md §3), optionally with MaskCLR's mask token (§5.2).

    Args:
        dim_in: input channels per joint (x, y, confidence).
        dim_feat: model width D.
        dim_rep: width of the output representation (`pre_logits`).
        depth: number of layers; each has an ST block, a TS block and a fusion linear.
        num_heads: attention heads H (head dim D / H).
        mlp_ratio: MLP hidden width as a multiple of D.
        num_joints: V; size of the spatial positional embedding.
        maxlen: longest sequence; size of the temporal embedding.
        qkv_bias: bias in the qkv projections.
        att_fuse: fuse the two streams with learned per-token weights (else their mean).
        use_mask_token: add the learnable `mask_token` that replaces masked joint embeddings.
        explicit_attention: compute every attention explicitly instead of the fused kernel.
    """

    PRESETS = DSTFORMER_PRESETS

    def __init__(
        self,
        *,
        dim_in: int = 3,
        dim_feat: int = 512,
        dim_rep: int = 512,
        depth: int = 5,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        num_joints: int = 17,
        maxlen: int = 243,
        qkv_bias: bool = True,
        att_fuse: bool = True,
        use_mask_token: bool = False,
        explicit_attention: bool = False,
    ) -> None:
        super().__init__()
        self.dim_feat = dim_feat
        self.dim_rep = dim_rep
        self.num_heads = num_heads
        self.num_joints = num_joints
        self.maxlen = maxlen
        self.att_fuse = att_fuse
        self.use_mask_token = use_mask_token
        self.explicit_attention = explicit_attention  # plain attribute: a benchmark may flip it on a built model

        self.joints_embed = nn.Linear(dim_in, dim_feat)
        block_args = dict(dim=dim_feat, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias)
        self.blocks_st = nn.ModuleList([Block(**block_args, order="st") for _ in range(depth)])
        self.blocks_ts = nn.ModuleList([Block(**block_args, order="ts") for _ in range(depth)])
        self.norm = nn.LayerNorm(dim_feat, eps=LAYER_NORM_EPS)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(dim_feat, dim_rep))
        self.pre_logits.add_module("act", nn.Tanh())
        # MotionBERT's 3-d pose head: unused for action recognition, kept so official files load strictly.
        # Frozen, so that DDP (which expects a gradient for every trainable parameter) does not wait for one.
        self.head = nn.Linear(dim_rep, 3)
        self.head.requires_grad_(False)
        self.temp_embed = nn.Parameter(torch.zeros(1, maxlen, 1, dim_feat))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_joints, dim_feat))
        if use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim_feat))
        if att_fuse:
            self.ts_attn = nn.ModuleList([nn.Linear(dim_feat * 2, 2) for _ in range(depth)])
        self.reset_parameters()

    @property
    def attention_layers(self) -> int:
        """Layers whose spatial attention `layer_attention` serves: all of them."""
        return len(self.blocks_st)

    @staticmethod
    def token_activation(attn: Tensor) -> Tensor:
        """Joint activation (docs/method.md §5.1): attn [B, T, H, V, V] -> [B, T, V], detached.

        Heads averaged, then summed over queries: the attention each joint receives in its frame.
        """
        with torch.no_grad():
            return attn.detach().float().mean(dim=2).sum(dim=-2)  # [B, T, V, V] -> [B, T, V]

    def reset_parameters(self) -> None:
        """docs/method.md §3.6 init: trunc-normal(0.02) Linear weights and embeddings, zero biases, LayerNorm 1/0,
        then the fusion linears weight 0 / bias 0.5 so each stream starts at weight ½."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.use_mask_token:
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        if self.att_fuse:
            for fuse in self.ts_attn:
                nn.init.zeros_(fuse.weight)
                nn.init.constant_(fuse.bias, 0.5)

    def forward(
        self, x: Tensor, *, token_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Representation of each (sequence, frame, joint) token.

        Args:
            x: [B, T, V, C_in] with B = N·M and T ≤ maxlen.
            token_mask: optional bool [B, T, V]; True replaces that token's joint embedding by
                `mask_token` (before the positional embeddings are added). Needs use_mask_token.
            return_attention: also return the softmax attention of the spatial attention in the
                last layer's ST block.

        Returns:
            rep [B, T, V, dim_rep], or (rep, attn) with attn [B, T, H, V, V] (rows are queries).
        """
        last = len(self.blocks_st) - 1
        rep, attn = self._encode(
            x, token_mask, keep=(last,) if return_attention else (), explicit=self.explicit_attention
        )
        return (rep, attn[last]) if return_attention else rep

    def layer_attention(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """Spatial attention of the ST blocks of `layers` (-1 = the last): [B, T, H, V, V] per index, rows = queries.

        The last layer's comes from `forward(x, return_attention=True)` (explicit there only: what AGPM sees); inner
        layers' from one more pass with every attention explicit.
        """
        want = layer_indices(layers, self.attention_layers)
        last = self.attention_layers - 1
        found = {}
        if last in want:
            found[last] = self(x, return_attention=True)[1]
        inner = tuple(sorted({layer for layer in want if layer != last}))
        if inner:
            found.update(self._encode(x, None, keep=inner, explicit=True)[1])
        return [found[layer] for layer in want]

    def _encode(
        self, x: Tensor, token_mask: Tensor | None, *, keep: tuple[int, ...], explicit: bool
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """rep [B, T, V, dim_rep] and the spatial attention [B, T, H, V, V] of the ST blocks of layers `keep`."""
        B, T, V, C_in = x.shape
        if T > self.maxlen:
            raise ValueError(f"sequence has {T} frames, more than maxlen={self.maxlen}")
        if V != self.num_joints:
            raise ValueError(f"input has {V} joints, the model expects {self.num_joints}")
        with full_precision(x):  # the joint coordinates are not rounded to bf16
            x = self.joints_embed(x.float().reshape(B * T, V, C_in))  # [B, T, V, C_in] -> [B·T, V, C_in] -> [B·T, V, D]
        if token_mask is not None:
            if not self.use_mask_token:
                raise ValueError("token_mask given but the model was built with use_mask_token=False")
            if token_mask.shape != (B, T, V) or token_mask.dtype != torch.bool:
                got = f"{token_mask.dtype} {tuple(token_mask.shape)}"
                raise ValueError(f"token_mask must be torch.bool of shape {(B, T, V)}, got {got}")
            masked = token_mask.reshape(B * T, V, 1)  # [B, T, V] -> [B·T, V, 1]
            x = torch.where(masked, self.mask_token.to(x.dtype), x)  # [B·T, V, D]
        x = x + self.pos_embed  # [B·T, V, D] + [1, V, D]
        x = x.reshape(B, T, V, -1) + self.temp_embed[:, :T]  # [B, T, V, D] + [1, T, 1, D]
        x = x.reshape(B * T, V, -1)  # [B, T, V, D] -> [B·T, V, D]

        attn = {}
        for i, (blk_st, blk_ts) in enumerate(zip(self.blocks_st, self.blocks_ts)):
            want = i in keep
            x_st, attn_i = blk_st(x, seqlen=T, explicit=explicit, return_attention=want)  # [B·T, V, D]
            x_ts, _ = blk_ts(x, seqlen=T, explicit=explicit)  # [B·T, V, D]
            if want:
                attn[i] = attn_i.reshape(B, T, self.num_heads, V, V)  # [B·T, H, V, V] -> [B, T, H, V, V]
            if self.att_fuse:
                alpha = self.ts_attn[i](torch.cat([x_st, x_ts], dim=-1)).softmax(dim=-1)  # [B·T, V, 2]
                x = x_st * alpha[..., 0:1] + x_ts * alpha[..., 1:2]  # [B·T, V, D]
            else:
                x = (x_st + x_ts) * 0.5
        x = self.norm(x)
        rep = self.pre_logits(x.reshape(B, T, V, -1))  # [B·T, V, D] -> [B, T, V, D] -> [B, T, V, dim_rep]
        return rep, attn

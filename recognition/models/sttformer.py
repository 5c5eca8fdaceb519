"""STTFormer, the spatio-temporal tuples transformer of Qiu et al. 2022 (docs/method.md §9.2).

Our own implementation of heleiqiu/STTFormer's `Model` + `STA_Block`, as a backbone giving per-token
representations for MotionBERT's head.

Tuples. A clip [B, T, V, 3] is cut into T' = T / len_parts tuples of `len_parts` consecutive frames; each
tuple is one "super-frame" of V' = len_parts·V nodes, node index f·V + j (frame f of the tuple, joint j).
T is zero-padded at the end up to a multiple of len_parts (the zeros follow the "missing = 0" convention
of the data), and the padded frames are cropped from the output. The paper's len_parts 6 gives 243 → 246
frames (3 zero frames, 41 tuples) at MaskCLR's clip length; the `tiny` preset uses 4 (64 frames, 16
tuples, no padding).

Network. Input map 1×1 Conv(3 → C0) + BN + LeakyReLU(0.1), then STA blocks from a table of
(in, out, qkv_dim); each block:
- attention shared by all tuples, per head h: A_h = tanh(Σ_{c,t} q[c,t,u]·k[c,t,v] / (qkv_dim·T'))·α_h + A⁰_h,
  q, k a 1×1 conv of x + a sinusoidal encoding of the within-tuple node index; α_h starts at 1, the
  static map A⁰_h at 1/V';
- out_h[c, t, v] = Σ_u x[c, t, u]·A_h[u, v] (x without the encoding); heads concatenated →
  Conv(1×5 over nodes) + BN + residual → LeakyReLU; FFN 1×1 Conv + BN + the same residual (the block
  input's, as the official code does) → LeakyReLU;
- inter-frame feature aggregation (IFFA): Conv(3×1 over tuples) + BN + residual → LeakyReLU.
Residuals are identity, or 1×1 Conv + BN where in ≠ out. Init as the official code: Kaiming-normal
(fan_out) convs, BN 1/0, Xavier-normal Linear.

Output. The last map [B, C, T', V'] is un-tupled to [B, T, V, C], then `pre_logits` Linear(C → dim_rep)
+ Tanh, so MotionBERT's head (mean over T, V×C flattened, mean over persons) applies unchanged.

AGPM (§9.2 proposal). A is indexed A[u, v] = weight with which node v reads node u, so the attention a
token (frame, joint) *receives* (how much the others read it, as the key joints of DSTFormer's softmax
attention) is Σ_v A[u, v]. The returned attention is put in the project's convention, rows = readers
(queries): attn [B, T, H, V', V] with attn[b, t, h, i, j] = A_h[f·V + j, i], f = t mod len_parts, i.e.
for frame t the weights from each of the V' nodes of its tuple onto its V joints (shared by all tuples).
`token_activation` averages the heads, sums over the readers and clamps at 0: tanh makes A signed, and a
negative score has no meaning for AGPM's max-normalisation (the MaskCLR repo's `get_mask` clamps the same
way). Scores depend on the within-tuple frame and the joint only, broadcast to every tuple. The per-frame
layout is a copy: at 243 frames and len_parts 6 it holds 243·3·102·17 ≈ 1.26 M numbers per sequence
(≈ 5 MB in float32), against 3·102² ≈ 31 k for A itself; it makes the activation exact under padding.

Masking. No mask token: `token_mask` zeros the masked input joints (x = y = conf = 0), as MaskCLR's v1.
`use_mask_token` is accepted for the common constructor and ignored.

Presets: `base` is the paper's 8-block table (64 → 256 channels); `maskclr` is the comparison the MaskCLR
paper asks for ("feature dimension 512, depth 5, otherwise its own hyper-parameters"): 5 blocks that
double the width up to 512, qkv_dim = out/4 as in the paper's table. Both keep 3 heads, kernel (3, 5),
len_parts 6 and dim_rep 512, so the head is MotionBERT's exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recognition.models import full_precision, layer_indices

PAPER_BLOCKS = (
    (64, 64, 16),
    (64, 64, 16),
    (64, 128, 32),
    (128, 128, 32),
    (128, 256, 64),
    (256, 256, 64),
    (256, 256, 64),
    (256, 256, 64),
)
MASKCLR_BLOCKS = ((64, 64, 16), (64, 128, 32), (128, 256, 64), (256, 512, 128), (512, 512, 128))
STTFORMER_PRESETS: dict[str, dict] = {
    "base": dict(blocks=MASKCLR_BLOCKS, dim_rep=512, num_heads=3, len_parts=6),  # the seed's: width 512, depth 5
    "paper": dict(blocks=PAPER_BLOCKS, dim_rep=512, num_heads=3, len_parts=6),  # STTFormer's own 8 blocks
    "tiny": dict(blocks=((16, 32, 8), (32, 32, 8)), dim_rep=32, num_heads=3, len_parts=4),
}


def node_encoding(channels: int, num_nodes: int) -> Tensor:
    """Sinusoidal encoding of the within-tuple node index: [1, channels, 1, num_nodes] (sin on even channels)."""
    pos = torch.arange(num_nodes, dtype=torch.float32)[:, None]  # [V', 1]
    freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(num_nodes, channels)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : channels // 2]
    return pe.T[None, :, None, :]  # [V', C] -> [1, C, 1, V']


def conv_bn(c_in: int, c_out: int, kernel: tuple[int, int] = (1, 1)) -> nn.Sequential:
    """Conv2d with 'same' padding + BatchNorm2d."""
    pad = (kernel[0] // 2, kernel[1] // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=pad), nn.BatchNorm2d(c_out))


class STABlock(nn.Module):
    """Tuples attention + FFN + inter-frame feature aggregation: [B, C_in, T', V'] → [B, C_out, T', V']."""

    def __init__(
        self, *, c_in: int, c_out: int, qkv_dim: int, num_nodes: int, num_heads: int, kernel_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv_dim = qkv_dim
        self.register_buffer("pes", node_encoding(c_in, num_nodes), persistent=False)
        self.to_qk = nn.Conv2d(c_in, 2 * num_heads * qkv_dim, 1)
        self.alphas = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.attention0s = nn.Parameter(torch.full((1, num_heads, num_nodes, num_nodes), 1.0 / num_nodes))
        self.out_nets = conv_bn(num_heads * c_in, c_out, (1, kernel_size[1]))
        self.ff_net = conv_bn(c_out, c_out)
        self.out_nett = conv_bn(c_out, c_out, (kernel_size[0], 1))
        self.ress = conv_bn(c_in, c_out) if c_in != c_out else nn.Identity()
        self.rest = conv_bn(c_out, c_out) if c_in != c_out else nn.Identity()
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C_in, T', V'] → (x [B, C_out, T', V'], attention A [B, H, V', V'], A[u, v] = weight of u in v)."""
        B, C, Tp, Vp = x.shape
        H, d = self.num_heads, self.qkv_dim
        q, k = self.to_qk(x + self.pes).reshape(B, 2 * H, d, Tp, Vp).chunk(2, dim=1)  # each [B, H, d, T', V']
        scores = torch.einsum("bhctu,bhctv->bhuv", q, k) / (d * Tp)  # [B, H, V', V']
        attn = torch.tanh(scores) * self.alphas + self.attention0s  # [B, H, V', V']
        xs = torch.einsum("bctu,bhuv->bhctv", x, attn)  # [B, H, C, T', V'], out_h[c, t, v] = Σ_u x[c, t, u]·A_h[u, v]
        xs = xs.reshape(B, H * C, Tp, Vp)  # [B, H, C, T', V'] -> [B, H·C, T', V']
        res = self.ress(x)  # [B, C_out, T', V']
        xs = self.act(self.out_nets(xs) + res)
        xs = self.act(self.ff_net(xs) + res)  # the official FFN adds the block input's residual again
        return self.act(self.out_nett(xs) + self.rest(xs)), attn  # IFFA over tuples


class STTFormer(nn.Module):
    """STTFormer backbone (docs/method.md §9.2); see the module docstring for tuples, attention layout and masking.

    Args:
        blocks: the STA block table, one (in, out, qkv_dim) per block; in of block 1 is the input map width.
        dim_rep: width of the output representation (`pre_logits`).
        num_heads: attention heads per block (3 in the paper).
        len_parts: frames per tuple.
        kernel_size: (IFFA kernel over tuples, output-conv kernel over nodes).
        dim_in: input channels per joint (x, y, confidence).
        num_joints: V.
        maxlen: longest sequence (only checked: STTFormer has no learned temporal embedding).
        dim_feat, depth: the common constructor's width and depth; STTFormer's come from `blocks`, so when
            given they must equal the last block's out channels and the number of blocks.
        mlp_ratio: must be None: the FFN is a C → C 1×1 conv, with no hidden width.
        use_mask_token: ignored; masked joints are zeroed in the input.
        explicit_attention: no effect (the attention is always explicit); kept for the common interface.
    """

    PRESETS = STTFORMER_PRESETS
    attention_layers = 1  # `layer_attention` serves the last block's attention only

    def __init__(
        self,
        *,
        blocks: tuple[tuple[int, int, int], ...] = PAPER_BLOCKS,
        dim_rep: int = 512,
        num_heads: int = 3,
        len_parts: int = 6,
        kernel_size: tuple[int, int] = (3, 5),
        dim_in: int = 3,
        num_joints: int = 17,
        maxlen: int = 243,
        dim_feat: int | None = None,
        depth: int | None = None,
        mlp_ratio: float | None = None,
        use_mask_token: bool = False,
        explicit_attention: bool = False,
    ) -> None:
        super().__init__()
        if not blocks or any(blocks[i][1] != blocks[i + 1][0] for i in range(len(blocks) - 1)):
            raise ValueError(f"blocks must chain (out of block i = in of block i+1), got {blocks}")
        if dim_feat is not None and dim_feat != blocks[-1][1]:
            raise ValueError(f"dim_feat={dim_feat} differs from the last block's width {blocks[-1][1]}; edit `blocks`")
        if depth is not None and depth != len(blocks):
            raise ValueError(f"depth={depth} differs from the {len(blocks)} blocks of the table; edit `blocks`")
        if mlp_ratio is not None:
            raise ValueError("STTFormer has no mlp_ratio (its FFN is a C -> C 1x1 conv)")
        self.dim_feat = blocks[-1][1]
        self.dim_rep = dim_rep
        self.num_heads = num_heads
        self.num_joints = num_joints
        self.len_parts = len_parts
        self.maxlen = maxlen
        self.use_mask_token = use_mask_token  # ignored, see the class docstring
        self.explicit_attention = explicit_attention

        num_nodes = len_parts * num_joints
        self.input_map = nn.Sequential(
            nn.Conv2d(dim_in, blocks[0][0], 1), nn.BatchNorm2d(blocks[0][0]), nn.LeakyReLU(0.1)
        )
        self.blocks = nn.ModuleList(
            STABlock(
                c_in=c_in, c_out=c_out, qkv_dim=qkv, num_nodes=num_nodes, num_heads=num_heads, kernel_size=kernel_size
            )
            for c_in, c_out, qkv in blocks
        )
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(self.dim_feat, dim_rep))
        self.pre_logits.add_module("act", nn.Tanh())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0, Xavier-normal Linear, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def layer_attention(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """The last block's attention [B, T, H, V', V], forward's, for each index of `layers` (0 or -1).

        Inner-layer saliency (docs/method.md §8(e)) reads DSTFormer's spatial attention; this backbone's is a
        tuple attention, so it serves only the last block's, the one AGPM uses, as its single layer.
        """
        layer_indices(layers, self.attention_layers)
        if not layers:
            return []
        attn = self(x, return_attention=True)[1]
        return [attn for _ in layers]

    def token_activation(self, attn: Tensor) -> Tensor:
        """Attention each token receives: attn [B, T, H, V', V] → [B, T, V], detached, clamped at 0.

        Heads averaged, summed over the V' reading nodes (rows); tanh attention can be negative.
        """
        with torch.no_grad():
            return attn.detach().float().mean(dim=2).sum(dim=-2).clamp(min=0)  # [B, T, V', V] -> [B, T, V]

    def forward(
        self, x: Tensor, *, token_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Representation of each (sequence, frame, joint) token.

        Args:
            x: [B, T, V, C_in] with B = N·M and T ≤ maxlen.
            token_mask: optional bool [B, T, V]; True zeros that joint's input (all channels).
            return_attention: also return the last block's attention, in the layout of the module docstring.

        Returns:
            rep [B, T, V, dim_rep], or (rep, attn) with attn [B, T, H, V', V], V' = len_parts·V.
        """
        B, T, V, C_in = x.shape
        P = self.len_parts
        if T > self.maxlen:
            raise ValueError(f"sequence has {T} frames, more than maxlen={self.maxlen}")
        if V != self.num_joints:
            raise ValueError(f"input has {V} joints, the model expects {self.num_joints}")
        if token_mask is not None:
            if token_mask.shape != (B, T, V) or token_mask.dtype != torch.bool:
                got = f"{token_mask.dtype} {tuple(token_mask.shape)}"
                raise ValueError(f"token_mask must be torch.bool of shape {(B, T, V)}, got {got}")
            x = x.masked_fill(token_mask[..., None], 0.0)  # [B, T, V, C_in], masked joints -> (0, 0, 0)
        Tp = -(-T // P)  # tuples, T rounded up
        x = F.pad(x, (0, 0, 0, 0, 0, Tp * P - T))  # [B, T, V, C_in] -> [B, T'·P, V, C_in], zero frames at the end
        # [B, T'·P, V, C_in] -> [B, C_in, T'·P, V] -> [B, C_in, T', P·V]: node index f·V + j
        with full_precision(x):  # the joint coordinates are not rounded to bf16
            x = self.input_map(x.float().permute(0, 3, 1, 2).reshape(B, C_in, Tp, P * V))  # [B, C0, T', V']
        for blk in self.blocks:
            x, attn = blk(x)  # [B, C, T', V'], [B, H, V', V']
        C = x.shape[1]
        x = x.reshape(B, C, Tp * P, V).permute(0, 2, 3, 1)[:, :T]  # [B, C, T', V'] -> [B, T'·P, V, C] -> [B, T, V, C]
        rep = self.pre_logits(x)  # [B, T, V, dim_rep]
        if not return_attention:
            return rep
        H = self.num_heads
        # A[u = f·V + j, v] -> frame t = (tuple, f) gets, for its joints j, the weights onto every reader v:
        # [B, H, V', V'] -> [B, H, P, V, V'] -> [B, P, H, V', V] (rows = readers v, columns = joints j of frame f)
        per_frame = attn.reshape(B, H, P, V, P * V).permute(0, 2, 1, 4, 3)
        frame_in_tuple = torch.arange(T, device=x.device) % P  # [T]
        return rep, per_frame[:, frame_in_tuple]  # [B, T, H, V', V]

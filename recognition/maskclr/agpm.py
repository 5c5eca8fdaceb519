"""Attention-guided probabilistic masking (AGPM), docs/method.md §5.

Pure tensor functions. The model supplies the spatial attention probabilities of its last ST block
(`[N, M, T, H, V, V]`, rows = queries) and consumes a bool token mask `[N, M, T, V]` (True = replace that token's
joint embedding with the learnable mask token). Nothing here has parameters or gradients.

- `joint_activation`: attention map -> per-token joint score a (§5.1).
- `agpm_mask`: score -> Gumbel-top-k token mask, per joint across the batch (HEAD, §5.2) or per sample (§5.3 proposal).
- `v1_input_mask` + `apply_input_zero_mask`: the older v1 variant (per-frame softmax, global threshold, 27-frame
  tubes, zeroed input joints), kept for ablations (§5.3).

Random numbers come only from the optional `generator` (or torch's global RNG); seeds are set by the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-10  # the official code's epsilon, in the max-normalisation and in the Gumbel transform
AXES = ("joint", "sample")


def joint_activation(attn: torch.Tensor) -> torch.Tensor:
    """Attention received by each joint: mean over heads, sum over queries (§5.1).

    Args:
        attn: spatial attention probabilities [N, M, T, H, V, V]; rows (dim -2) are queries, softmax over keys.

    Returns:
        float32 scores [N, M, T, V], detached. Each token's scores sum to V (its V query rows each sum to 1).
    """
    if attn.dim() != 6 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be [N, M, T, H, V, V], got {tuple(attn.shape)}")
    with torch.no_grad():
        a = attn.detach().float().mean(dim=3)  # [N, M, T, V, V], mean over heads
        return a.sum(dim=-2)  # [N, M, T, V], sum over queries -> attention received by each key joint


def _num_masked(length: int, ratio: float) -> int:
    """Tokens masked out of `length`: L - int(L·(1-r)), exactly as the official `len_keep` (MAE style)."""
    return length - int(length * (1 - ratio))


def _gumbel(shape: torch.Size, *, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise with the official epsilons: -log(-log(u + 1e-10) + 1e-10), u ~ U(0, 1)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return -torch.log(-torch.log(u + _EPS) + _EPS)


def _perturbed_log_probs(
    rows: torch.Tensor, *, tau: float, generator: torch.Generator | None, noise: bool
) -> torch.Tensor:
    """log softmax(S / (τ·max S + 1e-10)) + Gumbel along the last dim; rows [R, L] -> [R, L].

    log_softmax equals the official log(softmax(·)) wherever the softmax does not underflow (always at τ = 0.75,
    where s̃ ∈ [0, 1.33]) and keeps the ranking s̃ + Gumbel exact for tiny τ.
    """
    s = rows / (tau * rows.amax(dim=-1, keepdim=True) + _EPS)  # [R, L], s̃ ∈ [0, 1/τ] for non-negative scores
    g = F.log_softmax(s, dim=-1)  # [R, L], log π
    if noise:
        g = g + _gumbel(g.shape, device=g.device, generator=generator)
    return g


def _top_mask(g: torch.Tensor, n_mask: int) -> torch.Tensor:
    """bool mask [R, L], True at the n_mask largest entries of each row of g."""
    mask = torch.zeros_like(g, dtype=torch.bool)  # [R, L]
    if n_mask > 0:
        mask.scatter_(-1, g.topk(n_mask, dim=-1).indices, True)
    return mask


def _check_common(scores: torch.Tensor, ratio: float, tau: float) -> None:
    if scores.dim() != 4:
        raise ValueError(f"scores must be [N, M, T, V], got {tuple(scores.shape)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if not tau > 0.0:
        raise ValueError(f"tau must be > 0, got {tau}")


def agpm_mask(
    scores: torch.Tensor,
    *,
    ratio: float = 0.5,
    tau: float = 0.75,
    axis: str = "joint",
    generator: torch.Generator | None = None,
    noise: bool = True,
) -> torch.Tensor:
    """Gumbel-top-k token mask biased towards the most attended tokens (§5.2, §5.3).

    Within each group of L tokens the scores are normalised s̃ = S / (τ·max S + 1e-10), turned into π = softmax(s̃),
    perturbed g = log π + Gumbel, and the L - ⌊L·(1 - r)⌋ largest g are masked (the official code keeps
    K = int(L·(1 - r)) tokens). This equals ⌊L·r⌋ whenever L·r is an integer; otherwise it is ⌈L·r⌉, e.g. L = 7,
    r = 0.3 masks 3, not 2.

    Args:
        scores: joint activation [N, M, T, V] (`joint_activation`), non-negative.
        ratio: masking ratio r.
        tau: temperature τ of the max-normalisation; smaller τ means a sharper bias to high scores.
        axis: "joint" (official HEAD, §5.2): one group per joint v holding all L = N·M·T (sample, person, frame)
            tokens of the batch, so every joint is masked in exactly L - ⌊L(1-r)⌋ slots of the batch.
            "sample" (§5.3 proposal, MAMP style): one group per sample n holding its L_n = M·T·V tokens.
        generator: torch.Generator on scores' device for the uniform draws; None uses the global RNG.
        noise: False drops the Gumbel term, so exactly the top-scored tokens are masked (for tests and analysis).

    Returns:
        bool [N, M, T, V], True = masked.
    """
    _check_common(scores, ratio, tau)
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    N, M, T, V = scores.shape
    s = scores.detach().float()
    if axis == "joint":
        rows = s.reshape(N * M * T, V).t()  # [V, L], one row per joint (the official J x NMT layout)
        g = _perturbed_log_probs(rows, tau=tau, generator=generator, noise=noise)  # [V, L]
        mask = _top_mask(g, _num_masked(N * M * T, ratio))  # [V, L]
        return mask.t().reshape(N, M, T, V)
    rows = s.reshape(N, M * T * V)  # [N, M·T·V], one row per sample
    g = _perturbed_log_probs(rows, tau=tau, generator=generator, noise=noise)  # [N, M·T·V]
    return _top_mask(g, _num_masked(M * T * V, ratio)).reshape(N, M, T, V)


def v1_input_mask(
    scores: torch.Tensor,
    *,
    ratio: float = 0.2,
    tau: float = 0.75,
    tube_len: int = 27,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The older v1 AGPM mask (§5.3): per-frame softmax, one global top-r threshold, then tube masking.

    0. The score a of a frame's joints is softmax over the V joints of the activation, as the official v1 backbone
       (`DSTformer.py`) hands it to the masker.
    1. Per frame: π = softmax over the V joints of a / (τ·max_v a + 1e-10); g = log π + Gumbel.
    2. Mask the L - ⌊L·(1 - r)⌋ largest g over all L = N·M·T·V entries (the official threshold
       `g > sorted(g)[int((1 - r)·L)]` masks one entry fewer; the count rule is shared with `agpm_mask` instead).
    3. Tubes: frames are split into segments of `tube_len`; each segment copies the mask of its middle frame
       (offset tube_len // 2, clamped to the last frame when the last segment is shorter). So the masked fraction
       is ≈ r, exact only in expectation.

    Args:
        scores: joint activation [N, M, T, V].
        ratio: fraction r of entries masked before tube copying.
        tau: temperature τ.
        tube_len: segment length in frames (27 → 9 segments for T = 243).
        generator: torch.Generator on scores' device; None uses the global RNG.

    Returns:
        bool [N, M, T, V], True = masked (zero those joints with `apply_input_zero_mask`).
    """
    _check_common(scores, ratio, tau)
    if tube_len < 1:
        raise ValueError(f"tube_len must be >= 1, got {tube_len}")
    N, M, T, V = scores.shape
    rows = scores.detach().float().reshape(N * M * T, V).softmax(dim=-1)  # [L_frames, V], step 0, one row per frame
    g = _perturbed_log_probs(rows, tau=tau, generator=generator, noise=True)  # [N·M·T, V]
    flat = _top_mask(g.reshape(1, -1), _num_masked(g.numel(), ratio))  # [1, N·M·T·V], global threshold
    mask = flat.reshape(N, M, T, V)
    starts = torch.arange(0, T, tube_len, device=mask.device)  # [S], first frame of each segment
    middle = (starts + tube_len // 2).clamp(max=T - 1)  # [S], frame whose mask the segment copies
    segment = torch.arange(T, device=mask.device) // tube_len  # [T], segment of each frame
    return mask[:, :, middle[segment]]  # [N, M, T, V]


def apply_input_zero_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked joints of an input clip (x = y = conf = 0), as v1 AGPM does.

    Args:
        x: input [N, M, T, V, C].
        mask: bool [N, M, T, V], True = zero that joint.

    Returns:
        A new tensor like x; gradients still flow to the unmasked entries.
    """
    if x.dim() != 5 or mask.shape != x.shape[:4]:
        raise ValueError(f"need x [N, M, T, V, C] and mask [N, M, T, V], got {tuple(x.shape)} and {tuple(mask.shape)}")
    return x.masked_fill(mask.unsqueeze(-1), 0.0)  # [N, M, T, V, C]

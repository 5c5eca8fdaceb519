"""AGPM masking (docs/method.md §5): counts, bias towards attended tokens, seeding, v1 tubes."""

import math

import pytest
import torch

from recognition.maskclr.agpm import agpm_mask, apply_input_zero_mask, joint_activation, v1_input_mask


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expected_masked(length: int, ratio: float) -> int:
    return length - math.floor(length * (1 - ratio))


def test_joint_activation_hand_example():
    # one token, H = 2 heads, V = 2 joints; rows are queries
    attn = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.5, 0.5]]]).reshape(1, 1, 1, 2, 2, 2)
    # head mean [[0.5, 0.5], [0.75, 0.25]] -> column sums [1.25, 0.75]
    assert torch.allclose(joint_activation(attn), torch.tensor([1.25, 0.75]).reshape(1, 1, 1, 2))


def test_joint_activation_sums_to_v_and_has_no_grad():
    logits = torch.randn(2, 2, 3, 4, 5, 5, generator=_gen(0), requires_grad=True)
    a = joint_activation(logits.softmax(dim=-1))
    assert a.shape == (2, 2, 3, 5)
    assert not a.requires_grad
    assert torch.allclose(a.sum(dim=-1), torch.full((2, 2, 3), 5.0))


@pytest.mark.parametrize(
    "shape, ratio",
    [((1, 1, 3, 4), 0.5), ((1, 1, 5, 4), 0.5), ((2, 2, 5, 3), 0.5), ((1, 1, 7, 3), 0.3), ((1, 2, 5, 3), 0.2)],
)
def test_joint_axis_masks_fixed_count_per_joint(shape, ratio):
    N, M, T, V = shape
    scores = torch.rand(shape, generator=_gen(1))
    mask = agpm_mask(scores, ratio=ratio, axis="joint", generator=_gen(2))
    assert mask.dtype == torch.bool and mask.shape == shape
    per_joint = mask.sum(dim=(0, 1, 2))  # [V]
    assert per_joint.tolist() == [_expected_masked(N * M * T, ratio)] * V


def test_count_rule_matches_floor_lr_when_integer_and_rounds_up_otherwise():
    assert _expected_masked(10, 0.2) == 2 == math.floor(10 * 0.2)
    assert _expected_masked(7, 0.3) == 3  # ⌊7·0.3⌋ = 2: the official keep-count rule masks one more


@pytest.mark.parametrize("shape, ratio", [((3, 1, 3, 5), 0.5), ((2, 2, 3, 3), 0.3)])
def test_sample_axis_masks_fixed_count_per_sample(shape, ratio):
    N, M, T, V = shape
    mask = agpm_mask(torch.rand(shape, generator=_gen(3)), ratio=ratio, axis="sample", generator=_gen(4))
    assert mask.sum(dim=(1, 2, 3)).tolist() == [_expected_masked(M * T * V, ratio)] * N


def _hot_scores(shape, axis, n_hot, high, low_max, seed):
    """Scores [N, M, T, V] where each masking group holds n_hot known tokens scoring `high` (+ tiny distinct
    offsets) and all other tokens score below `low_max`. Returns (scores, hot)."""
    N, M, T, V = shape
    g = _gen(seed)
    groups, size = (V, N * M * T) if axis == "joint" else (N, M * T * V)
    ranks = torch.rand(groups, size, generator=g).argsort(dim=1).argsort(dim=1)  # [G, L], a random permutation
    hot = ranks < n_hot  # [G, L], n_hot tokens per group
    high_scores = high + 0.01 * torch.rand(groups, size, generator=g)  # [G, L], distinct, all ≥ high
    low_scores = low_max * torch.rand(groups, size, generator=g)  # [G, L], all < low_max
    scores = torch.where(hot, high_scores, low_scores)  # [G, L]
    if axis == "joint":  # [V, N·M·T] -> [N, M, T, V]
        return scores.t().reshape(shape), hot.t().reshape(shape)
    return scores.reshape(shape), hot.reshape(shape)


@pytest.mark.parametrize("axis", ["joint", "sample"])
def test_without_noise_the_most_attended_tokens_are_masked(axis):
    shape, ratio = (2, 2, 3, 4), 0.5
    group = 2 * 2 * 3 if axis == "joint" else 2 * 3 * 4
    scores, hot = _hot_scores(shape, axis, _expected_masked(group, ratio), high=2.0, low_max=1.0, seed=5)
    assert torch.equal(agpm_mask(scores, ratio=ratio, axis=axis, noise=False), hot)


@pytest.mark.parametrize("axis", ["joint", "sample"])
def test_tiny_tau_with_noise_masks_the_most_attended_tokens(axis):
    # s̃ = S/(τ·max): hot ≈ 1/τ = 100, others ≤ 40; the Gumbel term lies in about [-3.2, 23], so the gap of 60
    # can never be bridged and the mask is exact for every draw
    shape, ratio = (2, 2, 3, 4), 0.5
    group = 2 * 2 * 3 if axis == "joint" else 2 * 3 * 4
    scores, hot = _hot_scores(shape, axis, _expected_masked(group, ratio), high=1.0, low_max=0.4, seed=6)
    for seed in range(3):
        assert torch.equal(agpm_mask(scores, ratio=ratio, tau=0.01, axis=axis, generator=_gen(seed)), hot)


@pytest.mark.parametrize("axis", ["joint", "sample"])
def test_gumbel_draws_follow_the_generator(axis):
    scores = torch.rand(2, 2, 8, 5, generator=_gen(7))
    m1 = agpm_mask(scores, axis=axis, generator=_gen(11))
    m2 = agpm_mask(scores, axis=axis, generator=_gen(11))
    m3 = agpm_mask(scores, axis=axis, generator=_gen(12))
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, m3)


def test_bad_arguments_raise():
    scores = torch.rand(1, 1, 2, 3)
    with pytest.raises(ValueError, match="axis"):
        agpm_mask(scores, axis="frame")
    with pytest.raises(ValueError, match="ratio"):
        agpm_mask(scores, ratio=1.5)
    with pytest.raises(ValueError, match="tau"):
        agpm_mask(scores, tau=0.0)
    with pytest.raises(ValueError, match="N, M, T, V"):
        agpm_mask(torch.rand(2, 3, 4))


def test_v1_masks_about_r_and_tubes_are_constant():
    N, M, T, V, tube = 8, 2, 81, 17, 27
    mask = v1_input_mask(torch.rand(N, M, T, V, generator=_gen(8)), ratio=0.2, tube_len=tube, generator=_gen(9))
    assert mask.shape == (N, M, T, V)
    assert abs(mask.float().mean().item() - 0.2) < 0.05
    for start in range(0, T, tube):
        segment = mask[:, :, start : start + tube]  # [N, M, tube, V]
        assert torch.equal(segment, segment[:, :, :1].expand_as(segment))


def test_v1_short_last_segment_copies_a_frame_inside_it():
    mask = v1_input_mask(torch.rand(2, 1, 30, 5, generator=_gen(10)), ratio=0.5, tube_len=27, generator=_gen(1))
    last = mask[:, :, 27:]  # frames 27..29, middle offset 13 clamped to frame 29
    assert torch.equal(last, last[:, :, :1].expand_as(last))


def test_v1_segments_copy_their_middle_frame():
    # per frame one hot joint (t mod V); with tiny τ its log π is ≈ 0 and every other joint's is ≈ -70, so the
    # global top-(1/V) picks exactly the hot joint of each frame; tubes of 4 over T = 10 copy frames 2, 6 and 9
    # (8 + 2 = 10 clamped to the last frame)
    T, V = 10, 5
    hot = torch.zeros(1, 1, T, V, dtype=torch.bool)
    hot[0, 0, torch.arange(T), torch.arange(T) % V] = True
    scores = torch.where(hot, 1.0, 0.3)
    mask = v1_input_mask(scores, ratio=1 / V, tau=0.01, tube_len=4, generator=_gen(14))
    source_frame = torch.tensor([2, 2, 2, 2, 6, 6, 6, 6, 9, 9])
    assert torch.equal(mask, hot[:, :, source_frame])


def test_apply_input_zero_mask_zeroes_all_channels_of_masked_joints():
    x = torch.rand(2, 2, 3, 4, 3, generator=_gen(12)) + 1.0
    mask = torch.rand(2, 2, 3, 4, generator=_gen(13)) > 0.5
    out = apply_input_zero_mask(x, mask)
    assert torch.all(out[mask] == 0)
    assert torch.equal(out[~mask], x[~mask])


def test_v1_scores_are_softmaxed_over_joints_first():
    """The official v1 backbone hands the masker softmax_j(activation): masking the activation equals the pipeline
    written out step by step on softmax scores (tube length 1, so no copying)."""
    scores = torch.rand(2, 2, 6, 17, generator=_gen(21)) * 5
    mask = v1_input_mask(scores, ratio=0.3, tau=0.75, tube_len=1, generator=_gen(22))
    a = scores.softmax(dim=-1)
    s = a / (0.75 * a.amax(dim=-1, keepdim=True) + 1e-10)
    u = torch.rand(a.shape, generator=_gen(22))
    g = torch.log_softmax(s, dim=-1) - torch.log(-torch.log(u + 1e-10) + 1e-10)
    n = g.numel() - int(g.numel() * 0.7)
    want = torch.zeros(g.numel(), dtype=torch.bool)
    want[g.flatten().argsort(descending=True)[:n]] = True
    assert torch.equal(mask, want.reshape(mask.shape))

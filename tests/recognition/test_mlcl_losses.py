"""MLCL losses (docs/method.md §6) on hand-checkable cases."""

import io
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from recognition.maskclr.losses import (
    ClassContrastLoss,
    MLCLLoss,
    adjusted_nt_xent,
    sample_confidence,
    supcon_loss,
)

TAU = 0.5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _textbook_nt_xent(a, b, tau):
    """SimCLR NT-Xent as cross-entropy over similarity logits with the self-similarity removed."""
    B = a.shape[0]
    u = F.normalize(torch.cat([a, b]), dim=1)  # [2B, D]
    sim = u @ u.t() / tau  # [2B, 2B]
    off_diag = ~torch.eye(2 * B, dtype=torch.bool)
    logits = sim[off_diag].reshape(2 * B, 2 * B - 1)  # row k without column k
    k = torch.arange(2 * B)
    pos = (k + B) % (2 * B)
    target = torch.where(pos > k, pos - 1, pos)  # column index after removing the diagonal
    return F.cross_entropy(logits, target)


def test_adjusted_nt_xent_without_weight_is_textbook_nt_xent():
    a, b = torch.randn(5, 7, generator=_gen(0)), torch.randn(5, 7, generator=_gen(1))
    assert torch.allclose(adjusted_nt_xent(a, b, temperature=TAU), _textbook_nt_xent(a, b, TAU), atol=1e-6)
    ones = torch.ones(5)
    assert torch.allclose(adjusted_nt_xent(a, b, temperature=TAU, weight=ones), _textbook_nt_xent(a, b, TAU), atol=1e-6)


def test_identical_orthogonal_views_reach_the_analytic_value():
    B = 4
    a = torch.eye(B, 6) * 3.0  # mutually orthogonal rows; scale must not matter (cosine)
    expected = -math.log(math.exp(1 / TAU) / (math.exp(1 / TAU) + (2 * B - 2) * math.exp(0.0)))
    identical = adjusted_nt_xent(a, a.clone(), temperature=TAU)
    assert identical.item() == pytest.approx(expected, rel=1e-6)
    random_views = adjusted_nt_xent(a, torch.randn(B, 6, generator=_gen(2)), temperature=TAU)
    assert identical < random_views


def test_weight_adds_minus_mean_log_weight():
    a, b = torch.randn(3, 4, generator=_gen(3)), torch.randn(3, 4, generator=_gen(4))
    w = torch.tensor([0.2, 0.5, 0.9])
    base = adjusted_nt_xent(a, b, temperature=TAU)
    assert torch.allclose(adjusted_nt_xent(a, b, temperature=TAU, weight=w), base - torch.log(w).mean(), atol=1e-6)


def test_adjusted_nt_xent_is_invariant_to_a_joint_permutation_of_pairs():
    a, b = torch.randn(6, 4, generator=_gen(5)), torch.randn(6, 4, generator=_gen(6))
    w = torch.rand(6, generator=_gen(7)) + 0.1
    perm = torch.randperm(6, generator=_gen(8))
    assert torch.allclose(
        adjusted_nt_xent(a, b, weight=w), adjusted_nt_xent(a[perm], b[perm], weight=w[perm]), atol=1e-6
    )


def test_sample_confidence_over_classes_and_over_batch():
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    e = math.e
    over_classes = sample_confidence(logits, labels, dim=1)
    assert over_classes.tolist() == pytest.approx([e**2 / (e + e**2), 0.5])
    # dim 0: exp(z_{i,y_i}) / Σ_b exp(z_{b,y_i}); column 1 holds (2, 0), column 0 holds (1, 0)
    over_batch = sample_confidence(logits, labels, dim=0)
    assert over_batch.tolist() == pytest.approx([e**2 / (e**2 + 1), 1 / (e + 1)])
    with pytest.raises(ValueError):
        sample_confidence(logits, labels, dim=2)


# Class-level loss. Logits are log-probabilities, so P = softmax(logits) is the table written here.
# Batch 1, labels (0, 0, 1, 1): sample 0 TP of class 0; sample 1 predicted 1 → FN of class 0 and FP of class 1;
# samples 2, 3 TP of class 1. Class 2 never appears.
P1 = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]])
Y1 = torch.tensor([0, 0, 1, 1])
# Batch 2, labels (0, 2): sample 0 TP of class 0; sample 1 predicted 0 → FN of class 2 (not initialised, so no
# triple) and FP of class 0.
P2 = torch.tensor([[0.5, 0.25, 0.25], [0.6, 0.3, 0.1]])
Y2 = torch.tensor([0, 2])


def _pair_term(anchor, other, weight):
    """adjusted NT-Xent of one (anchor, other, ω) triple duplicated: rows [M, M, ν, ν], each row's denominator is
    e^{1/τ} (its copy) + 2·e^{c/τ}, c = cos(M, ν)."""
    c = F.cosine_similarity(anchor, other, dim=0).item()
    return -math.log(weight) - c / TAU + math.log(math.exp(1 / TAU) + 2 * math.exp(c / TAU))


def test_class_loss_memory_ema_over_two_batches():
    loss_fn = ClassContrastLoss(num_classes=3)
    loss_fn(P1.log(), Y1)
    m0, m1 = P1[0], (P1[2] + P1[3]) / 2  # first update sets M_c = mean TP probabilities
    assert torch.allclose(loss_fn.memory, torch.stack([m0, m1, torch.zeros(3)]), atol=1e-6)
    assert loss_fn.initialised.tolist() == [True, True, False]
    loss_fn(P2.log(), Y2)
    m0 = 0.9 * m0 + 0.1 * P2[0]
    assert torch.allclose(loss_fn.memory, torch.stack([m0, m1, torch.zeros(3)]), atol=1e-6)
    assert loss_fn.initialised.tolist() == [True, True, False]


def test_class_loss_value_by_hand():
    loss_fn = ClassContrastLoss(num_classes=3)
    # FN list: class 0 (M_0 = P1[0], ν = P1[1], ω_0 = mean(0.7, 0.3)); FP list: class 1 (M_1, ν = P1[1],
    # ω_1 = mean(0.8, 0.5))
    m1 = (P1[2] + P1[3]) / 2
    expected = _pair_term(P1[0], P1[1], 0.5) + 5.0 - _pair_term(m1, P1[1], 0.65)
    assert loss_fn(P1.log(), Y1).item() == pytest.approx(expected, rel=1e-5)
    # batch 2 uses the already updated M_0 and ω_0 = P2[0, 0]; class 2's FN has no centroid yet
    m0 = 0.9 * P1[0] + 0.1 * P2[0]
    assert loss_fn(P2.log(), Y2).item() == pytest.approx(5.0 - _pair_term(m0, P2[1], 0.5), rel=1e-5)
    # batch 3, label 0 predicted 1: FN of class 0; class 1 is a false positive but not among the labels, so it
    # adds no FP triple; no TP of class 0, so M_0 stays as after batch 2
    p3 = torch.tensor([[0.4, 0.5, 0.1]])
    assert loss_fn(p3.log(), torch.tensor([0])).item() == pytest.approx(_pair_term(m0, p3[0], 0.4), rel=1e-5)


def test_class_loss_is_zero_without_fn_or_fp():
    loss_fn = ClassContrastLoss(num_classes=3)
    all_correct = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]).log()
    assert loss_fn(all_correct, torch.tensor([0, 1])).item() == 0.0
    # a class with FN but no centroid yet gives nothing either
    fresh = ClassContrastLoss(num_classes=3)
    assert fresh(torch.tensor([[0.1, 0.8, 0.1]]).log(), torch.tensor([2])).item() == 0.0


def test_class_loss_update_false_keeps_memory():
    loss_fn = ClassContrastLoss(num_classes=3)
    loss_fn(P1.log(), Y1, update=False)
    assert not loss_fn.initialised.any() and torch.all(loss_fn.memory == 0)


def test_class_loss_detached_mode_has_zero_gradient(caplog):
    with caplog.at_level(logging.WARNING, logger="recognition.maskclr.losses"):
        loss_fn = ClassContrastLoss(num_classes=3, detach=True)
    assert "no gradient" in caplog.text
    logits = P1.log().requires_grad_()
    loss = loss_fn(logits, Y1)
    assert loss.item() > 0 and not loss.requires_grad
    (loss + 0.0 * logits.sum()).backward()  # as inside a total loss
    assert logits.grad is None or torch.all(logits.grad == 0)


def test_class_loss_default_mode_has_gradient():
    loss_fn = ClassContrastLoss(num_classes=3)
    logits = P1.log().requires_grad_()
    loss_fn(logits, Y1).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert not loss_fn.memory.requires_grad


def test_class_loss_memory_survives_state_dict_round_trip():
    loss_fn = ClassContrastLoss(num_classes=3)
    loss_fn(P1.log(), Y1)
    buffer = io.BytesIO()
    torch.save(loss_fn.state_dict(), buffer)
    buffer.seek(0)
    restored = ClassContrastLoss(num_classes=3)
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored.memory, loss_fn.memory)
    assert torch.equal(restored.initialised, loss_fn.initialised)


def _loop_supcon(a, b, labels, tau, base_tau, rowmax=False):
    feats = torch.cat([a, b]).tolist()
    lab = labels.tolist() * 2
    n = len(feats)
    total = 0.0
    for i in range(n):
        s = [sum(x * y for x, y in zip(feats[i], feats[j])) / tau for j in range(n)]
        if rowmax:
            s = [v / max(s) for v in s]
        log_denominator = math.log(sum(math.exp(s[j]) for j in range(n) if j != i))
        positives = [j for j in range(n) if j != i and lab[j] == lab[i]]
        total += -(tau / base_tau) * sum(s[p] - log_denominator for p in positives) / len(positives)
    return total / n


def test_supcon_matches_a_loop_implementation_and_rowmax_changes_it():
    a = F.normalize(torch.randn(4, 3, generator=_gen(9)), dim=1)
    b = F.normalize(torch.randn(4, 3, generator=_gen(10)), dim=1)
    labels = torch.tensor([0, 1, 0, 2])
    standard = supcon_loss(a, b, labels, temperature=0.5, base_temperature=0.07)
    assert standard.item() == pytest.approx(_loop_supcon(a, b, labels, 0.5, 0.07), rel=1e-5)
    rowmax = supcon_loss(a, b, labels, temperature=0.5, base_temperature=0.07, faithful_rowmax=True)
    assert rowmax.item() == pytest.approx(_loop_supcon(a, b, labels, 0.5, 0.07, rowmax=True), rel=1e-5)
    assert abs(rowmax.item() - standard.item()) > 1e-3


def test_mlcl_tcl_combines_both_terms():
    logits, logits_masked = torch.randn(4, 3, generator=_gen(11)), torch.randn(4, 3, generator=_gen(12))
    labels = torch.tensor([0, 1, 2, 1])
    loss_fn = MLCLLoss(num_classes=3, sc_p_dim=0)
    out = loss_fn(logits, logits_masked, labels)
    p = sample_confidence(logits, labels, dim=0)
    assert torch.allclose(out["loss_sc"], adjusted_nt_xent(logits, logits_masked, weight=p))
    reference = ClassContrastLoss(num_classes=3)
    assert torch.allclose(out["loss_cc"], reference(logits, labels))
    assert torch.allclose(loss_fn.class_contrast.memory, reference.memory)
    assert torch.allclose(out["total_contrastive"], 0.5 * out["loss_sc"] + 0.5 * out["loss_cc"])
    assert "class_contrast.memory" in loss_fn.state_dict()


def test_mlcl_sample_term_uses_the_given_embedding_pair():
    logits, logits_masked = torch.randn(4, 3, generator=_gen(13)), torch.randn(4, 3, generator=_gen(14))
    h, h_masked = torch.randn(4, 8, generator=_gen(15)), torch.randn(4, 8, generator=_gen(16))
    labels = torch.tensor([0, 1, 2, 1])
    out = MLCLLoss(num_classes=3)(logits, logits_masked, labels, z=h, z_masked=h_masked)
    p = sample_confidence(logits, labels, dim=1)
    assert torch.allclose(out["loss_sc"], adjusted_nt_xent(h, h_masked, weight=p))
    with pytest.raises(ValueError):
        MLCLLoss(num_classes=3)(logits, logits_masked, labels, z=h)


def test_mlcl_cl_mode_is_nt_xent_plus_supcon():
    logits, logits_masked = torch.randn(4, 3, generator=_gen(17)), torch.randn(4, 3, generator=_gen(18))
    labels = torch.tensor([0, 1, 0, 2])
    out = MLCLLoss(num_classes=3, cl_type="cl", lambda_sc=1.0, lambda_cc=2.0)(logits, logits_masked, labels)
    assert torch.allclose(out["loss_sc"], _textbook_nt_xent(logits, logits_masked, TAU), atol=1e-6)
    assert torch.allclose(out["loss_cc"], supcon_loss(logits, logits_masked, labels))
    assert torch.allclose(out["total_contrastive"], out["loss_sc"] + 2.0 * out["loss_cc"])
    with pytest.raises(ValueError, match="cl_type"):
        MLCLLoss(num_classes=3, cl_type="supcon")

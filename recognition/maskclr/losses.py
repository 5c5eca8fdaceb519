"""MaskCLR's multi-level contrastive losses (MLCL), docs/method.md §6.

- `adjusted_nt_xent`: NT-Xent over two views with a per-pair weight on the positive (§6.2).
- `sample_confidence`: the weight p of L_sc; `dim=0` is the official batch-softmax quirk (switch F2).
- `ClassContrastLoss`: targeted class-level loss L_cc with its EMA memory of true-positive centroids (§6.3);
  `detach=True` is the official zero-gradient behaviour (switch F1).
- `supcon_loss`: supervised contrastive loss for `cl_type="cl"`; `faithful_rowmax` is switch F8.
- `MLCLLoss`: λ_sc·L_sc + λ_cc·L_cc; the training loop adds L_CE (§6.4).

The class-level loss lives in softmax-probability space of the classifier logits, so it always takes logits; the
sample-level loss takes whichever embedding pair the caller chooses (logits at HEAD, the 2048-d hidden h as an
ablation, §11.2).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

CL_TYPES = ("tcl", "cl")


def _cosine_matrix(u: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity [R, D] -> [R, R] (norm product clamped at 1e-16, as the official code)."""
    norm = u.norm(dim=1)  # [R]
    return (u @ u.t()) / (norm[:, None] * norm[None, :]).clamp(min=1e-16)  # [R, R]


def adjusted_nt_xent(
    a: torch.Tensor, b: torch.Tensor, *, temperature: float = 0.5, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted NT-Xent over two views (§6.2).

    u = [a; b] (2B rows), c_kl = cos(u_k, u_l), the positive of row k is pos(k) = k ± B, w_k = weight[k mod B]:
    L = mean_k -log(w_k·exp(c_{k,pos(k)}/τ) / Σ_{l≠k} exp(c_kl/τ)). The denominator drops only the self term and
    keeps the positive, so weight=None (w ≡ 1) is SimCLR's NT-Xent and L(w) = L(1) - mean_i log w_i.

    Args:
        a: first view [B, D].
        b: second view [B, D]; row i is the positive of a's row i.
        temperature: τ.
        weight: optional positive weights [B] (not detached here: the caller decides).

    Returns:
        Scalar float32 loss.
    """
    if a.dim() != 2 or a.shape != b.shape or a.shape[0] < 1:
        raise ValueError(f"a and b must both be [B, D] with B >= 1, got {tuple(a.shape)} and {tuple(b.shape)}")
    B = a.shape[0]
    if weight is not None and weight.shape != (B,):
        raise ValueError(f"weight must be [B] = [{B}], got {tuple(weight.shape)}")
    u = torch.cat([a, b], dim=0).float()  # [2B, D]
    logits = _cosine_matrix(u) / temperature  # [2B, 2B]
    rows = torch.arange(2 * B, device=u.device)  # [2B]
    positives = logits[rows, (rows + B) % (2 * B)]  # [2B], c_{k,pos(k)}/τ
    self_mask = torch.eye(2 * B, dtype=torch.bool, device=u.device)  # [2B, 2B]
    denominator = torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)  # [2B], Σ over l ≠ k
    loss = denominator - positives  # [2B], -log(exp(pos)/Σ_{l≠k})
    if weight is not None:
        loss = loss - torch.log(weight.float()).repeat(2)  # [2B], w_k = weight[k mod B]
    return loss.mean()


def sample_confidence(logits: torch.Tensor, labels: torch.Tensor, *, dim: int = 1) -> torch.Tensor:
    """Confidence p_i of sample i in its ground-truth class, the weight of L_sc (§6.2, switch F2).

    Args:
        logits: [B, C].
        labels: int64 [B].
        dim: 1 (fixed default): p_i = softmax(z_i)_{y_i}, softmax over classes. 0 (official quirk): softmax over the
            batch, p_i = exp(z_{i,y_i}) / Σ_b exp(z_{b,y_i}).

    Returns:
        [B], not detached.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (official, over the batch) or 1 (over classes), got {dim}")
    probs = F.softmax(logits.float(), dim=dim)  # [B, C]
    return probs.gather(1, labels.long()[:, None]).squeeze(1)  # [B]


class ClassContrastLoss(nn.Module):
    """Targeted class-level contrastive loss L_cc with an ambiguity penalty ω (§6.3).

    The buffer `memory` [C, C] holds one true-positive centroid per class in softmax-probability space (EMA, never
    carrying gradient); `initialised` [C] marks rows set at least once. It replaces the official "M_c = 0" test:
    a set row is a probability vector (sums to 1) and can never return to 0, so the two behave identically. Both
    buffers are in state_dict, so checkpoints carry the memory.

    Per batch, with P = softmax(z), ŷ = argmax P and, for each class c among the labels, TP_c / FN_c / FP_c:
    1. if TP_c ≠ ∅ (and update): M_c ← mean_{TP_c} P on first use, else α·M_c + (1-α)·mean_{TP_c} P (P detached);
    2. ω_c = mean_{i: y_i = c} P_{i,c};
    3. if M_c is set: (updated M_c, mean_{FN_c} P, ω_c) joins the FN list when FN_c ≠ ∅, likewise for FP;
    4. each list is concatenated with itself; L_FN = adjusted_nt_xent(M, ν_FN, weight=ω),
       L_FP = push_margin - adjusted_nt_xent(M, ν_FP, weight=ω); an empty list gives 0; L_cc = L_FN + L_FP.
    The steps are vectorised over classes; per class they happen in this order.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        alpha: float = 0.9,
        temperature: float = 0.5,
        detach: bool = False,
        push_margin: float = 5.0,
    ) -> None:
        """
        Args:
            num_classes: C.
            alpha: EMA factor α of the centroid memory.
            temperature: τ of the adjusted NT-Xent.
            detach: True (faithful, switch F1) computes P, ν and ω from z.detach(): the loss has no gradient and is
                only logged. False (default) lets P, ν and ω carry gradient; the memory stays detached.
            push_margin: the constant in L_FP = push_margin - adjusted_nt_xent(...) (5 in the official code).
        """
        super().__init__()
        self.num_classes = num_classes
        self.alpha = alpha
        self.temperature = temperature
        self.detach = detach
        self.push_margin = push_margin
        self.register_buffer("memory", torch.zeros(num_classes, num_classes))  # [C, C], row c = TP centroid of c
        self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))  # [C]
        if detach:
            logger.warning(
                "class-level loss L_cc built with detach=True (faithful mode, official behaviour): "
                "it carries no gradient and is only logged"
            )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, *, update: bool = True) -> torch.Tensor:
        """
        Args:
            logits: classifier logits z [B, C] of the standard view.
            labels: int64 [B].
            update: update the memory from this batch (False on validation batches unless switch F7 is faithful).

        Returns:
            Scalar L_cc; it does not require grad when detach=True or when both lists are empty.
        """
        B, C = logits.shape
        if C != self.num_classes or labels.shape != (B,):
            raise ValueError(
                f"need logits [B, {self.num_classes}] and labels [B], got {tuple(logits.shape)}, {tuple(labels.shape)}"
            )
        probs = F.softmax((logits.detach() if self.detach else logits).float(), dim=1)  # [B, C]
        y = F.one_hot(labels.long(), C).float()  # [B, C], y[i, c] = [y_i = c]
        y_hat = F.one_hot(probs.argmax(dim=1), C).float()  # [B, C], [ŷ_i = c]
        tp, fn, fp = y * y_hat, y * (1 - y_hat), (1 - y) * y_hat  # [B, C] each, column c = set of class c
        n_y, n_tp, n_fn, n_fp = y.sum(0), tp.sum(0), fn.sum(0), fp.sum(0)  # [C] each

        if update:
            with torch.no_grad():
                has_tp = n_tp > 0  # [C]
                mean_tp = (tp.t() @ probs.detach()) / n_tp.clamp(min=1)[:, None]  # [C, C], row c = mean_{TP_c} P
                ema = self.alpha * self.memory + (1 - self.alpha) * mean_tp  # [C, C]
                new = torch.where(self.initialised[:, None], ema, mean_tp)  # [C, C], first update sets M_c = mean
                self.memory.copy_(torch.where(has_tp[:, None], new, self.memory))
                self.initialised |= has_tp

        present = n_y > 0  # [C], classes among the labels (FP only counts for these)
        omega = (y * probs).sum(0) / n_y.clamp(min=1)  # [C], ω_c = mean_{y_i = c} P_{i,c}
        centroids = self.memory.clone()  # [C, C], detached; clone: later in-place updates must not touch the graph
        loss = torch.zeros((), device=logits.device)
        for members, count, push in ((fn, n_fn, False), (fp, n_fp, True)):
            keep = present & self.initialised & (count > 0)  # [C], classes contributing a triple
            if not bool(keep.any()):
                continue
            nu = (members.t() @ probs) / count.clamp(min=1)[:, None]  # [C, C], row c = mean of P over the set
            anchor, other, w = centroids[keep], nu[keep], omega[keep]  # [K, C], [K, C], [K]
            term = adjusted_nt_xent(
                torch.cat([anchor, anchor]),
                torch.cat([other, other]),  # [2K, C] each: lists duplicated
                temperature=self.temperature,
                weight=torch.cat([w, w]),  # [2K]
            )
            loss = loss + (self.push_margin - term if push else term)
        return loss


def supcon_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    faithful_rowmax: bool = False,
) -> torch.Tensor:
    """Supervised contrastive loss over two views (Khosla et al. 2020, contrast mode "all").

    Anchors and contrasts are the 2B rows of [a; b]; the positives of an anchor are the other rows with its label
    (its other view included); the denominator runs over all rows but the anchor. Features are used as given, not
    normalised: like the reference SupConLoss, normalisation is the caller's job, and the official `cl` mode passes
    raw logits.

    Args:
        a: first view [B, D].
        b: second view [B, D].
        labels: int64 [B].
        temperature: τ.
        base_temperature: the loss is scaled by τ / base_temperature.
        faithful_rowmax: switch F8: divide each similarity row by its row max before subtracting the max, as the
            official `loss.py` does.

    Returns:
        Scalar float32 loss.
    """
    if a.dim() != 2 or a.shape != b.shape or labels.shape != (a.shape[0],):
        raise ValueError(
            f"need a, b [B, D] and labels [B], got {tuple(a.shape)}, {tuple(b.shape)}, {tuple(labels.shape)}"
        )
    feats = torch.cat([a, b], dim=0).float()  # [2B, D], view-major as torch.cat(unbind(features, 1))
    logits = feats @ feats.t() / temperature  # [2B, 2B]
    if faithful_rowmax:
        logits = logits / logits.amax(dim=1, keepdim=True)
    logits = logits - logits.amax(dim=1, keepdim=True).detach()  # stability only; cancels in log_prob
    self_mask = torch.eye(feats.shape[0], dtype=torch.bool, device=feats.device)  # [2B, 2B]
    lab = labels.repeat(2)  # [2B]
    positive = (lab[:, None] == lab[None, :]) & ~self_mask  # [2B, 2B]
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)  # [2B, 2B]
    mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(1) / positive.sum(1)  # [2B], ≥ 1 positive each
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


class MLCLLoss(nn.Module):
    """λ_sc·L_sc + λ_cc·L_cc (§6.4 without L_CE, which the training loop adds).

    cl_type "tcl" (official default): L_sc = adjusted_nt_xent(z, z', weight=p), p = sample_confidence(logits, y,
    dim=sc_p_dim); L_cc = ClassContrastLoss(logits, y). cl_type "cl": L_sc = plain NT-Xent(z, z'); L_cc =
    supcon_loss(logits, logits', y) with τ = 0.07.

    L_sc acts on the embedding pair (z, z'): the logits by default (HEAD), or the hidden features passed as
    `z`/`z_masked` (ablation, §11.2). L_cc and the weight p always use the logits, because the class-level loss
    is defined in softmax-probability space of the classes.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        lambda_sc: float = 0.5,
        lambda_cc: float = 0.5,
        temperature_sc: float = 0.5,
        sc_p_dim: int = 1,
        cc_detach: bool = False,
        alpha: float = 0.9,
        cl_type: str = "tcl",
        supcon_rowmax: bool = False,
    ) -> None:
        """
        Args:
            num_classes: C.
            lambda_sc, lambda_cc: loss weights (0.5 in the `maskclrv2_*` configs).
            temperature_sc: τ_s of L_sc (also the τ of L_cc's adjusted NT-Xent, 0.5 in the official code).
            sc_p_dim: switch F2 (0 official, 1 fixed), see `sample_confidence`.
            cc_detach: switch F1 (True official), see `ClassContrastLoss`.
            alpha: EMA factor of the class-centroid memory.
            cl_type: "tcl" or "cl".
            supcon_rowmax: switch F8 for cl_type "cl".
        """
        super().__init__()
        if cl_type not in CL_TYPES:
            raise ValueError(f"cl_type must be one of {CL_TYPES}, got {cl_type!r}")
        if sc_p_dim not in (0, 1):
            raise ValueError(f"sc_p_dim must be 0 or 1, got {sc_p_dim}")
        self.lambda_sc = lambda_sc
        self.lambda_cc = lambda_cc
        self.temperature_sc = temperature_sc
        self.sc_p_dim = sc_p_dim
        self.cl_type = cl_type
        self.supcon_rowmax = supcon_rowmax
        self.class_contrast = (
            ClassContrastLoss(num_classes=num_classes, alpha=alpha, temperature=temperature_sc, detach=cc_detach)
            if cl_type == "tcl"
            else None
        )

    def forward(
        self,
        logits: torch.Tensor,
        logits_masked: torch.Tensor,
        labels: torch.Tensor,
        *,
        z: torch.Tensor | None = None,
        z_masked: torch.Tensor | None = None,
        update_memory: bool = True,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: standard-view logits [B, C].
            logits_masked: masked-view logits [B, C].
            labels: int64 [B].
            z, z_masked: optional embedding pair [B, D] for L_sc (e.g. hidden h, h'); both or neither.
                None uses the logits, as at HEAD.
            update_memory: update L_cc's centroid memory (tcl only; see switch F7).

        Returns:
            dict with scalar tensors `loss_sc`, `loss_cc` and `total_contrastive` = λ_sc·L_sc + λ_cc·L_cc.
        """
        if (z is None) != (z_masked is None):
            raise ValueError("pass both z and z_masked, or neither")
        if z is None:
            z, z_masked = logits, logits_masked
        if self.cl_type == "tcl":
            p = sample_confidence(logits, labels, dim=self.sc_p_dim)  # [B]
            loss_sc = adjusted_nt_xent(z, z_masked, temperature=self.temperature_sc, weight=p)
            loss_cc = self.class_contrast(logits, labels, update=update_memory)
        else:
            loss_sc = adjusted_nt_xent(z, z_masked, temperature=self.temperature_sc)
            loss_cc = supcon_loss(logits, logits_masked, labels, faithful_rowmax=self.supcon_rowmax)
        total = self.lambda_sc * loss_sc + self.lambda_cc * loss_cc
        return {"loss_sc": loss_sc, "loss_cc": loss_cc, "total_contrastive": total}

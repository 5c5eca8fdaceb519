"""Action model: a backbone (DSTFormer) plus MotionBERT's classification head (docs/method.md §4).

Input  x:      [N, M, T, V, 3] poses (M persons, the padded one all zeros).
Output logits: [N, num_classes]; features: the 2048-d hidden h [N, hidden_dim]; on request the backbone's
last-layer attention (DSTFormer: ST spatial attention [N, M, T, H, V, V]) and the attention each token
receives, `activation` [N, M, T, V] (what AGPM and the reports use, whatever the backbone).

State-dict keys are `backbone.*` and `head.*`, as in MotionBERT's finetuned `model` checkpoints.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from recognition.models import Backbone, get_backbone_class


class ActionOutput(NamedTuple):
    """What `ActionModel.forward` returns."""

    logits: Tensor  # [N, num_classes]
    features: Tensor  # [N, hidden_dim], the hidden h after fc1 → bn → relu
    attention: Tensor | None  # the backbone's raw last-layer attention when asked for (DSTFormer: [N, M, T, H, V, V])
    activation: Tensor | None = None  # attention received per token [N, M, T, V], detached, when asked for


class ActionHead(nn.Module):
    """Dropout → mean over T → flatten V×C → mean over M → fc1 → BN → ReLU (= h) → fc2 (= logits).

    The person mean includes the padded all-zero person, as in MotionBERT. fc1/fc2 keep PyTorch's default
    Linear init (MotionBERT's head has no custom init).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        dim_rep: int = 512,
        num_joints: int = 17,
        hidden_dim: int = 2048,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout = nn.Dropout(p=dropout)
        self.fc1 = nn.Linear(dim_rep * num_joints, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim, momentum=0.1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, rep: Tensor) -> tuple[Tensor, Tensor]:
        """rep [N, M, T, V, C] → (logits [N, num_classes], hidden [N, hidden_dim])."""
        N, M, T, V, C = rep.shape
        rep = self.dropout(rep)
        feat = rep.mean(dim=2)  # [N, M, T, V, C] -> [N, M, V, C]
        feat = feat.reshape(N, M, V * C).mean(dim=1)  # [N, M, V, C] -> [N, M, V·C] -> [N, V·C]
        hidden = self.relu(self.bn(self.fc1(feat)))  # [N, hidden_dim]
        return self.fc2(hidden), hidden  # [N, num_classes], [N, hidden_dim]


class ActionModel(nn.Module):
    """Backbone on every person's sequence, then the action head on the persons' representations."""

    def __init__(self, *, backbone: nn.Module, head: ActionHead) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"{type(backbone).__name__} does not implement the Backbone protocol")
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor, *, token_mask: Tensor | None = None, return_attention: bool = False) -> ActionOutput:
        """Classify clips.

        Args:
            x: [N, M, T, V, 3] poses.
            token_mask: optional bool [N, M, T, V]; True tokens get the backbone's mask token.
            return_attention: also return the last layer's ST spatial attention.
        """
        N, M, T, V, C = x.shape
        if token_mask is not None:
            token_mask = token_mask.reshape(N * M, T, V)  # [N, M, T, V] -> [B, T, V]
        out = self.backbone(x.reshape(N * M, T, V, C), token_mask=token_mask, return_attention=return_attention)
        rep, attn = out if return_attention else (out, None)  # rep [B, T, V, dim_rep]
        logits, hidden = self.head(rep.reshape(N, M, T, V, -1))  # [B, T, V, dim_rep] -> [N, M, T, V, dim_rep]
        activation = None
        if attn is not None:
            activation = self.backbone.token_activation(attn).reshape(N, M, T, V)  # [B, T, V] -> [N, M, T, V]
            attn = attn.reshape(N, M, *attn.shape[1:])  # [B, ...] -> [N, M, ...]
        return ActionOutput(logits=logits, features=hidden, attention=attn, activation=activation)


def build_action_model(
    *,
    num_classes: int,
    backbone: str = "dstformer",
    preset: str = "base",
    hidden_dim: int = 2048,
    dropout: float = 0.5,
    use_mask_token: bool = False,
    maxlen: int = 243,
    num_joints: int = 17,
    dim_feat: int | None = None,
    dim_rep: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
    backbone_options: dict | None = None,
) -> ActionModel:
    """Build a backbone from a size preset plus the action head.

    Args:
        num_classes: number of action classes (60 for NTU60).
        backbone: a name registered in `recognition.models.MODELS`.
        preset: a key of the backbone's `PRESETS` ("base", "lite", "tiny" for DSTFormer).
        hidden_dim: width of the head's hidden feature h.
        dropout: dropout on the representation before the head.
        use_mask_token: give the backbone a learnable mask token (MaskCLR).
        maxlen: longest sequence (size of the temporal embedding).
        num_joints: V.
        dim_feat, dim_rep, depth, num_heads, mlp_ratio: override the preset's value when not None.
        backbone_options: further keyword arguments of the backbone class (e.g. the transformer's
            `faithful_residual_bug`, switch F9 of docs/method.md §10).
    """
    backbone_cls = get_backbone_class(backbone)
    if preset not in backbone_cls.PRESETS:
        raise KeyError(f"unknown preset {preset!r} for backbone {backbone!r}; valid: {sorted(backbone_cls.PRESETS)}")
    overrides = dict(dim_feat=dim_feat, dim_rep=dim_rep, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
    size = {**backbone_cls.PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    net = backbone_cls(
        **size, num_joints=num_joints, maxlen=maxlen, use_mask_token=use_mask_token, **(backbone_options or {})
    )
    head = ActionHead(
        num_classes=num_classes, dim_rep=size["dim_rep"], num_joints=num_joints, hidden_dim=hidden_dim, dropout=dropout
    )
    return ActionModel(backbone=net, head=head)


def count_state_numbers(model: nn.Module) -> int:
    """Numbers in the state dict (parameters and buffers, BN running stats included), as docs/method.md §14 counts."""
    return sum(t.numel() for t in model.state_dict().values())

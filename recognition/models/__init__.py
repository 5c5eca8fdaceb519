"""Backbone registry: short name → lazily imported "module:Class" (docs/architecture.md §8.2).

A backbone maps poses to per-token representations; the contract is the `Backbone` protocol below,
and `get_backbone_class` returns the class for a registered name. Import paths live only here.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

MODELS: dict[str, str] = {
    "dstformer": "recognition.models.dstformer:DSTFormer",
    "sttformer": "recognition.models.sttformer:STTFormer",
    "transformer": "recognition.models.transformer:SkeletonTransformer",
}


@runtime_checkable
class Backbone(Protocol):
    """What the action model needs from a backbone.

    `forward(x, *, token_mask=None, return_attention=False)` takes x [B, T, V, 3] (B = N·M) and an
    optional bool token_mask [B, T, V], and returns rep [B, T, V, dim_rep], or (rep, attn) with attn
    [B, T, H, V, V] when return_attention is True (its own layout for other backbones).
    `token_activation(attn)` turns that attention into the attention each (frame, joint) token
    receives, [B, T, V], detached (docs/method.md §5.1: heads averaged, summed over queries).
    `layer_attention(x, layers)` returns, for each index of `layers` (in [-attention_layers,
    attention_layers), -1 = the last), that layer's attention in the layout of forward's, so that
    `token_activation` applies; the last layer's is exactly what forward returns. `attention_layers`
    is how many layers it serves: DSTFormer every layer's spatial attention (its depth; the inner
    layers' saliency of docs/method.md §8(e)); a backbone whose inner attentions are not spatial
    (the transformer's global joint-time attention, STTFormer's tuples) serves only the last
    block's, as its single layer (1).
    A backbone without a mask token implements token_mask by zeroing the masked input joints. The class has a `PRESETS` dict of size presets
    (name → constructor kwargs) and a keyword-only constructor accepting those kwargs plus
    `num_joints`, `maxlen` and `use_mask_token`.
    """

    dim_rep: int
    num_joints: int
    num_heads: int
    attention_layers: int

    def forward(self, x, *, token_mask=None, return_attention=False): ...

    def token_activation(self, attn): ...

    def layer_attention(self, x, layers): ...


def full_precision(x):
    """A context in which autocast is off for x's device: the input embeddings run in float32 under bf16 training,
    so the joint coordinates are not rounded (docs/method.md §7.4). Cast the input with `.float()` inside it."""
    import torch

    return torch.autocast(x.device.type, enabled=False)


def layer_indices(layers, count: int) -> list[int]:
    """Layer indices (Python-style negatives allowed) as 0..count-1; IndexError for one outside [-count, count)."""
    bad = [layer for layer in layers if not -count <= layer < count]
    if bad:
        raise IndexError(f"layer(s) {bad} out of range for a backbone serving {count} attention layer(s)")
    return [layer % count for layer in layers]


def get_backbone_class(name: str) -> type:
    """The backbone class registered as `name`; KeyError listing the valid names if unknown."""
    if name not in MODELS:
        raise KeyError(f"unknown backbone {name!r}; valid names: {sorted(MODELS)}")
    module_name, class_name = MODELS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)

"""Comparing a checkpoint's parameters with a model's, by name and shape (no torch needed).

Both stages load official checkpoints strictly and, where one does not fit, list what differs;
this is the one comparison they share. Callers pass `{name: shape}` of each side
(`{k: tuple(v.shape) for k, v in state.items()}`) and word the error in their own terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StateDiff:
    """What separates a checkpoint from a model: names sorted, shapes as (key, checkpoint, model)."""

    missing: list[str]  # in the model, not in the checkpoint
    unexpected: list[str]  # in the checkpoint, not in the model
    mis_shaped: list[tuple[str, tuple, tuple]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mis_shaped)


def compare_shapes(model: Mapping[str, tuple], checkpoint: Mapping[str, tuple]) -> StateDiff:
    """The missing, unexpected and mis-shaped parameter names of `checkpoint` against `model`."""
    common = sorted(set(model) & set(checkpoint))
    return StateDiff(
        missing=sorted(set(model) - set(checkpoint)),
        unexpected=sorted(set(checkpoint) - set(model)),
        mis_shaped=[
            (k, tuple(checkpoint[k]), tuple(model[k])) for k in common if tuple(checkpoint[k]) != tuple(model[k])
        ],
    )

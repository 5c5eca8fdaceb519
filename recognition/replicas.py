"""The official batch split (docs/method.md §7.2), reproduced in one process: `optim.replica_groups`.

MaskCLR's runs trained batch 4 under `nn.DataParallel` on 2 GPUs. DataParallel cuts the batch into `torch.chunk`
pieces, one per replica, and each replica runs the whole model on its piece: AGPM normalises each joint over its
own clips' tokens, and every BatchNorm normalises with its own piece's statistics; the running statistics kept are
those of the first replica (its buffers are the module's own, the others' updates are dropped). The outputs are
gathered, so the losses see the whole batch. With `replica_groups: 2` training does exactly that, sequentially, on
one device; 1 (the default) is one group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from recognition.models.action import ActionOutput


def _chunks(x: Tensor | None, groups: int) -> list[Tensor | None]:
    """DataParallel's scatter: `torch.chunk` along the batch (pieces of ceil(N / groups), the last smaller)."""
    if x is None:
        return [None] * groups
    return list(torch.chunk(x, groups, dim=0))


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _snapshot(norms: list[nn.Module]) -> list[dict[str, Tensor]]:
    return [{k: v.detach().clone() for k, v in m.named_buffers(recurse=False)} for m in norms]


def _restore(norms: list[nn.Module], saved: list[dict[str, Tensor]]) -> None:
    # swapped in, not copied over: autograd holds the tensors the forwards since the snapshot used
    for m, buffers in zip(norms, saved):
        for k, v in buffers.items():
            m._buffers[k] = v


@contextmanager
def first_group_statistics(model: nn.Module) -> Iterator[Callable[[], None]]:
    """Yield `keep()`: call it after the first group's forward; on exit every BatchNorm's running statistics are
    put back to what they were then, as DataParallel keeps only the first replica's."""
    norms, saved = _norms(model), []

    def keep() -> None:
        saved[:] = _snapshot(norms)

    try:
        yield keep
    finally:
        _restore(norms, saved)


@contextmanager
def kept_running_statistics(module: nn.Module) -> Iterator[None]:
    """The BatchNorm running statistics of `module` as they were on entry, whatever runs inside (the forwards still
    normalise with their batch's statistics). MaskCLR's masked pass runs so for the backbone (docs/method.md §9.2)."""
    norms = _norms(module)
    saved = _snapshot(norms)
    try:
        yield
    finally:
        _restore(norms, saved)


def replica_forward(
    model: nn.Module,
    x: Tensor,
    groups: int,
    *,
    token_mask: Tensor | None = None,
    return_attention: bool = False,
) -> ActionOutput:
    """`model(x, ...)` as `groups` DataParallel replicas would compute it, outputs gathered along the batch."""
    if groups == 1 or x.shape[0] <= 1:
        return model(x, token_mask=token_mask, return_attention=return_attention)
    outs: list[ActionOutput] = []
    with first_group_statistics(model) as keep:
        for i, (xc, mc) in enumerate(zip(_chunks(x, groups), _chunks(token_mask, groups))):
            if xc is None or xc.shape[0] == 0:
                continue
            outs.append(model(xc, token_mask=mc, return_attention=return_attention))
            if i == 0:
                keep()
    return ActionOutput(*(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs)))


def per_replica(fn: Callable[[Tensor], Tensor], scores: Tensor, groups: int) -> Tensor:
    """`fn` (a mask from scores [N, ...]) applied to each replica's piece in turn, the pieces' results concatenated:
    the per-replica AGPM of the official runs."""
    if groups == 1:
        return fn(scores)
    return torch.cat([fn(part) for part in _chunks(scores, groups) if part is not None and part.shape[0]])

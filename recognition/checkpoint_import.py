"""Read MotionBERT's official checkpoint files into our models (METHOD.md §14).

Two layouts exist, both a dict saved with `torch.save`, keys often prefixed `module.` (DataParallel):
- pretrained backbone: `{"model_pos": {name: tensor}, "epoch", "lr", "optimizer", ...}` with DSTFormer
  names (no `backbone.` prefix);
- finetuned action model: `{"model": {name: tensor}, "epoch", "lr", "optimizer", "best_acc"}` with
  `backbone.*` and `head.*` names.

`load_motionbert_state` returns the tensors under our `ActionModel` names; `load_into` loads them
strictly, allowing only the missing keys the caller names. Files are read with `weights_only=True`;
a file that needs full unpickling is only read when the caller passes `allow_pickle=True`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

PRETRAINED = "motionbert_pretrained"
ACTION = "motionbert_action"
_CLASSIFIER_KEY = "head.fc2.weight"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose tensors do not fit the model."""


def load_motionbert_state(path: str | Path, *, allow_pickle: bool = False) -> tuple[dict[str, Tensor], str]:
    """Read an official MotionBERT file and return (state dict under ActionModel names, layout kind).

    Args:
        path: the `.bin`/`.pth` file.
        allow_pickle: if the file cannot be read with `weights_only=True`, read it with full
            unpickling (runs code from the file: only for files you trust).

    Returns:
        The state dict (keys `backbone.*`, plus `head.*` for the action layout, `module.` stripped)
        and the kind: "motionbert_pretrained" (key `model_pos`) or "motionbert_action" (key `model`).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise CheckpointError(
                f"{path}: cannot be read with weights_only=True ({str(err).splitlines()[0]}); "
                "pass allow_pickle=True only if you trust the file"
            ) from err
        log.warning("%s: needs full unpickling; loading with weights_only=False (allow_pickle=True)", path)
        obj = torch.load(path, map_location="cpu", weights_only=False)

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict with key 'model_pos' or 'model', got {type(obj).__name__}")
    layouts = [key for key in ("model_pos", "model") if key in obj]
    if len(layouts) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one of the keys 'model_pos' (pretrained) or 'model' (action), "
            f"found top-level keys {sorted(map(str, obj))}"
        )
    layout = layouts[0]
    raw = obj[layout]
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: '{layout}' is not a mapping of names to tensors")

    state = {_strip_module(name): tensor for name, tensor in raw.items()}
    if layout == "model_pos":
        return {f"backbone.{name}": tensor for name, tensor in state.items()}, PRETRAINED
    return state, ACTION


def _strip_module(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    allow_missing: Iterable[str] = (),
    allow_missing_prefixes: Iterable[str] = (),
) -> list[str]:
    """Load `state` into `model` strictly, except for the missing keys the caller allows.

    Args:
        model: the model (e.g. an `ActionModel`).
        state: tensors under the model's names (from `load_motionbert_state`).
        allow_missing: model keys that may be absent from `state` (e.g. "backbone.mask_token").
        allow_missing_prefixes: prefixes of model keys that may be absent (e.g. "head." for a
            pretrained backbone file).

    Returns:
        The model keys left at their current values (the allowed missing ones), sorted.

    Raises:
        CheckpointError: listing the class-count mismatch, missing, unexpected and mis-shaped keys.
    """
    allow_missing = set(allow_missing)
    prefixes = tuple(allow_missing_prefixes)
    expected = model.state_dict()
    absent = sorted(set(expected) - set(state))
    left_out = [k for k in absent if k in allow_missing or k.startswith(prefixes)]
    missing = [k for k in absent if k not in left_out]
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{k}: model {tuple(expected[k].shape)} vs checkpoint {tuple(state[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if expected[k].shape != state[k].shape
    ]

    problems = []
    if _CLASSIFIER_KEY in state and _CLASSIFIER_KEY in expected:
        got, want = state[_CLASSIFIER_KEY].shape[0], expected[_CLASSIFIER_KEY].shape[0]
        if got != want:
            problems.append(f"checkpoint has {got} classes, model has {want}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}): {mis_shaped}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))

    model.load_state_dict(state, strict=not left_out)
    return left_out


def load_motionbert_into(model: nn.Module, path: str | Path, *, allow_pickle: bool = False) -> str:
    """Load an official MotionBERT file into an `ActionModel` with the usual allowances.

    A pretrained file may leave `head.*` untouched; a model with a mask token may lack
    `backbone.mask_token`. Returns the layout kind.
    """
    state, kind = load_motionbert_state(path, allow_pickle=allow_pickle)
    prefixes = ("head.",) if kind == PRETRAINED else ()
    left_out = load_into(model, state, allow_missing=("backbone.mask_token",), allow_missing_prefixes=prefixes)
    if left_out:
        log.info("%s (%s): %d model tensors keep their initial values: %s", path, kind, len(left_out), left_out)
    return kind

"""Our checkpoints (self-describing) and the one entry point that reads any supported file.

Ours: `{"format", "schema_version", "model_state", "model_config", "run_config",
"label_names", "epoch", "optimizer", "scheduler", "loss_state", "best_metric", "rng",
"history"}`, written atomically, read with `torch.load(weights_only=True)` (through
`checkpoint_import.load_torch_file`, so an empty or truncated file is a one-line `CheckpointError`).
Foreign files (MotionBERT's `model_pos` pretrained backbone, its `model` finetuned action
model) are recognised by their keys and converted by `checkpoint_import`.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import atomic_write_bytes
from pipeline.schema import SCHEMA_VERSION
from recognition.checkpoint_import import (
    REMEDY,
    CheckpointError,
    UnsafeCheckpointError,
    load_into,
    load_motionbert_state,
    load_torch_file,
)
from recognition.models.action import ActionModel, build_action_model

log = logging.getLogger(__name__)

FORMAT = "robust-skeleton-action/checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` (plus format tags) atomically with torch.save."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": CHECKPOINT_VERSION, "schema_version": SCHEMA_VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path, *, remedy: str = REMEDY) -> dict[str, Any]:
    """Read one of our checkpoints (weights_only=True).

    Args:
        path: the `.pt` file.
        remedy: what the error message of an empty, truncated or unreadable file advises.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a torch file or not a dict.
    """
    p = Path(path)
    ck = load_torch_file(p, remedy=remedy)
    if not isinstance(ck, dict):
        raise CheckpointError(f"{p}: expected a dict, got {type(ck).__name__}; {remedy}")
    return ck


def is_ours(ck: dict) -> bool:
    return ck.get("format") == FORMAT


def _read_ours(path: str | Path) -> dict | None:
    """Our checkpoint at `path`, or None when the file is in another (foreign) format.

    A file that `weights_only=True` refuses may be a foreign pickle (read by `load_motionbert_state`);
    an empty, truncated or non-torch file raises here, with its reason.
    """
    try:
        ck = read_checkpoint(path)
    except UnsafeCheckpointError:
        return None
    return ck if is_ours(ck) else None


def model_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer DSTFormer sizes from an official action state dict (heads: MotionBERT's 8)."""
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks_st\.(\d+)\.", k)))
    dim_feat = state["backbone.joints_embed.weight"].shape[0]
    mlp_hidden = state["backbone.blocks_st.0.mlp_s.fc1.weight"].shape[0]
    return dict(
        backbone="dstformer",
        preset="base",
        num_classes=state["head.fc2.weight"].shape[0],
        hidden_dim=state["head.fc1.weight"].shape[0],
        maxlen=state["backbone.temp_embed"].shape[1],
        dim_feat=dim_feat,
        dim_rep=state["backbone.pre_logits.fc.weight"].shape[0],
        depth=depth,
        num_heads=8,
        mlp_ratio=mlp_hidden / dim_feat,
    )


def build_model_from_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> tuple[ActionModel, dict]:
    """Build and strictly load a model from ours or an official MotionBERT action file.

    Returns:
        (model in eval mode, checkpoint dict: ours as saved, or {"model_config", "label_names": None,
        "run_config": None, "kind"} for an official file).
    """
    ck = _read_ours(path)
    if ck is not None:
        model = build_action_model(**ck["model_config"])
        load_into(model, ck["model_state"])
        return model.eval(), ck
    state, kind = load_motionbert_state(path, allow_pickle=allow_pickle)
    if kind != "motionbert_action":
        raise CheckpointError(f"{path}: a pretrained backbone ({kind}) has no classifier; use it with train --init")
    mcfg = model_config_from_state(state)
    model = build_action_model(**mcfg)
    load_into(model, state)
    return model.eval(), {"model_config": mcfg, "label_names": None, "run_config": None, "kind": kind}


def init_from(model: ActionModel, path: str | Path, *, allow_pickle: bool = False) -> str:
    """`--init`: load weights from ours or an official file into a new model.

    Allowed to stay at their initial values: the mask token (a baseline checkpoint into a
    MaskCLR model) and, for a pretrained backbone file, the head.

    Returns:
        A short description of what was loaded.
    """
    ck = _read_ours(path)
    if ck is not None:
        state, kind = ck["model_state"], f"ours (epoch {ck.get('epoch')})"
        prefixes: tuple[str, ...] = ()
    else:
        state, kind = load_motionbert_state(path, allow_pickle=allow_pickle)
        prefixes = ("head.",) if kind == "motionbert_pretrained" else ()
    left = load_into(model, state, allow_missing=("backbone.mask_token",), allow_missing_prefixes=prefixes)
    if left:
        log.info("--init %s: %d tensors keep their initial values (%s)", path, len(left), ", ".join(left[:4]))
    return kind

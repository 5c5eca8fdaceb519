"""Checkpoint files -> state dicts named like our models, and the strict key check.

Layouts read (each detected from its key names, never from the file name):

ViTPose, to transformers' `VitPoseForPoseEstimation` names:
- "mmpose" (mmpose 1.x, mmpretrain's VisionTransformer + HeatmapHead): `backbone.patch_embed.
  projection`, `backbone.pos_embed` [1, 192, C] (no cls slot), `backbone.layers.{i}.{ln1, attn.
  qkv, attn.proj, ln2, ffn.layers.0.0, ffn.layers.1}`, `backbone.ln1`, `head.final_layer` and,
  for the classic decoder, `head.deconv_layers.{0,1,3,4}` (deconv, BN, deconv, BN).
- "original" (the ViTPose release, mmpose 0.x): `backbone.patch_embed.proj`, `backbone.pos_embed`
  [1, 193, C] (slot 0 is added to every patch), `backbone.blocks.{i}.{norm1, attn.qkv, attn.proj,
  norm2, mlp.fc1, mlp.fc2}`, `backbone.last_norm`, `keypoint_head.{deconv_layers.*, final_layer}`.
- "hf": already `backbone.embeddings...`, `backbone.encoder.layer.{i}...`, `head.*`.
The fused qkv [3C, C] splits into query, key, value (rows in that order). transformers adds
position slot 0 to every patch (as the original ViTPose does), so an mmpose pos_embed [1, 192, C]
gets a zero slot 0; an mmpose one with 193 slots has its slot 0 replaced by zeros, because
mmpretrain drops that slot when loading (`_prepare_pos_embed`).

HRNet, to our `PoseHRNet` names (`backbone.<pose_hrnet names>`, `final_layer.*`):
- "mmpose": `backbone.*` + `head.final_layer.*` (1.x) or `keypoint_head.final_layer.*` (0.x,
  e.g. the model zoo's hrnet_w32_coco_256x192-c78dce93_20200708.pth).
- "original" (leoxiaobin's pose_hrnet_w32_256x192.pth): bare `conv1.weight`, ..., `stage4.*`,
  `final_layer.*`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.state_dicts import compare_shapes
from pose_extraction.estimators import EstimatorError, missing_weights_message

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

StateDict = dict[str, "torch.Tensor"]

# Keys some official files carry that no inference model uses.
_IGNORED_KEYS = ("data_preprocessor.mean", "data_preprocessor.std", "backbone.cls_token")
_LIST_LIMIT = 20


# ----------------------------------------------------------------------------- files


def load_checkpoint(path: str | os.PathLike, *, estimator: str) -> StateDict:
    """Read a `.pth`/`.pt`/`.bin` (torch pickle) or `.safetensors` file into a flat state dict.

    Unwraps `{"state_dict": ...}` (mmpose, ViTPose) and a `module.` prefix on every key
    (DataParallel saves). mmpose files whose `meta` holds numpy objects need a full unpickle:
    that is done only for this file the user pointed at, after the safe load failed.

    Raises:
        EstimatorError: missing file (naming `make weights`), unreadable file, no state dict.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise EstimatorError(missing_weights_message(estimator, p))
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(p))
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for numpy objects in `meta`
            log.warning(
                "%s: weights-only load failed (%s); unpickling it fully, as you pointed at it",
                p,
                str(exc).splitlines()[0],
            )
            try:
                obj = torch.load(p, map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise EstimatorError(f"{p}: cannot read checkpoint: {exc2}") from exc2
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EstimatorError(f"{p}: not a state dict (expected tensors by name, or {{'state_dict': ...}})")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def check_state_dict(model_sd: Mapping[str, torch.Tensor], sd: StateDict, *, what: str) -> StateDict:
    """Return `sd` ready for `load_state_dict(strict=True)`, or raise listing every mismatch.

    A missing BatchNorm `num_batches_tracked` (older torch saves) is taken from the model:
    it plays no part at inference.

    Raises:
        EstimatorError: missing, unexpected or mis-shaped keys (listed, first 20 of each).
    """
    sd = {k: v for k, v in sd.items() if k not in _IGNORED_KEYS}
    for key in model_sd:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = model_sd[key].clone()
    diff = compare_shapes({k: tuple(v.shape) for k, v in model_sd.items()}, {k: tuple(v.shape) for k, v in sd.items()})
    missing, unexpected = diff.missing, diff.unexpected
    shapes = [f"{k}: checkpoint {got} vs model {want}" for k, got, want in diff.mis_shaped]
    if missing or unexpected or shapes:
        parts = [
            f"{what}: the checkpoint does not match the model's architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped keys)"
        ]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if keys:
                more = f"\n    ... and {len(keys) - _LIST_LIMIT} more" if len(keys) > _LIST_LIMIT else ""
                parts.append(f"  {title}:\n    " + "\n    ".join(keys[:_LIST_LIMIT]) + more)
        raise EstimatorError("\n".join(parts))
    return sd


# ----------------------------------------------------------------------------- ViTPose

# (mmpose, original, hf) module names; {i} is the layer index. Parameters keep their names.
_VITPOSE_MODULES = (
    ("backbone.patch_embed.projection", "backbone.patch_embed.proj", "backbone.embeddings.patch_embeddings.projection"),
    ("backbone.layers.{i}.ln1", "backbone.blocks.{i}.norm1", "backbone.encoder.layer.{i}.layernorm_before"),
    (
        "backbone.layers.{i}.attn.proj",
        "backbone.blocks.{i}.attn.proj",
        "backbone.encoder.layer.{i}.attention.output.dense",
    ),
    ("backbone.layers.{i}.ln2", "backbone.blocks.{i}.norm2", "backbone.encoder.layer.{i}.layernorm_after"),
    ("backbone.layers.{i}.ffn.layers.0.0", "backbone.blocks.{i}.mlp.fc1", "backbone.encoder.layer.{i}.mlp.fc1"),
    ("backbone.layers.{i}.ffn.layers.1", "backbone.blocks.{i}.mlp.fc2", "backbone.encoder.layer.{i}.mlp.fc2"),
    ("backbone.ln1", "backbone.last_norm", "backbone.layernorm"),
    ("head.final_layer", "keypoint_head.final_layer", "head.conv"),
    ("head.deconv_layers.0", "keypoint_head.deconv_layers.0", "head.deconv1"),
    ("head.deconv_layers.1", "keypoint_head.deconv_layers.1", "head.batchnorm1"),
    ("head.deconv_layers.3", "keypoint_head.deconv_layers.3", "head.deconv2"),
    ("head.deconv_layers.4", "keypoint_head.deconv_layers.4", "head.batchnorm2"),
)
_LAYOUT_COLUMN = {"mmpose": 0, "original": 1, "hf": 2}
_QKV = {"mmpose": "backbone.layers.{i}.attn.qkv", "original": "backbone.blocks.{i}.attn.qkv"}
_HF_QKV = "backbone.encoder.layer.{i}.attention.attention.{part}"
_POS = {
    "mmpose": "backbone.pos_embed",
    "original": "backbone.pos_embed",
    "hf": "backbone.embeddings.position_embeddings",
}


def _module_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + r"\.(?P<param>[^.]+)$")


def _rename(sd: StateDict, src: str, dst: str) -> StateDict:
    """Rename module prefixes column `src` -> column `dst` of `_VITPOSE_MODULES`; others unchanged."""
    table = [(_module_regex(row[_LAYOUT_COLUMN[src]]), row[_LAYOUT_COLUMN[dst]]) for row in _VITPOSE_MODULES]
    out = {}
    for key, value in sd.items():
        for regex, target in table:
            m = regex.match(key)
            if m:
                key = target.format(i=m.groupdict().get("i")) + "." + m.group("param")
                break
        out[key] = value
    return out


def detect_vitpose_layout(sd: Mapping[str, object]) -> str:
    """ "mmpose", "original" or "hf", from the key names.

    Raises:
        EstimatorError: none of them (the message shows a few keys).
    """
    keys = list(sd)
    if any(k.startswith(("backbone.embeddings.", "backbone.encoder.")) for k in keys):
        return "hf"
    if any(k.startswith("backbone.layers.") for k in keys):
        return "mmpose"
    if any(k.startswith(("backbone.blocks.", "keypoint_head.")) for k in keys):
        return "original"
    raise EstimatorError(
        f"not a ViTPose checkpoint in a known layout (mmpose, ViTPose release, transformers); first keys: {keys[:5]}"
    )


def vitpose_to_hf(sd: StateDict, layout: str | None = None, *, num_patches: int | None = None) -> StateDict:
    """A ViTPose state dict in any known layout -> transformers' names and shapes.

    Args:
        num_patches: the model's patch count (192 for 256x192); an mmpose pos_embed one slot
            longer has a cls slot (dropped, as mmpretrain does). None: no cls slot assumed.
    """
    import torch

    layout = layout or detect_vitpose_layout(sd)
    if layout == "hf":
        return dict(sd)
    qkv = _module_regex(_QKV[layout])
    out: StateDict = {}
    for key, value in sd.items():
        m = qkv.match(key)
        if m:  # [3C, ...] -> query, key, value [C, ...]
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[_HF_QKV.format(i=m.group("i"), part=part) + "." + m.group("param")] = chunk.clone()
        elif key == _POS[layout]:
            pos = value
            if layout == "mmpose":
                if num_patches is not None and pos.shape[1] == num_patches + 1:  # cls slot: mmpretrain drops it
                    pos = pos[:, 1:]
                pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)  # [1, P, C] -> [1, 1 + P, C]
            out[_POS["hf"]] = pos
        else:
            out[key] = value
    return _rename(out, layout, "hf")


def vitpose_from_hf(sd: StateDict, layout: str) -> StateDict:
    """transformers' names -> `layout` ("mmpose" or "original"), e.g. to write test checkpoints.

    To "mmpose", position slot 0 (added to every patch) is folded into the patch slots, so the
    network computes the same function; mmpose -> hf -> mmpose is the identity.
    """
    import torch

    renamed = _rename(sd, "hf", layout)
    out: StateDict = {}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    qkv_hf = re.compile(
        r"^backbone\.encoder\.layer\.(?P<i>\d+)\.attention\.attention\.(?P<part>query|key|value)"
        r"\.(?P<param>[^.]+)$"
    )
    for key, value in renamed.items():
        m = qkv_hf.match(key)
        if m:
            parts.setdefault((m.group("i"), m.group("param")), {})[m.group("part")] = value
        elif key == _POS["hf"]:
            out[_POS[layout]] = value[:, 1:] + value[:, :1] if layout == "mmpose" else value.clone()
        else:
            out[key] = value
    for (i, param), qkv in parts.items():
        out[_QKV[layout].format(i=i) + "." + param] = torch.cat([qkv["query"], qkv["key"], qkv["value"]], dim=0)
    return out


# ----------------------------------------------------------------------------- HRNet


def detect_hrnet_layout(sd: Mapping[str, object]) -> str:
    """ "mmpose" (backbone.* + head.* or keypoint_head.*), "ours" (backbone.* + final_layer.*) or
    "original" (bare names)."""
    keys = list(sd)
    if any(k.startswith(("head.", "keypoint_head.")) for k in keys):
        return "mmpose"
    if any(k.startswith("backbone.") for k in keys):
        return "ours"
    return "original"


def hrnet_to_ours(sd: StateDict, layout: str | None = None) -> StateDict:
    """An HRNet pose state dict in any known layout -> `backbone.<pose_hrnet names>` + `final_layer.*`."""
    layout = layout or detect_hrnet_layout(sd)
    out: StateDict = {}
    for key, value in sd.items():
        if layout == "mmpose":
            for head in ("head.", "keypoint_head."):
                if key.startswith(head):
                    key = key[len(head) :]
        elif layout == "original" and not key.startswith("final_layer."):
            key = "backbone." + key
        out[key] = value
    return out


def hrnet_from_ours(sd: StateDict, layout: str) -> StateDict:
    """Our names -> "mmpose" (1.x: `head.final_layer`) or "original", e.g. to write test checkpoints."""
    if layout == "mmpose":
        return {("head." + k if k.startswith("final_layer.") else k): v for k, v in sd.items()}
    if layout == "original":
        return {(k[len("backbone.") :] if k.startswith("backbone.") else k): v for k, v in sd.items()}
    raise ValueError(f"unknown HRNet layout {layout!r}")

"""HRNet-W32 (SimpleBaseline-style pose HRNet) through timm, run top-down with the MSRA codec.

Defaults are mmpose's `td-hm_hrnet-w32_8xb64-210e_coco-256x192`: input 192x256, heatmaps
48x64, MSRA codec (quarter-pixel refinement), flip test with `shift_heatmap=True`.

The network: timm's `hrnet_w32` with `features_only=True, feature_location=''` (the stride-4,
32-channel branch) and a `final_layer` 1x1 conv 32 -> 17. The pose HRNet's last stage-4
module fuses into branch 0 only, so we drop timm's fuse layers into branches 1-3 of that
module (`stage4.2.fuse_layers.{1,2,3}`: 65 weights and running statistics, 78 keys with
`num_batches_tracked`), which the checkpoints lack and the stride-4 output never used. Every
remaining key must then load: mmpose 1.x/0.x `.pth` or the original (leoxiaobin)
`pose_hrnet_w32_256x192.pth` (see `convert.py`), else `EstimatorError` lists the missing,
unexpected and mis-shaped keys.

`variant` picks another timm HRNet (tests use the small `hrnet_w18_small`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pose_extraction.estimators import EstimatorError, missing_weights_message
from pose_extraction.estimators.convert import check_state_dict, hrnet_to_ours, load_checkpoint
from pose_extraction.topdown import NUM_KEYPOINTS, TopDownEstimator

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def _deps():
    try:
        import timm
        import torch
    except ImportError as exc:
        raise ImportError(
            "the HRNet estimator needs torch, torchvision and timm: pip install torch torchvision timm"
        ) from exc
    return torch, timm


def build_pose_hrnet(variant: str = "hrnet_w32") -> tuple[torch.nn.Module, list[str]]:
    """A random pose HRNet: `ModuleDict(backbone=timm features net, final_layer=Conv2d(C, 17, 1))`.

    Returns:
        the model and the timm keys dropped from the last stage-4 module (see module docstring).
    """
    torch, timm = _deps()
    if not variant.startswith("hrnet_w"):
        raise ValueError(f"variant must be a timm HRNet (hrnet_w18_small, hrnet_w32, ...), got {variant!r}")
    backbone = timm.create_model(variant, pretrained=False, features_only=True, feature_location="", out_indices=(1,))
    before = set(backbone.state_dict())
    last = backbone.stage4[-1]
    last.fuse_layers = torch.nn.ModuleList(last.fuse_layers[:1])  # keep the fusion into branch 0 only
    dropped = sorted(before - set(backbone.state_dict()))
    channels = backbone.feature_info.channels()[0]  # stride-4 branch: 32 for W32
    model = torch.nn.ModuleDict({"backbone": backbone, "final_layer": torch.nn.Conv2d(channels, NUM_KEYPOINTS, 1)})
    return model, dropped


class HRNetEstimator(TopDownEstimator):
    """HRNet top-down estimator (see the module docstring).

    Args:
        weights: checkpoint file; None for random weights (tests).
        device, batch_size, flip_test, udp, shift_heatmap, input_size, heatmap_size,
            blur_kernel_size, precision, crop: see `TopDownEstimator`.
        variant: timm HRNet name.
    """

    name = "hrnet"
    needs_weights = True

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None,
        device: str = "cpu",
        batch_size: int = 32,
        flip_test: bool = True,
        udp: bool = False,
        shift_heatmap: bool = True,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        blur_kernel_size: int = 11,
        precision: str = "fp16",
        crop: str = "auto",
        variant: str = "hrnet_w32",
    ) -> None:
        super().__init__(
            device=device,
            batch_size=batch_size,
            flip_test=flip_test,
            udp=udp,
            shift_heatmap=shift_heatmap,
            input_size=input_size,
            heatmap_size=heatmap_size,
            blur_kernel_size=blur_kernel_size,
            precision=precision,
            crop=crop,
        )
        self.weights = str(weights) if weights is not None else "random"
        self.version = f"{variant}/{'udp' if udp else 'msra'}"
        if weights is not None and not Path(weights).is_file():
            raise EstimatorError(missing_weights_message("hrnet", weights))
        self.model, self.dropped_keys = build_pose_hrnet(variant)
        if weights is None:
            log.warning("HRNet with RANDOM weights (weights=None): for tests only")
        else:
            path = Path(weights)
            sd = hrnet_to_ours(load_checkpoint(path, estimator="hrnet"))
            sd = check_state_dict(self.model.state_dict(), sd, what=f"{path} (pose {variant})")
            self.model.load_state_dict(sd, strict=True)
            log.info("loaded HRNet weights from %s", path)
        self.model.to(device).eval()

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        (features,) = self.model["backbone"](crops)  # [N, C, h/4, w/4]
        return self.model["final_layer"](features)  # [N, 17, h/4, w/4]

"""ViTPose through transformers' `VitPoseForPoseEstimation`, run top-down with the UDP codec.

Defaults are mmpose's `td-hm_ViTPose-base_8xb64-210e_coco-256x192` (ViTPose-B, classic
decoder: two 4x4 stride-2 deconvolutions with BN + ReLU, then a 1x1 conv). transformers
implements both ViTPose heads and so do we: `decoder="classic"` or `decoder="simple"` (ReLU,
bilinear x4 upsampling, 3x3 conv: mmpose's `-simple` configs, the hub's vitpose-base-simple).
Both use the UDP codec, flip test without heatmap shift, LayerNorm eps 1e-6.

Weights (`weights=`): an mmpose 1.x `.pth`, an original ViTPose release `.pth` (both converted
by `convert.py`), a transformers model directory (`config.json` + weights, read offline), or
None for random weights (tests). The checkpoint must match the configured architecture
exactly; otherwise `EstimatorError` lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pose_extraction.estimators import EstimatorError, missing_weights_message
from pose_extraction.estimators.convert import check_state_dict, load_checkpoint, vitpose_to_hf
from pose_extraction.topdown import NUM_KEYPOINTS, TopDownEstimator

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DECODERS = ("classic", "simple")


def _transformers():
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise ImportError(
            "the ViTPose estimator needs torch and transformers: pip install torch transformers safetensors"
        ) from exc
    return transformers


class ViTPoseEstimator(TopDownEstimator):
    """ViTPose top-down estimator (see the module docstring).

    Args:
        weights: checkpoint file or transformers directory; None for random weights.
        device, batch_size, flip_test, udp, shift_heatmap, input_size, heatmap_size,
            blur_kernel_size, precision, crop: see `TopDownEstimator`.
        hidden_size, num_layers, num_heads: ViT size (ViTPose-B: 768, 12, 12; S: 384, 12, 12;
            L: 1024, 24, 16; H: 1280, 32, 16).
        decoder: "classic" (deconvolutions) or "simple" (upsample + 3x3 conv).
    """

    name = "vitpose"
    needs_weights = True

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None,
        device: str = "cpu",
        batch_size: int = 32,
        flip_test: bool = True,
        udp: bool = True,
        shift_heatmap: bool = False,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        blur_kernel_size: int = 11,
        precision: str = "fp16",
        crop: str = "auto",
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        decoder: str = "classic",
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
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.weights = str(weights) if weights is not None else "random"
        self.version = f"vitpose-{hidden_size}x{num_layers}-{decoder}/{'udp' if udp else 'msra'}"
        self.model = (
            self._build(weights, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, decoder=decoder)
            .to(device)
            .eval()
        )

    def config(self, *, hidden_size: int, num_layers: int, num_heads: int, decoder: str):
        """The transformers config of this architecture."""
        tf = _transformers()
        w, h = self.input_size
        backbone = tf.VitPoseBackboneConfig(
            image_size=(h, w),
            patch_size=(16, 16),
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            mlp_ratio=4,
            qkv_bias=True,
            layer_norm_eps=1e-6,
            out_indices=[num_layers],
        )
        return tf.VitPoseConfig(
            backbone_config=backbone, num_labels=NUM_KEYPOINTS, scale_factor=4, use_simple_decoder=decoder == "simple"
        )

    def _build(self, weights, *, hidden_size: int, num_layers: int, num_heads: int, decoder: str):
        tf = _transformers()
        cfg = self.config(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, decoder=decoder)
        if weights is None:
            log.warning("ViTPose with RANDOM weights (weights=None): for tests only")
            return tf.VitPoseForPoseEstimation(cfg)
        path = Path(weights)
        if path.is_dir():
            return self._from_directory(path, cfg)
        if not path.exists():
            raise EstimatorError(missing_weights_message("vitpose", path))
        w, h = self.input_size
        sd = vitpose_to_hf(load_checkpoint(path, estimator="vitpose"), num_patches=(h // 16) * (w // 16))
        model = tf.VitPoseForPoseEstimation(cfg)
        what = f"{path} (ViTPose {hidden_size}x{num_layers}, {decoder} decoder)"
        model.load_state_dict(check_state_dict(model.state_dict(), sd, what=what), strict=True)
        log.info("loaded ViTPose weights from %s", path)
        return model

    @staticmethod
    def _from_directory(path: Path, cfg):
        """A transformers directory, offline; its architecture must equal the configured one."""
        tf = _transformers()
        if not (path / "config.json").is_file():
            raise EstimatorError(f"{path}: a directory but not a transformers model (no config.json)")
        model, info = tf.VitPoseForPoseEstimation.from_pretrained(
            str(path), local_files_only=True, output_loading_info=True
        )
        got, want = model.config, cfg
        fields = {
            "hidden_size": (got.backbone_config.hidden_size, want.backbone_config.hidden_size),
            "num_layers": (got.backbone_config.num_hidden_layers, want.backbone_config.num_hidden_layers),
            "num_heads": (got.backbone_config.num_attention_heads, want.backbone_config.num_attention_heads),
            "decoder": tuple("simple" if c.use_simple_decoder else "classic" for c in (got, want)),
            "num_labels": (got.num_labels, want.num_labels),
            "image_size": (tuple(got.backbone_config.image_size), tuple(want.backbone_config.image_size)),
            "out_indices": (list(got.backbone_config.out_indices), list(want.backbone_config.out_indices)),
            "num_experts": (got.backbone_config.num_experts, 1),
        }
        diff = [f"{k}: directory {a!r} vs configured {b!r}" for k, (a, b) in fields.items() if a != b]
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        diff += [f"{k}: {sorted(map(str, v))[:20]}" for k, v in bad.items()]
        if diff:
            raise EstimatorError(
                f"{path}: the transformers model does not match the configured ViTPose:\n  " + "\n  ".join(diff)
            )
        if got.backbone_config.layer_norm_eps != 1e-6:
            log.warning("%s: layer_norm_eps %g (ViTPose uses 1e-6)", path, got.backbone_config.layer_norm_eps)
        log.info("loaded ViTPose transformers model from %s", path)
        return model.float()  # the file's dtype may be half; autocast handles speed on CUDA

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=crops).heatmaps  # [N, 17, h/4, w/4]

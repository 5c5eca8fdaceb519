"""OpenPifPaf (bottom-up, no detector) through the `openpifpaf-vita` package.

openpifpaf-vita 0.14.2 has no wheel for this torch: the project builds it against the venv's
torch with `make install-openpifpaf` (`scripts/install_openpifpaf.sh`; docs/dependencies.md §4.2).
Published checkpoints (`shufflenetv2k16`, `shufflenetv2k30`, `resnet50`) are whole pickled
models, `{'model': <openpifpaf.network.nets.Shell>, 'epoch': ..., 'meta': ...}`: unpickling
them runs arbitrary code, so this adapter loads one only from the path it is given, which the
driver takes from the local weights cache (`make weights ESTIMATOR=openpifpaf`, or
`python -m pose_extraction weights openpifpaf --from FILE`) or from an explicit `weights=`
path. It never downloads (OpenPifPaf's own `Predictor` would, from GitHub, given a name).

What this adapter does instead of OpenPifPaf's `Predictor` (whose settings are class
attributes shared by the process):
- loads the checkpoint itself with `torch.load(path, weights_only=False)` (so OpenPifPaf's
  `torch.load` without `weights_only`, which fails on torch >= 2.6, never runs and
  `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` is not needed), then OpenPifPaf's `model_migration`;
- preprocesses as OpenPifPaf's eval path: optional rescale of the long edge, centred padding
  to `16 k + 1` pixels per side with the fill colour (124, 116, 104), ImageNet normalisation;
  frames of one chunk share a size, so they go through the network `batch_size` at a time;
- decodes with OpenPifPaf's CIF-CAF decoder (C++) and maps the poses back to image pixels.

Runtime shims, applied here only: `matplotlib.cm.get_cmap` is restored (from
`matplotlib.colormaps`) before `import openpifpaf`, which still calls it at import time and
crashes on matplotlib >= 3.9. OpenPifPaf's per-frame INFO logging is raised to WARNING.

The decoder thresholds are static members of OpenPifPaf's C++ classes, i.e. process-wide;
each `estimate` call sets this instance's values before decoding.

Output per frame (bottom-up interface): keypoints float32 [k, 17, 2] in image pixels, COCO-17
(OpenPifPaf's cocokp order is COCO's), scores float32 [k, 17] in [0, 1]; a joint OpenPifPaf
did not find has c = 0 (its convention) and coordinates 0 (ours).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.schema import COCO17_JOINTS
from pose_extraction.estimators import EstimatorError, missing_weights_message

log = logging.getLogger(__name__)

COCO_KEYPOINTS = COCO17_JOINTS  # the order OpenPifPaf's cocokp head must have
PAD_MULTIPLE = 16  # OpenPifPaf's CenterPadTight(16): sides become 16 k + 1
PAD_FILL = (124, 116, 104)  # its padding colour (RGB)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INSTALL_HINT = (
    "run `make install-openpifpaf` (scripts/install_openpifpaf.sh builds openpifpaf-vita against the venv's torch)"
)


def import_openpifpaf() -> Any:
    """`import openpifpaf` with the matplotlib shim; ImportError naming the Make target if it fails."""
    try:
        import matplotlib
        import matplotlib.cm

        if not hasattr(matplotlib.cm, "get_cmap"):  # removed in matplotlib 3.9; openpifpaf calls it at import
            matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    except ImportError:  # openpifpaf guards its own matplotlib import
        pass
    try:
        with warnings.catch_warnings():  # timm's deprecated paths, matplotlib's set_bad: not ours to fix
            for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
                warnings.filterwarnings("ignore", category=category)
            import openpifpaf
            import openpifpaf.decoder  # the C++ decoder (torch.classes) is registered here
    except ImportError as exc:
        raise ImportError(f"the openpifpaf estimator needs the openpifpaf-vita package: {INSTALL_HINT}") from exc
    except Exception as exc:  # e.g. its C++ extension built against another torch
        raise ImportError(
            f"openpifpaf is installed but does not load ({type(exc).__name__}: {exc}); rebuild it: {INSTALL_HINT}"
        ) from exc
    if logging.getLogger("openpifpaf").level == logging.NOTSET:
        logging.getLogger("openpifpaf").setLevel(logging.WARNING)  # it logs every frame's poses at INFO
    return openpifpaf


def pad_geometry(h: int, w: int, scale: float) -> tuple[int, int, int, int]:
    """(scaled h, scaled w, pad left, pad top) of OpenPifPaf's resize + CenterPadTight(16)."""
    sh, sw = (h, w) if scale == 1.0 else (max(1, round(h * scale)), max(1, round(w * scale)))
    th = math.ceil((sh - 1) / PAD_MULTIPLE) * PAD_MULTIPLE + 1
    tw = math.ceil((sw - 1) / PAD_MULTIPLE) * PAD_MULTIPLE + 1
    return sh, sw, (tw - sw) // 2, (th - sh) // 2


def annotations_to_arrays(
    poses: Sequence[np.ndarray], *, offset: tuple[float, float], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """OpenPifPaf poses [17, 3] (x, y, c) in network-input pixels -> ours in image pixels.

    Args:
        poses: one (x, y, c) array [17, 3] per person, as `Annotation.data`.
        offset: (left, top) padding added before the network.
        scale: the resize factor applied before padding.

    Returns:
        keypoints float32 [k, 17, 2] and scores float32 [k, 17] in [0, 1]; joints with c <= 0
        get coordinates 0 and score 0.
    """
    if not len(poses):
        return np.zeros((0, 17, 2), np.float32), np.zeros((0, 17), np.float32)
    data = np.stack([np.asarray(p, np.float32) for p in poses])  # [k, 17, 3]
    assert data.shape[1:] == (17, 3), data.shape
    kp = (data[..., :2] - np.asarray(offset, np.float32)) / np.float32(scale)  # [k, 17, 2]
    score = np.clip(data[..., 2], 0.0, 1.0)  # [k, 17]
    kp[score <= 0] = 0.0
    return kp.astype(np.float32), score.astype(np.float32)


class OpenPifPafEstimator:
    """OpenPifPaf CIF-CAF, bottom-up: every person in a frame, no detector.

    Args:
        weights: a checkpoint in OpenPifPaf's published layout (a pickled model, or a dict with
            it under 'model'), or None for a randomly initialised `base_name` (tests only).
        device: "cpu", "cuda", "cuda:1", ...
        batch_size: frames per network forward.
        flip_test: accepted for the common constructor; OpenPifPaf has no flip test (ignored).
        long_edge: resize frames so their long side has this many pixels (0: native size,
            OpenPifPaf's default).
        seed_threshold: minimum CIF confidence of a seed (OpenPifPaf's default 0.2).
        instance_threshold: minimum pose score kept (default 0.15).
        keypoint_threshold: minimum joint confidence kept, else c = 0 (default 0.15; at most
            `seed_threshold`, as OpenPifPaf enforces).
        cif_threshold: CIF high-resolution accumulation threshold (default 0.3).
        caf_threshold: CAF association threshold (default 0.3).
        base_name: the network built when `weights` is None.
    """

    needs_boxes = False
    needs_weights = True
    name = "openpifpaf"
    max_persons = None

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None,
        device: str = "cpu",
        batch_size: int = 8,
        flip_test: bool = False,
        long_edge: int = 0,
        seed_threshold: float = 0.2,
        instance_threshold: float = 0.15,
        keypoint_threshold: float = 0.15,
        cif_threshold: float = 0.3,
        caf_threshold: float = 0.3,
        base_name: str = "shufflenetv2k16",
    ) -> None:
        if weights is not None and not Path(weights).is_file():
            raise EstimatorError(missing_weights_message(self.name, weights))
        if batch_size < 1 or long_edge < 0:
            raise EstimatorError(f"openpifpaf: need batch_size >= 1 and long_edge >= 0, got {batch_size}, {long_edge}")
        if keypoint_threshold > seed_threshold:
            log.warning(
                "openpifpaf: keypoint_threshold %.3g > seed_threshold %.3g; lowered to the seed threshold "
                "(as OpenPifPaf does)",
                keypoint_threshold,
                seed_threshold,
            )
            keypoint_threshold = seed_threshold
        self._opp = import_openpifpaf()
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.batch_size, self.long_edge = batch_size, long_edge
        self.flip_test = False  # no flip test in OpenPifPaf's inference
        self.thresholds = {
            "seed": seed_threshold,
            "instance": instance_threshold,
            "keypoint": keypoint_threshold,
            "cif": cif_threshold,
            "caf": caf_threshold,
        }
        net = self._load(weights, base_name)
        metas = net.head_metas
        if len(metas) < 2 or tuple(getattr(metas[0], "keypoints", ())) != COCO_KEYPOINTS:
            raise EstimatorError(
                f"{weights}: not an OpenPifPaf COCO-17 keypoint model (heads "
                f"{[getattr(m, 'name', m) for m in metas]}); use a cocokp checkpoint "
                "such as shufflenetv2k16"
            )
        self.model = net.to(self.device).eval()
        self.processor = self._opp.decoder.factory(metas)
        self.weights = Path(weights).name if weights is not None else "random"
        self.version = f"openpifpaf {self._opp.__version__}, {net.base_net.name}"

    def _load(self, weights: str | os.PathLike | None, base_name: str) -> Any:
        opp, torch = self._opp, self._torch
        if weights is None:
            factory = opp.network.Factory(base_name=base_name, checkpoint=None)
            net, _ = factory.factory(head_metas=opp.datasets.factory("cocokp").head_metas)
            return net
        # A foreign pickle: only the path the user or the cache gave us, never a download.
        try:
            obj = torch.load(weights, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise EstimatorError(
                f"{weights}: cannot load as an OpenPifPaf checkpoint ({type(exc).__name__}: {exc})"
            ) from exc
        net = obj.get("model") if isinstance(obj, dict) else obj
        if not isinstance(net, opp.network.nets.Shell):
            kind = f"a dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__
            raise EstimatorError(
                f"{weights}: not an OpenPifPaf checkpoint (expected a pickled model or "
                f"{{'model': model, ...}}, got {kind})"
            )
        opp.network.model_migration.model_migration(net)  # older checkpoints -> this version's layout
        return net

    def _apply_thresholds(self) -> None:
        """Set the process-wide decoder thresholds to this instance's values."""
        utils, cifcaf = self._opp.decoder.utils, self._torch.classes.openpifpaf_decoder.CifCaf
        t = self.thresholds
        utils.CifHr.set_threshold(t["cif"])
        utils.CifSeeds.set_threshold(t["seed"])
        utils.CafScored.set_default_score_th(t["caf"])
        utils.nms.Keypoints.set_instance_threshold(t["instance"])
        utils.nms.Keypoints.set_keypoint_threshold(t["keypoint"])
        cifcaf.set_keypoint_threshold(t["keypoint"])

    def _preprocess(self, frames: Sequence[np.ndarray]) -> tuple[Any, tuple[int, int], float]:
        """RGB uint8 frames [H, W, 3] of one size -> normalised, padded batch [N, 3, H', W']."""
        torch, F = self._torch, self._torch.nn.functional
        h, w = frames[0].shape[:2]
        scale = self.long_edge / max(h, w) if self.long_edge else 1.0
        sh, sw, left, top = pad_geometry(h, w, scale)
        x = torch.from_numpy(np.stack(frames)).to(self.device).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
        if scale != 1.0:
            x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=scale < 1)
        th = math.ceil((sh - 1) / PAD_MULTIPLE) * PAD_MULTIPLE + 1
        tw = math.ceil((sw - 1) / PAD_MULTIPLE) * PAD_MULTIPLE + 1
        out = torch.empty((len(frames), 3, th, tw), device=self.device)  # [N, 3, H', W']
        out[:] = torch.tensor(PAD_FILL, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        out[:, :, top : top + sh, left : left + sw] = x
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0
        return (out - mean) / std, (left, top), scale

    def estimate(
        self, frames: list[np.ndarray], boxes: list[np.ndarray] | None = None, *, start_index: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All persons in each frame.

        Args:
            frames: RGB uint8 [H, W, 3] each (one video: one size).
            boxes: must be None (bottom-up).
            start_index: index of frames[0] in its video (unused: frames are independent).

        Returns:
            per frame (keypoints float32 [k, 17, 2] pixels, scores float32 [k, 17] in [0, 1]).
        """
        if boxes is not None:
            raise ValueError("openpifpaf is bottom-up: call estimate(frames, None)")
        self._apply_thresholds()
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(0, len(frames), self.batch_size):
            batch = frames[i : i + self.batch_size]
            if len({f.shape for f in batch}) != 1:  # a video whose size changes: one at a time
                for f in batch:
                    out.extend(self._estimate_batch([f]))
            else:
                out.extend(self._estimate_batch(batch))
        return out

    def _estimate_batch(self, frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        x, offset, scale = self._preprocess(frames)
        preds = self.processor.batch(self.model, x, device=self.device)  # per frame: [Annotation]
        return [annotations_to_arrays([a.data for a in anns], offset=offset, scale=scale) for anns in preds]

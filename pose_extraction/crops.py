"""Person boxes to network input crops, as mmpose 1.x's top-down inference makes them (pose_extraction/topdown.py's
docstring gives the steps): box -> (center, scale), the plain or UDP warp, `crop_batch` with cv2 on the CPU (the
reference) and `crop_batch_torch`, the same warp on the frames' device.

Only numpy and cv2 at import time; torch is imported inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# mmpose's PoseDataPreprocessor (bgr_to_rgb=True): statistics of RGB images, in 0-255 units.
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)
BOX_PADDING = 1.25


def require_cv2():
    """The cv2 module, or an ImportError that says how to install it."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("top-down pose estimation needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


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


def check_frame(frame: np.ndarray, where: str) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"{where}: expected an RGB uint8 array [H, W, 3], got {got}")


def check_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
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
    cv2 = require_cv2()
    if len(frames) != len(boxes):
        raise ValueError(f"crop_batch: {len(frames)} frames but {len(boxes)} box arrays")
    w, h = input_size
    warp = get_udp_warp_matrix if udp else get_warp_matrix
    crops, centers, scales = [], [], []
    for i, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
        check_frame(frame, f"frame {i}")
        center, scale = bbox_xyxy_to_center_scale(
            check_boxes(frame_boxes, f"boxes of frame {i}"), input_size=input_size, padding=padding
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
        check_frame(frame, f"frame {i}")
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
    boxes = check_boxes(boxes, "crop_batch_torch boxes")
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

"""Heatmaps to keypoints, as mmpose 1.x decodes them (pose_extraction/topdown.py's docstring gives the steps): the
argmax, MSRA's quarter-pixel step or UDP's DARK step, the flip test's heatmap flip, and crop pixels back to the
image. numpy and cv2 only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pose_extraction.crops import require_cv2

NUM_KEYPOINTS = 17
# COCO-17: nose, then (left, right) pairs of eyes, ears, shoulders, elbows, wrists, hips, knees, ankles.
COCO_FLIP_INDICES = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


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
    cv2 = require_cv2()
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

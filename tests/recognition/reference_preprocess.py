"""Test-side reference of docs/method.md §2, test path, faithful mode, written with plain loops from the spec.

Deliberately independent of `recognition.preprocess` (no shared code, no vectorisation) so that the two can be
compared: test frame indices, make_cam, two-person tracking (xy only), COCO->H36M on xy with the confidences left in
COCO order, zero-person padding, crop_scale with ratio 2. Reused by end-to-end evaluation tests.
"""

from __future__ import annotations

import math

import numpy as np

# H36M joint -> the COCO joints it is the mean of (a single joint: a copy). Belly (7) is handled separately.
H36M_SOURCES = {
    0: (11, 12),
    1: (12,),
    2: (14,),
    3: (16,),
    4: (11,),
    5: (13,),
    6: (15,),
    8: (5, 6),
    9: (0,),
    10: (1, 2),
    11: (5,),
    12: (7,),
    13: (9,),
    14: (6,),
    15: (8,),
    16: (10,),
}


def _coco_to_h36m_frame(joints):
    """One frame: list of 17 (x, y) COCO points -> list of 17 (x, y) H36M points."""
    out = [None] * 17
    for h36m, sources in H36M_SOURCES.items():
        xs = [joints[c][0] for c in sources]
        ys = [joints[c][1] for c in sources]
        out[h36m] = (sum(xs) / len(xs), sum(ys) / len(ys))
    root, neck = out[0], out[8]
    out[7] = ((root[0] + neck[0]) / 2, (root[1] + neck[1]) / 2)
    return out


def _dist(p, q):
    return math.sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2)


def reference_test_clip(keypoint: np.ndarray, score: np.ndarray, img_shape, clip_len: int = 243) -> np.ndarray:
    """keypoint [M<=2, T0, 17, 2] pixels, score [M, T0, 17] -> float32 [2, clip_len, 17, 3] (faithful test path)."""
    n_persons, t0 = keypoint.shape[0], keypoint.shape[1]
    h, w = img_shape
    longest = max(h, w)

    # make_cam: persons[m][t][j] = (x, y) in [-1, 1]
    persons = []
    for m in range(n_persons):
        frames = []
        for t in range(t0):
            frames.append(
                [
                    (float(keypoint[m, t, j, 0]) / longest * 2 - 1, float(keypoint[m, t, j, 1]) / longest * 2 - 1)
                    for j in range(17)
                ]
            )
        persons.append(frames)

    # human_tracking: compare person 0 at t+1 with persons 0 and 1 at t (raw slots), flip the assignment on d0 > d1
    if n_persons == 2:
        tracked = [[persons[0][0]], [persons[1][0]]]
        flips = 0
        for t in range(t0 - 1):
            d0 = sum(_dist(persons[0][t + 1][j], persons[0][t][j]) for j in range(17))
            d1 = sum(_dist(persons[0][t + 1][j], persons[1][t][j]) for j in range(17))
            if d0 > d1:
                flips += 1
            if flips % 2 == 1:
                tracked[0].append(persons[1][t + 1])
                tracked[1].append(persons[0][t + 1])
            else:
                tracked[0].append(persons[0][t + 1])
                tracked[1].append(persons[1][t + 1])
        persons = tracked

    # H36M order for xy; conf stays as given (COCO order, not swapped by tracking)
    persons = [[_coco_to_h36m_frame(frame) for frame in frames] for frames in persons]

    # test resampling and (x, y, conf) assembly, then the zero person
    out = np.zeros((2, clip_len, 17, 3), dtype=np.float64)
    for m in range(n_persons):
        for k in range(clip_len):
            t = math.floor(k * t0 / clip_len)
            for j in range(17):
                out[m, k, j, 0] = persons[m][t][j][0]
                out[m, k, j, 1] = persons[m][t][j][1]
                out[m, k, j, 2] = float(score[m, t, j])

    # crop_scale, ratio 2: box over joints with conf != 0
    xs, ys = [], []
    for m in range(2):
        for k in range(clip_len):
            for j in range(17):
                if out[m, k, j, 2] != 0:
                    xs.append(out[m, k, j, 0])
                    ys.append(out[m, k, j, 1])
    if len(xs) < 4:
        return np.zeros((2, clip_len, 17, 3), dtype=np.float32)
    side = max(max(xs) - min(xs), max(ys) - min(ys)) * 2.0
    if side == 0:
        return np.zeros((2, clip_len, 17, 3), dtype=np.float32)
    x0 = (min(xs) + max(xs) - side) / 2
    y0 = (min(ys) + max(ys) - side) / 2
    for m in range(2):
        for k in range(clip_len):
            for j in range(17):
                out[m, k, j, 0] = ((out[m, k, j, 0] - x0) / side - 0.5) * 2
                out[m, k, j, 1] = ((out[m, k, j, 1] - y0) / side - 0.5) * 2
                for c in range(3):
                    out[m, k, j, c] = min(1.0, max(-1.0, out[m, k, j, c]))
    return out.astype(np.float32)

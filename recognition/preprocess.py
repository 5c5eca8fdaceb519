"""Per-clip preprocessing of docs/method.md §2: PYSKL COCO-17 keypoints -> DSTFormer input [M=2, T, V=17, C=3].

Pure numpy, importable without torch. Each step of docs/method.md §2 is one function; `preprocess_clip` chains them
in the exact order of §2, with the Gaussian noise of §8(a) inserted in screen-normalised space before tracking. All
randomness comes from an explicit `np.random.Generator` argument; nothing here seeds a global RNG.

Axis letters: M persons, T frames (T0 = the raw length), V joints, C channels (x, y, conf).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 17
CONF_ORDERS = ("h36m", "coco")

# H36M-17 joint -> COCO-17 joint, for the joints that are copied (docs/method.md §2 step 4). Ears (3, 4) are dropped.
_H36M_FROM_COCO = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 9: 0, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}


@dataclass(frozen=True)
class PreprocessOptions:
    """Preprocessing settings. Defaults are the fixed behaviour; `faithful_options()` gives the official one.

    Attributes:
        clip_len: frames per model input (T).
        scale_range_train: crop_scale ratio range drawn per training item.
        scale_test: fixed crop_scale ratio at test time.
        random_move: apply `random_move` to training items.
        conf_order: "h36m" re-maps confidences with the xy rule; "coco" keeps them in COCO order (F3, official).
        track_swaps_conf: tracking swaps confidences with xy; False is the official quirk (F4).
        resample_per_item: re-draw training frame indices per item; False draws once per dataset (F5, official).
    """

    clip_len: int = 243
    scale_range_train: tuple[float, float] = (1.0, 3.0)
    scale_test: float = 2.0
    random_move: bool = True
    conf_order: str = "h36m"
    track_swaps_conf: bool = True
    resample_per_item: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_range_train", tuple(self.scale_range_train))  # YAML gives a list
        if len(self.scale_range_train) != 2:
            raise ValueError(f"scale_range_train must be (low, high), got {self.scale_range_train}")
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        if self.conf_order not in CONF_ORDERS:
            raise ValueError(f"conf_order must be one of {CONF_ORDERS}, got {self.conf_order!r}")
        lo, hi = self.scale_range_train
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range_train must satisfy 0 < low <= high, got {self.scale_range_train}")
        if self.scale_test <= 0:
            raise ValueError(f"scale_test must be > 0, got {self.scale_test}")


# The official MotionBERT/MaskCLR data pipeline's quirks, the one place switches F3, F4, F5 are set.
OFFICIAL_DATA_SWITCHES = {"conf_order": "coco", "track_swaps_conf": False, "resample_per_item": False}


def fixed_options(base: PreprocessOptions | None = None) -> PreprocessOptions:
    """`base` with the switches F3, F4, F5 at our fixed behaviour (the defaults)."""
    default = PreprocessOptions()
    return dataclasses.replace(base or default, **{k: getattr(default, k) for k in OFFICIAL_DATA_SWITCHES})


def describe_preprocessing(opts: PreprocessOptions) -> str:
    """`faithful` (the official test pipeline: F3 and F4 as the official code), `fixed`, or `mixed (...)`, for
    metrics.json, logs and the report's header. F5 concerns training only and is not named."""
    official = {k: getattr(opts, k) == v for k, v in OFFICIAL_DATA_SWITCHES.items() if k != "resample_per_item"}
    if all(official.values()):
        return "faithful"
    if not any(official.values()):
        return "fixed"
    return "mixed (official: " + ", ".join(k for k, v in official.items() if v) + ")"


def faithful_options(base: PreprocessOptions | None = None, **overrides) -> PreprocessOptions:
    """`base` (default: the defaults) with the official data pipeline's switches F3, F4, F5, then `overrides`."""
    return dataclasses.replace(base or PreprocessOptions(), **{**OFFICIAL_DATA_SWITCHES, **overrides})


def resample_indices(t_orig: int, clip_len: int, *, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices [clip_len] into a clip of `t_orig` frames (docs/method.md §2 step 1).

    With e_k = k * t_orig / clip_len: test takes floor(e_k); train with t_orig < clip_len takes floor or ceil of e_k
    (1/2 each), sorted; train with t_orig >= clip_len takes floor(e_k + U(0,1) * t_orig / clip_len). Train indices
    are clipped to [0, t_orig - 1].
    """
    if t_orig < 1:
        raise ValueError(f"cannot resample a clip of {t_orig} frames")
    k = np.arange(clip_len, dtype=np.int64)
    if not train:
        return k * t_orig // clip_len  # exact floor(k * T0 / clip_len)
    if rng is None:
        raise ValueError("training resample needs an rng")
    even = k * t_orig / clip_len  # [clip_len] e_k
    if t_orig < clip_len:
        take_low = rng.integers(0, 2, size=clip_len).astype(bool)
        idx = np.sort(np.where(take_low, np.floor(even), np.ceil(even)))
    else:
        idx = np.floor(even + rng.random(clip_len) * (t_orig / clip_len))
    return np.clip(idx, 0, t_orig - 1).astype(np.int64)


def normalize_screen(xy: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """Pixels -> [-1, 1] by the longer image side: xy / max(H, W) * 2 - 1 (`make_cam`, docs/method.md §2 step 2)."""
    h, w = img_shape
    return np.asarray(xy, dtype=np.float64) / max(h, w) * 2 - 1


def add_gaussian_noise(xy: np.ndarray, sigma: float, rng: np.random.Generator, *, per_person: bool) -> np.ndarray:
    """xy [M, T, V, 2] + N(0, sigma^2) i.i.d. per frame, joint, coordinate, clipped to [-1, 1] (docs/method.md §8(a)).

    Args:
        xy: screen-normalised coordinates (after `normalize_screen`).
        per_person: independent noise per person; False draws one [T, V, 2] tensor broadcast to every person (F6,
            official).
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    shape = xy.shape if per_person else xy.shape[1:]  # [M, T, V, 2] or [T, V, 2]
    return np.clip(xy + rng.normal(0.0, sigma, size=shape), -1.0, 1.0)


def track_two_persons(xy: np.ndarray, conf: np.ndarray, *, swap_conf: bool) -> tuple[np.ndarray, np.ndarray]:
    """MotionBERT's `human_tracking` (docs/method.md §2 step 3) on xy [M, T, V, 2] and conf [M, T, V].

    d0_t = sum_j |p0_{t+1,j} - p0_{t,j}|, d1_t = sum_j |p0_{t+1,j} - p1_{t,j}|, both on the raw slots; persons are
    swapped at frame t+1 wherever cumsum(d0 > d1) is odd. conf is swapped too only if `swap_conf` (F4). M != 2 is
    returned unchanged.
    """
    if xy.shape[0] != 2 or xy.shape[1] < 2:
        return xy, conf
    d0 = np.linalg.norm(xy[0, 1:] - xy[0, :-1], axis=-1).sum(axis=-1)  # [T-1]
    d1 = np.linalg.norm(xy[0, 1:] - xy[1, :-1], axis=-1).sum(axis=-1)  # [T-1]
    swapped = np.concatenate([[False], np.cumsum(d0 > d1) % 2 == 1])  # [T], frame 0 never swapped
    xy = xy.copy()
    xy[:, swapped] = xy[::-1, swapped]  # exchange persons 0 and 1 at the swapped frames
    if swap_conf:
        conf = conf.copy()
        conf[:, swapped] = conf[::-1, swapped]
    return xy, conf


def coco_to_h36m(x: np.ndarray) -> np.ndarray:
    """COCO-17 -> H36M-17 joint order on x [..., V=17, C] (docs/method.md §2 step 4); derived joints are means."""
    assert x.shape[-2] == NUM_JOINTS, x.shape
    y = np.empty(x.shape, dtype=np.float64)  # [..., 17, C]
    for h36m, coco in _H36M_FROM_COCO.items():
        y[..., h36m, :] = x[..., coco, :]
    y[..., 0, :] = (x[..., 11, :] + x[..., 12, :]) * 0.5  # root = mid-hip
    y[..., 8, :] = (x[..., 5, :] + x[..., 6, :]) * 0.5  # neck = mid-shoulder
    y[..., 7, :] = (y[..., 0, :] + y[..., 8, :]) * 0.5  # belly = mid(root, neck)
    y[..., 10, :] = (x[..., 1, :] + x[..., 2, :]) * 0.5  # head = mid-eye
    return y


def coco_conf_to_h36m(conf: np.ndarray) -> np.ndarray:
    """Confidences [..., V=17] re-mapped with the xy rule of `coco_to_h36m` (the fixed F3 behaviour)."""
    return coco_to_h36m(conf[..., None])[..., 0]


def random_move(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    angle_range: tuple[float, float] = (-10.0, 10.0),
    scale_range: tuple[float, float] = (0.9, 1.1),
    translate_range: tuple[float, float] = (-0.1, 0.1),
) -> np.ndarray:
    """Random rotation/scale/translation, interpolated linearly from first to last frame (docs/method.md §2 step 7).

    Acts on x, y of every person (the zero person included) of x [M, T, V, C>=2]; other channels are kept.
    """
    t = x.shape[1]
    angle = rng.uniform(*angle_range, size=2)  # degrees at the first and last frame
    scale = rng.uniform(*scale_range, size=2)
    tx = rng.uniform(*translate_range, size=2)
    ty = rng.uniform(*translate_range, size=2)
    a = np.deg2rad(np.linspace(angle[0], angle[1], t))[None, :, None]  # [1, T, 1]
    s = np.linspace(scale[0], scale[1], t)[None, :, None]
    tx = np.linspace(tx[0], tx[1], t)[None, :, None]
    ty = np.linspace(ty[0], ty[1], t)[None, :, None]
    out = np.array(x, dtype=np.float64)  # [M, T, V, C]
    px, py = out[..., 0].copy(), out[..., 1].copy()  # [M, T, V]
    out[..., 0] = s * (np.cos(a) * px - np.sin(a) * py) + tx
    out[..., 1] = s * (np.sin(a) * px + np.cos(a) * py) + ty
    return out


def crop_scale(x: np.ndarray, ratio: float | tuple[float, float], rng: np.random.Generator | None = None) -> np.ndarray:
    """Centre the clip's box of valid joints and scale its larger side to span 2 / ratio (docs/method.md §2 step 8).

    Args:
        x: [M, T, V, 3] with conf in channel 2; a joint is valid where conf != 0.
        ratio: a fixed ratio, or a (low, high) range drawn uniformly with `rng`.

    Returns:
        [M, T, V, 3] float64, the whole tensor (conf included) clipped to [-1, 1]; all zeros when fewer than 4
        joints are valid or the box is a single point.
    """
    valid_xy = x[..., :2][x[..., 2] != 0]  # [P, 2]
    if len(valid_xy) < 4:
        return np.zeros(x.shape, dtype=np.float64)
    if isinstance(ratio, (tuple, list)):
        if rng is None:
            raise ValueError("a ratio range needs an rng")
        ratio = rng.uniform(*ratio)
    (xmin, ymin), (xmax, ymax) = valid_xy.min(axis=0), valid_xy.max(axis=0)
    side = max(xmax - xmin, ymax - ymin) * ratio
    if side == 0:  # as the official code: avoid dividing by zero
        return np.zeros(x.shape, dtype=np.float64)
    origin = np.array([xmin + xmax - side, ymin + ymax - side]) / 2
    out = np.array(x, dtype=np.float64)
    out[..., :2] = ((out[..., :2] - origin) / side - 0.5) * 2
    return np.clip(out, -1.0, 1.0)


def select_two_persons(keypoint: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the two persons with the highest summed score (docs/method.md §2.1, Kinetics proposal).

    Args:
        keypoint: [M, T, V, 2]; score: [M, T, V].

    Returns:
        (keypoint [M', T, V, 2], score [M', T, V], kept [M']) with M' = min(M, 2). Kept persons are ordered by
        decreasing total score (ties: lower slot first); M <= 2 is returned unchanged with kept = 0..M-1.
    """
    m = keypoint.shape[0]
    if m <= 2:
        return keypoint, score, np.arange(m)
    totals = score.reshape(m, -1).sum(axis=1)  # [M]
    kept = np.argsort(-totals, kind="stable")[:2]
    return keypoint[kept], score[kept], kept


def preprocess_clip(
    keypoint: np.ndarray,
    score: np.ndarray,
    img_shape: tuple[int, int],
    *,
    train: bool,
    opts: PreprocessOptions,
    rng: np.random.Generator | None,
    noise_sigma: float = 0.0,
    noise_per_person: bool = True,
    indices: np.ndarray | None = None,
    clip_name: str = "<clip>",
) -> np.ndarray:
    """One raw clip -> model input, following docs/method.md §2 in order.

    Args:
        keypoint: [M, T0, 17, 2] pixels, COCO order, M in {1, 2} (see `select_two_persons`).
        score: [M, T0, 17].
        img_shape: (H, W).
        train: training path (random resample, random_move, random crop ratio) or deterministic test path.
        rng: source of all randomness; may be None on the test path without noise.
        noise_sigma: Gaussian noise of docs/method.md §8(a), added in screen space before tracking; 0 disables it.
        noise_per_person: independent noise per person (False: official broadcast, F6).
        indices: precomputed frame indices [clip_len] (F5: drawn once per dataset); None draws them here.
        clip_name: named in error messages.

    Returns:
        float32 [2, clip_len, 17, 3], channels (x, y, conf).
    """
    if keypoint.ndim != 4 or keypoint.shape[2:] != (NUM_JOINTS, 2) or score.shape != keypoint.shape[:3]:
        raise ValueError(
            f"{clip_name}: expected keypoint [M, T, 17, 2] and score [M, T, 17], got {keypoint.shape} and {score.shape}"
        )
    m, t_orig = keypoint.shape[:2]
    if m == 0:
        raise ValueError(f"{clip_name}: no person in the clip, nothing to preprocess")
    if m > 2:
        raise ValueError(f"{clip_name}: {m} persons; keep two with select_two_persons first")
    if t_orig == 0:
        raise ValueError(f"{clip_name}: clip has 0 frames")
    if train and rng is None:
        raise ValueError(f"{clip_name}: the training path needs an rng")
    if indices is None:
        indices = resample_indices(t_orig, opts.clip_len, train=train, rng=rng)  # step 1, [T]
    elif indices.shape != (opts.clip_len,) or indices.min() < 0 or indices.max() >= t_orig:
        raise ValueError(
            f"{clip_name}: indices must be [{opts.clip_len}] within [0, {t_orig}), got shape {indices.shape}"
        )

    xy = normalize_screen(keypoint, img_shape)  # step 2, [M, T0, 17, 2]
    conf = np.asarray(score, dtype=np.float64)  # [M, T0, 17]
    if noise_sigma > 0:
        if rng is None:
            raise ValueError(f"{clip_name}: noise_sigma > 0 needs an rng")
        xy = add_gaussian_noise(xy, noise_sigma, rng, per_person=noise_per_person)
    xy, conf = track_two_persons(xy, conf, swap_conf=opts.track_swaps_conf)  # step 3
    xy = coco_to_h36m(xy)  # step 4
    if opts.conf_order == "h36m":
        conf = coco_conf_to_h36m(conf)
    x = np.concatenate([xy[:, indices], conf[:, indices, :, None]], axis=-1)  # step 5, [M, T, 17, 3]
    if m == 1:
        x = np.concatenate([x, np.zeros_like(x)], axis=0)  # step 6, [2, T, 17, 3]
    if train and opts.random_move:
        x = random_move(x, rng)  # step 7
    ratio = opts.scale_range_train if train else opts.scale_test
    x = crop_scale(x, ratio, rng)  # step 8
    return x.astype(np.float32)

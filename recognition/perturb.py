"""Perturbations of docs/method.md §8 (robustness protocols): pure numpy functions on clip arrays, and their table.

Each perturbation is a pure function of its inputs and an explicit `np.random.Generator`; nothing here seeds a global
RNG or touches torch. `PERTURBATIONS` (at the end) is the one table of them: name -> `PerturbationSpec` (where it acts,
whether it is seeded, its parameters and identity, the function that applies it, its label, its random stream and its
report sweep). `recognition.robustness` runs the table with a result cache and `recognition.report_robustness`
draws its sweeps; adding a perturbation is a function here plus one entry (plus a `ReportConfig` grid when it gets a
report sweep).

Where each one plugs into the preprocessing of docs/method.md §2 (`PerturbationSpec.space`):

- "screen": screen-normalised space (`make_cam`, [-1, 1]), before tracking, the COCO -> H36M conversion, resampling and
  `crop_scale`; this is where docs/method.md §8(a) adds Gaussian noise. `recognition.preprocess.preprocess_clip`
  applies the Gaussian noise itself (`noise_sigma`); any other screen-space perturbation goes through
  `perturb_pixels`, which maps pixels to that space, applies it and maps back, so `preprocess_clip` then sees the
  perturbed clip.
- "model": model-input space [M, T, V, 3] (channels x, y, conf), i.e. after `crop_scale`: shifted joints (§8(c)),
  targeted and random masking (§8(d)), RISE deletion/insertion (§8(e)). Masks and deletion units cover real persons
  only (`real_persons`: a slot with any non-zero confidence): the padded (absent) second person, which `crop_scale`
  moves to non-zero coordinates, is never zeroed, so masking a one-person clip leaves its padded slot as it is.

Axis letters: M persons, T frames, V joints, C channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from recognition.preprocess import add_gaussian_noise, normalize_screen

__all__ = [
    "PERTURBATIONS",
    "PerturbationSpec",
    "ReportSweep",
    "gaussian_noise",
    "spatial_noise",
    "perturb_pixels",
    "real_persons",
    "shift_joints",
    "top_k_joint_mask",
    "random_joint_mask",
    "zero_tokens",
    "token_ranks",
    "first_units_mask",
    "real_token_mask",
]


def gaussian_noise(xy: np.ndarray, sigma: float, rng: np.random.Generator, *, per_person: bool) -> np.ndarray:
    """docs/method.md §8(a): xy [M, T, V, 2] + N(0, sigma^2) i.i.d. per frame, joint, coordinate, clipped to [-1, 1].

    `per_person=False` is the official broadcast of one [T, V, 2] draw to every person (switch F6). sigma = 0 returns
    xy unchanged (no draw). The same function `preprocess_clip` uses.
    """
    if sigma == 0:
        return np.asarray(xy, dtype=np.float64)
    return add_gaussian_noise(xy, sigma, rng, per_person=per_person)


def spatial_noise(xy: np.ndarray, sigma: float, rng: np.random.Generator, *, per_person: bool = True) -> np.ndarray:
    """docs/method.md §8(b): one offset N(0, sigma^2) per (person, joint, coordinate), constant over frames; clipped.

    Args:
        xy: [M, T, V, 2] screen-normalised coordinates.
        per_person: independent offsets per person; False draws one [V, 2] offset shared by every person.

    Returns:
        float64 [M, T, V, 2]; xy itself (as float64) when sigma = 0.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    xy = np.asarray(xy, dtype=np.float64)
    if sigma == 0:
        return xy
    m, _, v, _ = xy.shape
    offset = rng.normal(0.0, sigma, size=(m if per_person else 1, 1, v, 2))  # [M or 1, 1, V, 2], constant over T
    return np.clip(xy + offset, -1.0, 1.0)


def perturb_pixels(
    keypoint: np.ndarray, img_shape: tuple[int, int], fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Apply a screen-space perturbation `fn` to pixel keypoints [M, T, V, 2]; returns float64 pixels.

    Pixels -> `normalize_screen` -> fn -> pixels, so that `preprocess_clip` (which normalises again) sees exactly
    fn's output in screen space (up to float64 rounding): the insertion point of docs/method.md §8(a).
    """
    side = max(img_shape)
    xy = fn(normalize_screen(keypoint, img_shape))  # [M, T, V, 2] in [-1, 1]
    return (np.asarray(xy, dtype=np.float64) + 1.0) / 2.0 * side


def real_persons(x: np.ndarray) -> np.ndarray:
    """The person slots of model input x [..., M, T, V, 3] that hold a person: any non-zero confidence -> [..., M].

    The padded (absent) second person of a one-person clip has confidence 0 everywhere (docs/method.md §2 step 6).
    """
    return (x[..., 2] != 0).any(axis=(-1, -2))


def shift_joints(
    x: np.ndarray, k: int, rng: np.random.Generator, *, hold: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """docs/method.md §8(c): move k random joints to random points of the skeleton's box (model-input space).

    The k distinct joints are drawn once per clip (the same joints for every person). Two readings of the seed:
    - `hold=False` (re-drawn, jitter): in every frame each of them gets a new (x, y) drawn uniformly in that
      person's bounding box over its valid joints (conf > 0) of that frame;
    - `hold=True` (drawn once and held, a joint stuck at a wrong place): each of them gets one (x, y) per person,
      drawn uniformly in that person's bounding box over its valid joints of the whole clip, and keeps it in every
      frame.
    Boxes are computed before any joint moves; conf is kept. Person-frames without a valid joint (the padded person)
    are left alone.

    Args:
        x: [M, T, V, 3] model input (after `crop_scale`).
        k: number of joints to move, 0 <= k <= V.
        hold: the held variant instead of the re-drawn one.

    Returns:
        (shifted copy [M, T, V, 3], the moved joint indices [k]).
    """
    m, t, v, _ = x.shape
    if not 0 <= k <= v:
        raise ValueError(f"k must be in [0, {v}], got {k}")
    out = np.array(x, copy=True)
    joints = np.sort(rng.choice(v, size=k, replace=False))  # [k]
    if k == 0:
        return out, joints
    valid = x[..., 2] > 0  # [M, T, V]
    has = valid.any(axis=2)  # [M, T] person-frames with a box
    box_axes = (1, 2) if hold else 2  # the clip's box per person, or each frame's
    lo = np.where(valid[..., None], x[..., :2], np.inf).min(axis=box_axes)  # [M, (T,) 2] corner (x_min, y_min)
    hi = np.where(valid[..., None], x[..., :2], -np.inf).max(axis=box_axes)  # [M, (T,) 2] (x_max, y_max)
    if hold:
        lo, hi = lo[:, None], hi[:, None]  # [M, 1, 2]: one box for every frame
    box = has.any(axis=1, keepdims=True) if hold else has  # [M, 1] or [M, T]
    lo, hi = np.where(box[..., None], lo, 0.0), np.where(box[..., None], hi, 0.0)  # no box: unused, finite
    u = rng.random((m, 1 if hold else t, k, 2))  # [M, 1 or T, k, 2] uniform in [0, 1)
    new = lo[:, :, None] + u * (hi - lo)[:, :, None]  # [M, 1 or T, k, 2]
    new = np.broadcast_to(new, (m, t, k, 2))  # held: the same point in every frame
    sel = out[:, :, joints, :2]  # [M, T, k, 2]
    out[:, :, joints, :2] = np.where(has[:, :, None, None], new, sel).astype(x.dtype)
    return out, joints


def top_k_joint_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """Targeted masking (docs/method.md §8(d)): bool mask [..., T, V], True on the k top-scoring joints of each frame.

    Args:
        scores: [..., T, V] attention received per token (`ActionOutput.activation`).
        k: joints per frame, 0 <= k <= V. Ties go to the lower joint index.
    """
    v = scores.shape[-1]
    if not 0 <= k <= v:
        raise ValueError(f"k must be in [0, {v}], got {k}")
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]  # [..., T, k] joint indices, highest first
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def random_joint_mask(shape: tuple[int, ...], k: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask `shape` = [..., T, V] with k random joints per frame (the baseline of targeted masking)."""
    v = shape[-1]
    if not 0 <= k <= v:
        raise ValueError(f"k must be in [0, {v}], got {k}")
    return top_k_joint_mask(rng.random(shape), k)


def real_token_mask(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    """mask [M, T, V] restricted to the real persons of x [M, T, V, 3] (`real_persons`): the padded one never enters."""
    return mask & real_persons(x)[:, None, None]


def zero_tokens(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """x [..., V, C] with every channel (x, y, conf) of the masked tokens [..., V] set to 0 (a copy)."""
    return np.where(mask[..., None], 0, x).astype(x.dtype, copy=False)


def token_ranks(saliency: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of every token of a clip by decreasing saliency, valid tokens first (RISE units, docs/method.md §8(e)).

    Args:
        saliency: [N, M, T, V] per-token saliency (e.g. attention received).
        valid: [N, M, T, V] bool, the tokens that count as units; the others rank last and are never selected.

    Returns:
        (ranks [N, M, T, V] int64 with 0 = most salient, units [N] = number of valid tokens per clip). The ranking of a
        clip depends on that clip alone, so its curve is the same in any batch.
    """
    n = saliency.shape[0]
    flat = np.where(valid, saliency, -np.inf).reshape(n, -1)  # [N, M·T·V]
    order = np.argsort(-flat, axis=1, kind="stable")  # [N, M·T·V] token ids, most salient first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(n, 0), axis=1)
    return ranks.reshape(saliency.shape), valid.reshape(n, -1).sum(axis=1)


def first_units_mask(ranks: np.ndarray, units: np.ndarray, step: int, n_steps: int) -> np.ndarray:
    """Tokens [N, M, T, V] among the first round(step / n_steps * units) of each clip's ranking.

    Step i of a deletion curve zeroes these tokens; step i of an insertion curve keeps only these.
    """
    count = np.rint(units * (step / n_steps)).astype(np.int64)  # [N]
    return ranks < count[:, None, None, None]


@dataclass(frozen=True)
class ReportSweep:
    """The report's accuracy-vs-value section of a seeded perturbation (`recognition.report_robustness.sweep`).

    Attributes:
        section: the section's name (its CSV/PNG file stem and `--only` argument).
        grid: the `ReportConfig` field listing the values.
        heading: the section's title.
        text: its paragraph.
        column: the table's value column.
        xlabel: the figure's x-axis label.
        title: the figure's title.
        categorical: evenly spaced x ticks labelled with the values (else a numeric x axis).
        with_identity: the identity value (the clean evaluation) is added to the grid.
        variant: the label of this perturbation in a section that several perturbations share (the first one's
            heading, text, grid and axes are the section's); "" when it is the only one.
    """

    section: str
    grid: str
    heading: str
    text: str
    column: str
    xlabel: str
    title: str
    categorical: bool
    with_identity: bool = False
    variant: str = ""


@dataclass(frozen=True)
class PerturbationSpec:
    """One perturbation: what the sweeps (`recognition.robustness`), their cache and the report need to know of it.

    Attributes:
        space: "screen" or "model", where it acts (see the module docstring).
        apply: the function; how it is called depends on the space:
            - screen: `apply(xy [M, T, V, 2], value, rng, *, per_person) -> xy`, through `perturb_pixels`;
            - model: `apply(x [M, T, V, 3], value, rng, saliency [M, T, V] | None) -> x` on one clip, then one forward;
            - model with `curve`: `apply(x [..., V, 3], first [..., V], units [..., V]) -> x` at each step,
              `units` = the tokens that count (those of the real persons, `real_persons`), `first` = those of them
              ranked first by saliency at that step (`first_units_mask`);
            - None: the clean evaluation.
        params: the `Perturbation` fields that name one condition of it; they enter its cache key.
        label: a short label for logs and tables, formatted with kind, value, k = int(value), layer and steps.
        identity: the `value` that means "no perturbation" (that condition is the clean evaluation); None: none.
        seeded: the result depends on the seed, which then enters the cache key.
        rng_tag: the random stream. Clip i with seed s draws from `default_rng([s, i, rng_tag])` (s = 0 when not
            seeded); None: `default_rng([s, i])` when seeded (SkeletonDataset's noisy test stream), else no draws.
            Different tags keep the draws of different perturbations apart.
        via_preprocess: `preprocess_clip` adds it itself (`noise_sigma`, with the same function as `apply`), so its
            numbers are those of `python -m recognition evaluate --noise-sigma` bit for bit.
        noise_mode: `apply` gets the report's noise mode as per_person (independent per person, or the official
            broadcast, switch F6), and the mode enters the cache key; otherwise per_person is True.
        saliency: `apply` needs the attention each token receives in the clean pass: the last layer's, or the `layer`
            parameter's when the spec has one ("random": a random order drawn from its stream).
        curve: the result is a curve (the score after each of `steps` steps) instead of logits.
        example: a value that perturbs; the tests run every entry at it.
        sweep: the report's accuracy-vs-value section, or None.
        revision: bumped when the meaning of the perturbation's results changes; when > 0 it enters the cache key,
            so older cached results of this perturbation are no longer found (those of the others still are).
    """

    space: str
    apply: Callable | None
    params: tuple[str, ...]
    label: str
    identity: float | None = None
    seeded: bool = False
    rng_tag: int | None = None
    via_preprocess: bool = False
    noise_mode: bool = False
    saliency: bool = False
    curve: bool = False
    example: float | None = None
    sweep: ReportSweep | None = None
    revision: int = 0

    def __post_init__(self) -> None:
        if self.space not in ("screen", "model"):
            raise ValueError(f"space must be 'screen' or 'model', got {self.space!r}")

    def rng(self, seed: int | None, clip: int) -> np.random.Generator | None:
        """The generator of the clip at position `clip` under `seed` (see `rng_tag`); None if it draws nothing."""
        if not self.seeded and self.rng_tag is None:
            return None
        stream = [seed if self.seeded else 0, int(clip)]
        return np.random.default_rng(stream if self.rng_tag is None else [*stream, self.rng_tag])


# Figure 5 of the seed: both readings of §8(c) in one section, each a `variant` of it.
SHIFT_SWEEP = ReportSweep(
    section="shifted_joints",
    grid="shift_ks",
    heading="Accuracy vs shifted joints k (the seed's Figure 5)",
    text="k random joints per clip moved to a uniform random point of the skeleton's bounding box, in "
    "model-input space after crop_scale; confidences kept (docs/method.md §8 c). Both readings of the seed: "
    "a new point in every frame, inside that frame's box (re-drawn, jitter), and one point per clip, inside "
    "the clip's box, held in every frame (held).",
    column="k",
    xlabel="shifted joints k",
    title="Shifted joints",
    categorical=False,
    with_identity=True,
)


# The perturbations of docs/method.md §8. A name is its cache-key "kind": renaming one invalidates cached results.
PERTURBATIONS: dict[str, PerturbationSpec] = {
    "clean": PerturbationSpec(space="model", apply=None, params=(), label="clean"),
    "gaussian": PerturbationSpec(  # §8(a)
        space="screen",
        apply=gaussian_noise,
        params=("value",),
        label="gaussian σ={value:g}",
        identity=0.0,
        seeded=True,
        via_preprocess=True,
        noise_mode=True,
        example=0.01,
        sweep=ReportSweep(
            section="gaussian_noise",
            grid="sigmas",
            heading="Accuracy vs Gaussian noise σ",
            text="Gaussian noise N(0, σ²) on every joint and frame in screen-normalised space, before tracking, "
            "resampling and crop_scale (docs/method.md §8 a).",
            column="sigma",
            xlabel="σ",
            title="Gaussian noise",
            categorical=True,
        ),
    ),
    "spatial": PerturbationSpec(  # §8(b)
        space="screen",
        apply=spatial_noise,
        params=("value",),
        label="spatial σ={value:g}",
        identity=0.0,
        seeded=True,
        rng_tag=3,
        example=0.01,
        sweep=ReportSweep(
            section="spatial_noise",
            grid="spatial_sigmas",
            heading="Accuracy vs spatial-only noise σ (the seed's Figure 4)",
            text="One offset N(0, σ²) per person and joint, the same in every frame, added where the Gaussian "
            "noise is (docs/method.md §8 b).",
            column="sigma",
            xlabel="σ",
            title="Spatial-only noise",
            categorical=True,
        ),
    ),
    "shift": PerturbationSpec(  # §8(c), re-drawn in every frame
        space="model",
        apply=lambda x, k, rng, saliency: shift_joints(x, int(k), rng)[0],
        params=("value",),
        label="shift k={k}",
        identity=0.0,
        seeded=True,
        rng_tag=1,
        example=3,
        sweep=replace(SHIFT_SWEEP, variant="re-drawn every frame (jitter)"),
    ),
    "shift_held": PerturbationSpec(  # §8(c), drawn once per clip and held
        space="model",
        apply=lambda x, k, rng, saliency: shift_joints(x, int(k), rng, hold=True)[0],
        params=("value",),
        label="shift_held k={k}",
        identity=0.0,
        seeded=True,
        rng_tag=5,
        example=3,
        sweep=replace(SHIFT_SWEEP, variant="drawn once per clip, held"),
    ),
    "mask_targeted": PerturbationSpec(  # §8(d)
        space="model",
        apply=lambda x, k, rng, saliency: zero_tokens(x, real_token_mask(top_k_joint_mask(saliency, int(k)), x)),
        params=("value",),
        label="mask_targeted k={k}",
        identity=0.0,
        saliency=True,
        example=3,
        revision=1,  # 1: real persons only (the padded person was masked too)
    ),
    "mask_random": PerturbationSpec(  # §8(d), the baseline
        space="model",
        apply=lambda x, k, rng, saliency: zero_tokens(
            x, real_token_mask(random_joint_mask(x.shape[:3], int(k), rng), x)
        ),
        params=("value",),
        label="mask_random k={k}",
        identity=0.0,
        seeded=True,
        rng_tag=2,
        example=3,
        revision=1,
    ),
    "deletion": PerturbationSpec(  # §8(e); tag 4 is shared with insertion: one random order for both curves
        space="model",
        apply=lambda x, first, units: zero_tokens(x, first & units),
        params=("layer", "steps"),
        label="deletion (saliency {layer}, {steps} steps)",
        rng_tag=4,
        saliency=True,
        curve=True,
        revision=1,  # 1: real persons' tokens only; the clean-pass class and each step's prediction recorded
    ),
    "insertion": PerturbationSpec(  # §8(e), from the input whose real persons are zeroed
        space="model",
        apply=lambda x, first, units: zero_tokens(x, units & ~first),
        params=("layer", "steps"),
        label="insertion (saliency {layer}, {steps} steps)",
        rng_tag=4,
        saliency=True,
        curve=True,
        revision=1,
    ),
}

"""Perturbations of docs/method.md §8 on hand-made inputs: identities, invariants, where they plug in, and every entry of
the perturbation table (`perturb.PERTURBATIONS`)."""

from __future__ import annotations

import numpy as np
import pytest

from recognition import perturb
from recognition.preprocess import PreprocessOptions, normalize_screen, preprocess_clip
from recognition.robustness import Perturbation, describe
from tests.helpers import make_record


def _screen(M: int = 2, T: int = 5) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.8, 0.8, size=(M, T, 17, 2))


def _model_input(M: int = 2, T: int = 6) -> np.ndarray:
    """A model-input clip [M, T, 17, 3] whose person 1 is the padded one (conf 0)."""
    rng = np.random.default_rng(1)
    x = np.zeros((M, T, 17, 3), dtype=np.float32)
    x[0, ..., :2] = rng.uniform(-0.5, 0.5, size=(T, 17, 2))
    x[0, ..., 2] = rng.uniform(0.2, 1.0, size=(T, 17))
    if M > 1:
        x[1, ..., :2] = -0.3  # what crop_scale makes of an all-zero person: coordinates, conf 0
    return x


@pytest.mark.parametrize("fn", [perturb.gaussian_noise, perturb.spatial_noise])
def test_sigma_zero_is_identity(fn):
    xy = _screen()
    rng = np.random.default_rng(0)
    out = fn(xy, 0.0, rng, per_person=True)
    np.testing.assert_array_equal(out, xy)
    assert rng.random() == np.random.default_rng(0).random()  # no draw consumed


def test_gaussian_noise_per_person_and_broadcast():
    xy = _screen()
    own = perturb.gaussian_noise(xy, 0.01, np.random.default_rng(3), per_person=True) - xy
    shared = perturb.gaussian_noise(xy, 0.01, np.random.default_rng(3), per_person=False) - xy
    assert not np.allclose(own[0], own[1])
    np.testing.assert_allclose(shared[0], shared[1], atol=1e-12)  # F6: the same tensor on both persons
    assert 0.007 < own.std() < 0.013


def test_spatial_noise_is_constant_over_time_and_independent_per_person():
    xy = _screen(T=7)
    d = perturb.spatial_noise(xy, 0.02, np.random.default_rng(5)) - xy  # [M, T, V, 2]
    np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-12)
    assert np.abs(d).max() > 0 and not np.allclose(d[0, 0], d[1, 0])
    shared = perturb.spatial_noise(xy, 0.02, np.random.default_rng(5), per_person=False) - xy
    np.testing.assert_allclose(shared[0], shared[1], atol=1e-12)
    clipped = perturb.spatial_noise(np.full((1, 3, 17, 2), 0.999), 1.0, np.random.default_rng(0))
    assert clipped.max() <= 1.0 and clipped.min() >= -1.0
    with pytest.raises(ValueError, match="sigma"):
        perturb.spatial_noise(xy, -1.0, np.random.default_rng(0))


def test_perturb_pixels_plugs_in_before_preprocessing():
    """A screen-space perturbation through pixels equals preprocess_clip's own noise path (same draws)."""
    rec = make_record(M=2, T=20, seed=2)
    kp, score, shape = rec["keypoint"], rec["keypoint_score"], rec["img_shape"]
    opts = PreprocessOptions(clip_len=16)
    ident = perturb.perturb_pixels(kp, shape, lambda xy: xy)
    np.testing.assert_allclose(ident, kp, atol=1e-9)
    via = perturb.perturb_pixels(
        kp, shape, lambda xy: perturb.gaussian_noise(xy, 0.01, np.random.default_rng(9), per_person=True)
    )
    a = preprocess_clip(via, score, shape, train=False, opts=opts, rng=None)
    b = preprocess_clip(kp, score, shape, train=False, opts=opts, rng=np.random.default_rng(9), noise_sigma=0.01)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, preprocess_clip(kp, score, shape, train=False, opts=opts, rng=None))
    np.testing.assert_allclose(
        normalize_screen(via, shape),
        perturb.gaussian_noise(normalize_screen(kp, shape), 0.01, np.random.default_rng(9), per_person=True),
        atol=1e-12,
    )


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_shifted_joints_stay_in_the_box_and_exactly_k_move(k):
    x = _model_input()
    out, joints = perturb.shift_joints(x, k, np.random.default_rng(k))
    assert len(joints) == k == len(set(joints.tolist()))
    moved = np.any(out[..., :2] != x[..., :2], axis=-1)  # [M, T, V]
    for t in range(x.shape[1]):
        assert sorted(np.flatnonzero(moved[0, t]).tolist()) == joints.tolist()  # the same k joints every frame
        lo, hi = x[0, t, :, :2].min(0), x[0, t, :, :2].max(0)
        assert np.all(out[0, t, joints, :2] >= lo) and np.all(out[0, t, joints, :2] <= hi)
    assert not moved[1].any()  # the padded person (no valid joint) is left alone
    np.testing.assert_array_equal(out[..., 2], x[..., 2])  # confidences kept
    assert out.dtype == x.dtype
    again, _ = perturb.shift_joints(x, k, np.random.default_rng(k))
    np.testing.assert_array_equal(out, again)  # seeded


@pytest.mark.parametrize("k", [1, 3, 10])
def test_held_shifted_joints_keep_one_point_inside_the_clip_box(k):
    """The second reading of §8(c): a point drawn once per clip and person, held in every frame."""
    x = _model_input()
    out, joints = perturb.shift_joints(x, k, np.random.default_rng(k), hold=True)
    jitter, same = perturb.shift_joints(x, k, np.random.default_rng(k))
    np.testing.assert_array_equal(joints, same)  # the same joints as the re-drawn reading under the same stream
    held = out[0][:, joints, :2]  # [T, k, 2]
    np.testing.assert_array_equal(held, np.broadcast_to(held[:1], held.shape))  # one point in every frame
    assert not np.array_equal(jitter[0][:, joints, :2], held)
    lo, hi = x[0, ..., :2].reshape(-1, 2).min(0), x[0, ..., :2].reshape(-1, 2).max(0)  # the clip's box
    assert np.all(held >= lo) and np.all(held <= hi)
    others = np.setdiff1d(np.arange(17), joints)
    np.testing.assert_array_equal(out[:, :, others], x[:, :, others])
    np.testing.assert_array_equal(out[1], x[1])  # the padded person is left alone
    np.testing.assert_array_equal(out[..., 2], x[..., 2])


def test_real_persons_and_masks_leave_the_padded_person_alone():
    """The padded slot of a one-person clip (conf 0; crop_scale moved it off 0) is never masked or deleted."""
    x = _model_input()
    assert perturb.real_persons(x).tolist() == [True, False]
    assert perturb.real_persons(np.stack([x, x[::-1]])).tolist() == [[True, False], [False, True]]
    saliency = np.random.default_rng(3).random(x.shape[:3])
    saliency[1] += 10.0  # the padded person would rank first
    for name in ("mask_targeted", "mask_random"):
        spec = perturb.PERTURBATIONS[name]
        out = spec.apply(x, 17, spec.rng(0, 0), saliency)
        assert not out[0].any()  # every real token zeroed
        np.testing.assert_array_equal(out[1], x[1])  # the padded slot as it was
    units = np.broadcast_to(perturb.real_persons(x)[:, None, None], x.shape[:3])
    ranks, count = perturb.token_ranks(saliency[None], units[None])
    assert count.tolist() == [x.shape[1] * 17]  # the real person's tokens only
    for name in ("deletion", "insertion"):
        spec = perturb.PERTURBATIONS[name]
        for step in range(5):
            first = perturb.first_units_mask(ranks, count, step, 4)[0]
            np.testing.assert_array_equal(spec.apply(x, first, units)[1], x[1])


def test_shifted_joints_box_uses_valid_joints_only():
    x = _model_input(M=1, T=1)
    x[0, 0, 0] = [0.9, 0.9, 0.0]  # an invalid joint far outside: not part of the box
    out, joints = perturb.shift_joints(x, 17, np.random.default_rng(0))
    valid = x[0, 0, 1:, :2]
    assert np.all(out[0, 0, :, :2] >= valid.min(0)) and np.all(out[0, 0, :, :2] <= valid.max(0))
    out0, none = perturb.shift_joints(x, 0, np.random.default_rng(0))
    assert len(none) == 0 and np.array_equal(out0, x)
    with pytest.raises(ValueError, match="k must be"):
        perturb.shift_joints(x, 18, np.random.default_rng(0))


def test_targeted_masking_removes_the_highest_attention_joints():
    scores = np.zeros((1, 2, 17))  # [M, T, V]
    scores[0, 0, [4, 9, 2]] = [3.0, 2.0, 1.0]
    scores[0, 1, [16, 0]] = [5.0, 4.0]
    mask = perturb.top_k_joint_mask(scores, 2)
    assert np.flatnonzero(mask[0, 0]).tolist() == [4, 9]
    assert np.flatnonzero(mask[0, 1]).tolist() == [0, 16]
    assert mask.sum() == 4 and not perturb.top_k_joint_mask(scores, 0).any()
    x = np.ones((1, 2, 17, 3), dtype=np.float32)
    out = perturb.zero_tokens(x, mask)
    assert np.all(out[0, 0, [4, 9]] == 0) and np.all(out[0, 0, 2] == 1) and out.sum() == x.sum() - 4 * 3
    rnd = perturb.random_joint_mask((2, 5, 17), 3, np.random.default_rng(0))
    assert np.all(rnd.sum(-1) == 3)
    with pytest.raises(ValueError, match="k must be"):
        perturb.top_k_joint_mask(scores, 18)


def test_rise_units_ranked_by_saliency():
    sal = np.array([[[[0.1, 0.9, 0.5]]]])  # [N=1, M=1, T=1, V=3]
    ranks, units = perturb.token_ranks(sal, np.array([[[[True, True, False]]]]))
    assert ranks.ravel().tolist() == [1, 0, 2] and units.tolist() == [2]
    assert perturb.first_units_mask(ranks, units, 0, 2).sum() == 0
    assert perturb.first_units_mask(ranks, units, 1, 2).ravel().tolist() == [False, True, False]
    assert perturb.first_units_mask(ranks, units, 2, 2).ravel().tolist() == [True, True, False]


# -- the perturbation table: every entry, so a new one is tested without editing these tests ---------------------------

REGISTRY = sorted(perturb.PERTURBATIONS)


def _input(spec: perturb.PerturbationSpec) -> np.ndarray:
    """A clip in the space the perturbation acts in: screen xy [M, T, V, 2] or model input [M, T, V, 3]."""
    return _screen(T=6) if spec.space == "screen" else _model_input()


def _apply(spec: perturb.PerturbationSpec, x: np.ndarray, value: float, rng) -> np.ndarray:
    """Call the entry's `apply` as `recognition.robustness` does (see `PerturbationSpec.apply`)."""
    if spec.space == "screen":
        return spec.apply(x, value, rng, per_person=True)
    saliency = np.random.default_rng(7).random(x.shape[:3]) if spec.saliency else None  # [M, T, V]
    return spec.apply(x, value, rng, saliency)


@pytest.mark.parametrize("name", REGISTRY)
def test_every_entry_has_a_label_a_stream_and_known_parameters(name):
    spec = perturb.PERTURBATIONS[name]
    label = spec.label.format(kind=name, value=0.5, k=3, layer=-1, steps=4)
    assert label.startswith(name) and "{" not in label
    assert spec.space in ("screen", "model")
    assert set(spec.params) <= {"value", "layer", "steps"}  # fields of robustness.Perturbation
    assert spec.sweep is None or spec.sweep.section in {"gaussian_noise", "spatial_noise", "shifted_joints"}
    assert isinstance(spec.revision, int) and spec.revision >= 0
    assert spec.rng_tag is None or (isinstance(spec.rng_tag, int) and spec.rng_tag >= 0)
    assert (spec.rng(0, 0) is not None) == (spec.seeded or spec.rng_tag is not None)
    assert spec.apply is not None or name == "clean"
    assert not (spec.via_preprocess or spec.noise_mode) or spec.space == "screen"
    assert not spec.curve or {"layer", "steps"} <= set(spec.params)
    if "value" in spec.params:
        assert spec.example is not None and spec.example != spec.identity
    pert = Perturbation(name, spec.example or 0.0, steps=4)
    assert describe(pert).startswith(name)
    assert pert.params() == {"kind": name, **{p: getattr(pert, p) for p in spec.params}}


def test_random_streams_are_apart():
    """Seeded perturbations draw from distinct streams, none of which an unseeded one shares."""
    specs = perturb.PERTURBATIONS.values()
    seeded = [s.rng_tag for s in specs if s.seeded]
    assert len(set(seeded)) == len(seeded)
    assert not {s.rng_tag for s in specs if not s.seeded and s.rng_tag is not None} & set(seeded)


@pytest.mark.parametrize("name", [n for n in REGISTRY if perturb.PERTURBATIONS[n].identity is not None])
def test_identity_value_leaves_the_input_unchanged(name):
    spec = perturb.PERTURBATIONS[name]
    x = _input(spec)
    np.testing.assert_array_equal(_apply(spec, x, spec.identity, spec.rng(0, 0)), x)
    assert not np.array_equal(_apply(spec, x, spec.example, spec.rng(0, 0)), x)  # and the example value perturbs


@pytest.mark.parametrize("name", [n for n in REGISTRY if perturb.PERTURBATIONS[n].curve])
def test_curve_ends_are_the_clean_input_and_the_real_persons_zeroed(name):
    spec = perturb.PERTURBATIONS[name]
    x = _model_input()
    units = np.broadcast_to(perturb.real_persons(x)[:, None, None], x.shape[:3])
    ends = [spec.apply(x, np.full(x.shape[:3], first), units) for first in (False, True)]
    assert sum(np.array_equal(e, x) for e in ends) == 1
    assert sum(not e[0].any() and np.array_equal(e[1], x[1]) for e in ends) == 1  # the padded slot is kept


@pytest.mark.parametrize("name", [n for n in REGISTRY if perturb.PERTURBATIONS[n].seeded])
def test_seeded_entries_are_deterministic_under_a_seed(name):
    spec = perturb.PERTURBATIONS[name]
    x = _input(spec)
    a, b = (_apply(spec, x, spec.example, spec.rng(5, 2)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _apply(spec, x, spec.example, spec.rng(6, 2)))  # another seed
    assert not np.array_equal(a, _apply(spec, x, spec.example, spec.rng(5, 3)))  # another clip
    tag = [] if spec.rng_tag is None else [spec.rng_tag]
    assert spec.rng(5, 2).random() == np.random.default_rng([5, 2, *tag]).random()  # the documented stream

"""Tests of docs/method.md §2 preprocessing (`recognition.preprocess`) and its dataset (`recognition.data`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recognition import preprocess as P
from recognition.preprocess import PreprocessOptions, faithful_options, preprocess_clip
from tests.recognition.reference_preprocess import reference_test_clip

IMG = (1080, 1920)  # (H, W)


def random_clip(m: int, t0: int, *, seed: int = 0, zero_frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """keypoint [M, T0, 17, 2] pixels and score [M, T0, 17] with a fraction of zero-confidence joints."""
    rng = np.random.default_rng(seed)
    kp = (rng.random((m, t0, 17, 2)) * np.array([IMG[1], IMG[0]])).astype(np.float32)
    score = rng.random((m, t0, 17)).astype(np.float32)
    score[rng.random(score.shape) < zero_frac] = 0
    return kp, score


def make_ann(name: str, *, m: int = 2, t0: int = 30, label: int = 0, seed: int = 0) -> dict:
    kp, score = random_clip(m, t0, seed=seed)
    return {
        "frame_dir": name,
        "label": label,
        "total_frames": t0,
        "img_shape": IMG,
        "keypoint": kp,
        "keypoint_score": score,
    }


# ---------------------------------------------------------------- whole pipeline against the reference


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("t0", [100, 300])
def test_test_path_matches_reference(m, t0):
    kp, score = random_clip(m, t0, seed=10 * m + t0)
    out = preprocess_clip(kp, score, IMG, train=False, opts=faithful_options(), rng=None)
    assert out.shape == (2, 243, 17, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_test_clip(kp, score, IMG), atol=1e-6, rtol=0)


def test_test_path_matches_reference_short_clip_len():
    kp, score = random_clip(2, 20, seed=3, zero_frac=0.5)
    out = preprocess_clip(kp, score, IMG, train=False, opts=faithful_options(clip_len=32), rng=None)
    np.testing.assert_allclose(out, reference_test_clip(kp, score, IMG, clip_len=32), atol=1e-6, rtol=0)


def test_noise_is_added_in_screen_space_before_tracking():
    """Faithful noise (one tensor for both persons) = the reference run on noisy pixels."""
    kp, score = random_clip(2, 50, seed=4)
    sigma, longest = 0.01, max(IMG)
    out = preprocess_clip(
        kp,
        score,
        IMG,
        train=False,
        opts=faithful_options(),
        rng=np.random.default_rng(7),
        noise_sigma=sigma,
        noise_per_person=False,
    )
    eps = np.random.default_rng(7).normal(0, sigma, kp.shape[1:])  # [T0, 17, 2], the test path's only draw
    noisy_screen = np.clip(kp.astype(np.float64) / longest * 2 - 1 + eps, -1, 1)
    noisy_kp = (noisy_screen + 1) / 2 * longest
    np.testing.assert_allclose(out, reference_test_clip(noisy_kp, score, IMG), atol=1e-5, rtol=0)


def test_train_path_shape_and_rng_determinism():
    kp, score = random_clip(1, 40)
    opts = PreprocessOptions(clip_len=32)
    a = preprocess_clip(kp, score, IMG, train=True, opts=opts, rng=np.random.default_rng(1))
    b = preprocess_clip(kp, score, IMG, train=True, opts=opts, rng=np.random.default_rng(1))
    c = preprocess_clip(kp, score, IMG, train=True, opts=opts, rng=np.random.default_rng(2))
    assert a.shape == (2, 32, 17, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a).max() <= 1


def test_preprocess_clip_errors():
    kp, score = random_clip(2, 10)
    with pytest.raises(ValueError, match="clipA.*no person"):
        preprocess_clip(kp[:0], score[:0], IMG, train=False, opts=PreprocessOptions(), rng=None, clip_name="clipA")
    with pytest.raises(ValueError, match="clipB.*0 frames"):
        preprocess_clip(
            kp[:, :0], score[:, :0], IMG, train=False, opts=PreprocessOptions(), rng=None, clip_name="clipB"
        )
    kp3, score3 = random_clip(3, 10)
    with pytest.raises(ValueError, match="select_two_persons"):
        preprocess_clip(kp3, score3, IMG, train=False, opts=PreprocessOptions(), rng=None)


# ---------------------------------------------------------------- step by step


def test_resample_test_indices_formula():
    np.testing.assert_array_equal(P.resample_indices(10, 4, train=False, rng=None), [0, 2, 5, 7])
    np.testing.assert_array_equal(P.resample_indices(486, 243, train=False, rng=None), np.arange(0, 486, 2))
    np.testing.assert_array_equal(P.resample_indices(3, 6, train=False, rng=None), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("t0", [1, 5, 100, 243, 500])
def test_resample_train_indices_sorted_and_in_range(t0):
    clip_len = 243
    idx = P.resample_indices(t0, clip_len, train=True, rng=np.random.default_rng(0))
    assert idx.shape == (clip_len,)
    assert np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() <= t0 - 1
    even = np.arange(clip_len) * t0 / clip_len
    assert np.all(idx >= np.minimum(np.floor(even), t0 - 1))
    upper = np.ceil(even) if t0 < clip_len else np.floor(even + t0 / clip_len)  # floor/ceil vs random offset
    assert np.all(idx <= upper)


def test_resample_train_below_clip_len_is_floor_or_ceil():
    idx = P.resample_indices(10, 24, train=True, rng=np.random.default_rng(0))
    even = np.arange(24) * 10 / 24
    assert np.all((idx == np.floor(even)) | (idx == np.minimum(np.ceil(even), 9)))


def test_normalize_screen():
    xy = np.array([[960.0, 540.0], [1920.0, 1080.0], [0.0, 0.0]])
    np.testing.assert_allclose(P.normalize_screen(xy, (1080, 1920)), [[0, -0.4375], [1, 0.125], [-1, -1]])
    np.testing.assert_allclose(P.normalize_screen(np.array([[540.0, 960.0]]), (1920, 1080)), [[-0.4375, 0]])


def _crossing_pair():
    """Person A at x = 0, B at x = 1, static over 6 frames; the raw slots exchange them from frame 3 on."""
    a, b = np.zeros((17, 2)), np.ones((17, 2))
    xy = np.stack([np.stack([a, a, a, b, b, b]), np.stack([b, b, b, a, a, a])])  # [2, 6, 17, 2]
    conf = np.where(xy[..., 0] == 0, 0.9, 0.1)  # [2, 6, 17], A's joints 0.9
    return xy, conf


def test_tracking_follows_crossing_identities():
    xy, conf = _crossing_pair()
    out_xy, out_conf = P.track_two_persons(xy, conf, swap_conf=True)
    np.testing.assert_array_equal(out_xy[0], 0)  # slot 0 holds A in every frame
    np.testing.assert_array_equal(out_xy[1], 1)
    np.testing.assert_array_equal(out_conf[0], 0.9)
    faithful_xy, faithful_conf = P.track_two_persons(xy, conf, swap_conf=False)
    np.testing.assert_array_equal(faithful_xy, out_xy)
    np.testing.assert_array_equal(faithful_conf, conf)  # F4: confidences stay in the raw slots
    one_xy, one_conf = P.track_two_persons(xy[:1], conf[:1], swap_conf=True)  # M = 1: unchanged
    np.testing.assert_array_equal(one_xy, xy[:1])
    np.testing.assert_array_equal(one_conf, conf[:1])


def test_coco_to_h36m_mapping():
    coco = np.stack([np.arange(17.0), 10 * np.arange(17.0)], axis=-1)  # joint j at (j, 10 j)
    expected_x = [11.5, 12, 14, 16, 11, 13, 15, 8.5, 5.5, 0, 1.5, 5, 7, 9, 6, 8, 10]
    h36m = P.coco_to_h36m(coco[None, None])[0, 0]  # [17, 2]
    np.testing.assert_allclose(h36m[:, 0], expected_x)
    np.testing.assert_allclose(h36m[:, 1], 10 * np.array(expected_x))
    np.testing.assert_allclose(P.coco_conf_to_h36m(np.arange(17.0)), expected_x)


def test_conf_order_default_vs_faithful():
    kp, score = random_clip(1, 16, zero_frac=0)
    fixed = preprocess_clip(kp, score, IMG, train=False, opts=PreprocessOptions(clip_len=16), rng=None)
    faithful = preprocess_clip(kp, score, IMG, train=False, opts=faithful_options(clip_len=16), rng=None)
    np.testing.assert_allclose(fixed[0, ..., 2], P.coco_conf_to_h36m(score[0].astype(np.float64)), atol=1e-7)
    np.testing.assert_allclose(faithful[0, ..., 2], score[0], atol=1e-7)  # F3: COCO order kept
    np.testing.assert_array_equal(fixed[1, ..., 2], 0)  # the padded person has no valid joint


def test_crop_scale_test_ratio_centres_and_spans_one():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((2, 8, 17, 2)) * [0.6, 0.3] - 0.2, rng.random((2, 8, 17, 1)) * 0.9 + 0.1], axis=-1)
    out = P.crop_scale(x, 2.0)
    xy = out[..., :2].reshape(-1, 2)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-12)
    np.testing.assert_allclose(max(hi - lo), 1.0)
    np.testing.assert_allclose([lo[0], hi[0]], [-0.5, 0.5])  # x is the larger side here
    np.testing.assert_array_equal(out[..., 2], x[..., 2])


def test_crop_scale_fewer_than_four_valid_is_zeros():
    x = np.random.default_rng(0).random((2, 5, 17, 3))
    x[..., 2] = 0
    x[0, 0, :3, 2] = 1.0
    np.testing.assert_array_equal(P.crop_scale(x, 2.0), 0)
    x[0, 0, 3, 2] = 1.0
    assert np.any(P.crop_scale(x, 2.0))


def test_crop_scale_ratio_range_needs_rng_and_is_drawn():
    x = np.random.default_rng(0).random((2, 5, 17, 3))
    with pytest.raises(ValueError):
        P.crop_scale(x, (1.0, 3.0))
    a = P.crop_scale(x, (1.0, 3.0), np.random.default_rng(0))
    b = P.crop_scale(x, (1.0, 3.0), np.random.default_rng(1))
    assert not np.array_equal(a, b)


def test_random_move_shape_determinism_and_zero_person():
    x = np.zeros((2, 10, 17, 3))
    x[0] = np.random.default_rng(0).random((10, 17, 3))
    a = P.random_move(x, np.random.default_rng(5))
    b = P.random_move(x, np.random.default_rng(5))
    assert a.shape == x.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, P.random_move(x, np.random.default_rng(6)))
    np.testing.assert_array_equal(a[..., 2], x[..., 2])  # conf untouched
    zero_person = a[1, :, :, :2]  # moved to the per-frame translation, in [-0.1, 0.1]
    np.testing.assert_allclose(zero_person, zero_person[:, :1].repeat(17, axis=1))
    assert np.abs(zero_person).max() <= 0.1


def test_random_move_identity_ranges_is_identity():
    x = np.random.default_rng(0).random((2, 4, 17, 3))
    out = P.random_move(x, np.random.default_rng(0), angle_range=(0, 0), scale_range=(1, 1), translate_range=(0, 0))
    np.testing.assert_allclose(out, x)


def test_noise_per_person_vs_broadcast():
    xy = np.zeros((2, 50, 17, 2))
    shared = P.add_gaussian_noise(xy, 0.01, np.random.default_rng(0), per_person=False)
    np.testing.assert_array_equal(shared[0], shared[1])  # F6: one tensor for both persons
    independent = P.add_gaussian_noise(xy, 0.01, np.random.default_rng(0), per_person=True)
    assert not np.allclose(independent[0], independent[1])
    assert 0.008 < independent.std() < 0.012
    clipped = P.add_gaussian_noise(np.full((2, 5, 17, 2), 0.99), 1.0, np.random.default_rng(0), per_person=True)
    assert clipped.max() <= 1 and clipped.min() >= -1


def test_select_two_persons_by_total_score():
    kp = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 3, 17, 2), np.float32)
    score = np.ones((4, 3, 17), np.float32) * np.array([0.1, 0.5, 0.3, 0.4], np.float32)[:, None, None]
    kp2, score2, kept = P.select_two_persons(kp, score)
    np.testing.assert_array_equal(kept, [1, 3])
    np.testing.assert_array_equal(kp2[:, 0, 0, 0], [1, 3])
    np.testing.assert_array_equal(score2, score[[1, 3]])
    _, _, kept_two = P.select_two_persons(kp[:2], score[:2])
    np.testing.assert_array_equal(kept_two, [0, 1])


def test_options_validation_and_faithful():
    f = faithful_options()
    assert (f.conf_order, f.track_swaps_conf, f.resample_per_item) == ("coco", False, False)
    d = PreprocessOptions()
    assert (d.conf_order, d.track_swaps_conf, d.resample_per_item) == ("h36m", True, True)
    assert faithful_options(clip_len=16).clip_len == 16
    assert PreprocessOptions(scale_range_train=[1.0, 2.0]).scale_range_train == (1.0, 2.0)
    with pytest.raises(ValueError, match="conf_order"):
        PreprocessOptions(conf_order="mpii")


# ---------------------------------------------------------------- dataset


@pytest.fixture
def torch():
    """The dataset tests need torch; the preprocessing tests above do not."""
    return pytest.importorskip("torch")


def make_dataset(anns, *, train=True, opts=None, seed=0, **kw):
    from recognition.data import SkeletonDataset

    return SkeletonDataset(
        annotations=anns,
        frame_dirs=[a["frame_dir"] for a in anns],
        train=train,
        opts=opts or PreprocessOptions(clip_len=16),
        seed=seed,
        num_classes=3,
        **kw,
    )


def test_dataset_item_shape_and_test_path_matches_reference(torch):
    anns = [make_ann("a", m=1, t0=20, label=2, seed=1), make_ann("b", m=2, t0=30, label=1, seed=2)]
    ds = make_dataset(anns, train=False, opts=faithful_options(clip_len=16))
    x, y = ds[1]
    assert isinstance(x, torch.Tensor) and x.shape == (2, 16, 17, 3) and x.dtype == torch.float32
    assert y == 1 and isinstance(y, int)
    np.testing.assert_allclose(
        x.numpy(), reference_test_clip(anns[1]["keypoint"], anns[1]["keypoint_score"], IMG, clip_len=16), atol=1e-6
    )
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch.shape == (2, 2, 16, 17, 3) and labels.tolist() == [2, 1]


def test_dataset_label_out_of_range_names_clip(torch):
    with pytest.raises(ValueError, match="bad_label"):
        make_dataset([make_ann("ok"), make_ann("bad_label", label=3)])
    with pytest.raises(ValueError, match="neg"):
        make_dataset([make_ann("neg", label=-1)], skip_bad=True)  # a label error is never skipped


def test_dataset_bad_clips_raise_or_are_skipped(torch):
    zero_frames = make_ann("zero_frames", t0=0)
    zero_scores = make_ann("zero_scores")
    zero_scores["keypoint_score"] = np.zeros_like(zero_scores["keypoint_score"])
    no_person = make_ann("no_person", m=0)
    for bad in (zero_frames, zero_scores, no_person):
        with pytest.raises(ValueError, match=bad["frame_dir"]):
            make_dataset([make_ann("ok"), bad])
    ds = make_dataset([make_ann("ok"), zero_frames, zero_scores, no_person, make_ann("ok2")], skip_bad=True)
    assert len(ds) == 2 and ds.skipped == ["zero_frames", "zero_scores", "no_person"]
    assert ds.names == ["ok", "ok2"]


def test_dataset_keeps_top_two_persons(torch):
    ann = make_ann("crowd", m=4)
    ann["keypoint_score"][2] *= 0  # person 2 has no score, person 0 the least of the others
    ann["keypoint_score"][0] *= 0.1
    ds = make_dataset([ann, make_ann("pair")])
    assert list(ds.person_selection) == ["crowd"] and set(ds.person_selection["crowd"]) == {1, 3}
    assert ds.keypoints[0].shape[0] == 2 and ds[0][0].shape == (2, 16, 17, 3)


def test_dataset_determinism_per_seed_epoch_index(torch):
    anns = [make_ann("a", t0=40, seed=1), make_ann("b", t0=10, seed=2)]
    ds, twin = make_dataset(anns, seed=3), make_dataset(anns, seed=3)
    first = ds[0][0]
    assert torch.equal(first, ds[0][0]) and torch.equal(first, twin[0][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[0][0])
    twin.set_epoch(1)
    assert torch.equal(ds[0][0], twin[0][0])
    assert not torch.equal(make_dataset(anns, seed=4)[0][0], first)


def test_dataset_resample_fixed_across_epochs_only_in_faithful_mode(torch):
    anns = [make_ann("a", t0=40, seed=1), make_ann("b", t0=10, seed=2)]
    no_other_randomness = dict(clip_len=16, random_move=False, scale_range_train=(2.0, 2.0))
    faithful = make_dataset(anns, opts=faithful_options(**no_other_randomness))
    default = make_dataset(anns, opts=PreprocessOptions(**no_other_randomness))
    f0, d0 = [faithful[i][0] for i in range(2)], [default[i][0] for i in range(2)]
    faithful.set_epoch(1)
    default.set_epoch(1)
    assert all(torch.equal(f0[i], faithful[i][0]) for i in range(2))  # F5: one draw at construction
    assert not all(torch.equal(d0[i], default[i][0]) for i in range(2))
    assert default.fixed_indices is None and len(faithful.fixed_indices) == 2


def test_dataset_noise_on_test_items_is_seeded_by_index(torch):
    anns = [make_ann("a", seed=1)]
    clean = make_dataset(anns, train=False)[0][0]
    noisy = make_dataset(anns, train=False, noise_sigma=0.01)
    assert torch.equal(noisy[0][0], noisy[0][0]) and not torch.equal(noisy[0][0], clean)


def _held_arrays(obj, seen=None):
    """Every numpy array reachable from the dataset's attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [a for item in obj for a in _held_arrays(item, seen)]
    return []


@pytest.mark.parametrize("resample_per_item", [True, False])
def test_dataset_memory_stays_at_raw_size(resample_per_item, torch):
    anns = [make_ann(f"c{i}", m=1 + i % 2, t0=20 + i, seed=i) for i in range(6)]
    raw = sum(a["keypoint"].nbytes + a["keypoint_score"].nbytes for a in anns)
    opts = dataclasses.replace(PreprocessOptions(), resample_per_item=resample_per_item)  # clip_len 243
    ds = make_dataset(anns, opts=opts)
    held = _held_arrays(list(vars(ds).values()))
    dense = len(anns) * 2 * 243 * 17 * 3 * 4
    indices = 0 if resample_per_item else len(anns) * 243 * 8
    assert sum(a.nbytes for a in held) <= raw + indices < dense
    assert all(a.size < 2 * 243 * 17 * 3 for a in held)
    assert ds.keypoints[0] is anns[0]["keypoint"]  # float32 records are not copied


def test_split_frame_dirs(index, torch):
    from recognition.data import split_frame_dirs

    assert split_frame_dirs(index, "xsub_train") == index["split"]["xsub_train"]
    with pytest.raises(ValueError, match="xsub_val"):  # lists the available splits
        split_frame_dirs(index, "xsub_test")
    index["split"]["xsub_train"].append("ghost_clip")
    with pytest.raises(ValueError, match="ghost_clip"):
        split_frame_dirs(index, "xsub_train")

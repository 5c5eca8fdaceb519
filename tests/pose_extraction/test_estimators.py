"""ViTPose and HRNet adapters: registry, checkpoint layouts, strict loading, flip test, batching.

All weights are random and every checkpoint is written here, in the official layouts (mmpose
1.x / 0.x, the original ViTPose and HRNet releases, a transformers directory). Models are test
sized: ViTPose with hidden size 32 and 2 layers, HRNet as timm's `hrnet_w18_small`; the real
HRNet-W32 is only built (never run) to check its key set.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pose_extraction.crops import (
    bbox_xyxy_to_center_scale,
    crop_batch,
)
from pose_extraction.estimators import (
    ESTIMATORS,
    EstimatorError,
    build_estimator,
    get_estimator_class,
    load_settings,
    settings_keys,
)
from pose_extraction.heatmaps import (
    COCO_FLIP_INDICES,
    flip_heatmaps,
    get_heatmap_maximum,
)

torch = pytest.importorskip("torch")

TINY_VIT = {"hidden_size": 32, "num_layers": 2, "num_heads": 2}
TINY_HRNET = {"variant": "hrnet_w18_small"}
FI = list(COCO_FLIP_INDICES)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter and BatchNorm statistic (positive variances)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(
                    torch.rand(t.shape, generator=g) + 0.5
                    if name.endswith("running_var")
                    else torch.randn(t.shape, generator=g) * 0.05
                )
    return model.eval()


def crops(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 256, 192, generator=torch.Generator().manual_seed(seed))


def vitpose(weights=None, **kw):
    pytest.importorskip("transformers")
    from pose_extraction.estimators.vitpose import ViTPoseEstimator

    torch.manual_seed(0)
    return ViTPoseEstimator(weights=weights, **{**TINY_VIT, "decoder": "simple", **kw})


def hrnet(weights=None, **kw):
    pytest.importorskip("timm")
    from pose_extraction.estimators.hrnet import HRNetEstimator

    torch.manual_seed(0)
    return HRNetEstimator(weights=weights, **{**TINY_HRNET, **kw})


def heat(est, x) -> np.ndarray:
    with torch.no_grad():
        return est.heatmaps(x).numpy()


def save_pth(path, state_dict, *, meta: bool = True):
    """An mmpose-style file: {'state_dict': ..., 'meta': ...} with a numpy object in meta
    (as real mmpose files have), so the safe weights-only load fails and the fallback runs."""
    meta_ = {"mmpose_version": "1.3.2", "epoch": np.int64(210)}
    torch.save({"state_dict": state_dict, "meta": meta_} if meta else state_dict, path)
    return path


# ----------------------------------------------------------------------------- registry and settings


def test_registry_names_and_unknown_name():
    assert set(ESTIMATORS) >= {"vitpose", "hrnet"}
    with pytest.raises(KeyError, match="hrnet.*vitpose"):
        get_estimator_class("openpose")


def test_importing_adapters_loads_no_heavy_dependency():
    code = (
        "import sys, pose_extraction.topdown, pose_extraction.estimators, pose_extraction.estimators.convert, "
        "pose_extraction.estimators.vitpose, pose_extraction.estimators.hrnet\n"
        "bad = {'torch', 'transformers', 'timm'} & set(sys.modules)\nassert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


TOP_DOWN = ["hrnet", "vitpose"]


@pytest.mark.parametrize("name", TOP_DOWN)
def test_settings_files_are_constructor_arguments(name):
    pytest.importorskip({"vitpose": "transformers", "hrnet": "timm"}[name])
    settings = load_settings(name)
    assert settings, f"configs/estimators/{name}.yaml missing or empty"
    assert set(settings) <= set(settings_keys(get_estimator_class(name)))
    assert {"input_size", "heatmap_size", "udp", "flip_test", "shift_heatmap", "batch_size"} <= set(settings)


def test_settings_match_the_mmpose_configs():
    vit, hr = load_settings("vitpose"), load_settings("hrnet")
    assert vit["udp"] and not vit["shift_heatmap"] and vit["flip_test"]
    assert not hr["udp"] and hr["shift_heatmap"] and hr["flip_test"]
    assert vit["input_size"] == hr["input_size"] == (192, 256)
    assert vit["heatmap_size"] == hr["heatmap_size"] == (48, 64)


def test_build_estimator_rejects_unknown_settings():
    pytest.importorskip("transformers")
    with pytest.raises(EstimatorError, match="did you mean 'hidden_size'"):
        build_estimator("vitpose", weights=None, settings={"hiden_size": 32})
    with pytest.raises(EstimatorError, match="'input_size': expected tuple"):
        build_estimator("vitpose", weights=None, settings={"input_size": (192, "256")})
    with pytest.raises(EstimatorError, match="'udp': expected bool"):
        build_estimator("vitpose", weights=None, settings={"udp": 1})


def test_build_estimator_precedence():
    pytest.importorskip("transformers")
    est = build_estimator(
        "vitpose",
        weights=None,
        batch_size=3,
        flip_test=False,
        settings={**load_settings("vitpose"), **TINY_VIT, "batch_size": 7},
    )
    assert est.batch_size == 3 and not est.flip_test and est.udp and est.weights == "random"


@pytest.mark.parametrize("name", TOP_DOWN)
def test_missing_weights_file_names_the_download_command(name, tmp_path):
    pytest.importorskip({"vitpose": "transformers", "hrnet": "timm"}[name])
    with pytest.raises(EstimatorError, match=f"make weights ESTIMATOR={name}"):
        build_estimator(name, weights=tmp_path / "nope.pth")


# ----------------------------------------------------------------------------- ViTPose checkpoints


@pytest.fixture(scope="module", params=["simple", "classic"])
def vit_ref(request):
    """(decoder, a random transformers ViTPose, its heatmaps on fixed crops)."""
    est = vitpose(decoder=request.param)
    randomize_(est.model, seed=1)
    x = crops()
    return request.param, est.model, x, heat(est, x)


def mmpose_vit_forward(sd: dict, x: torch.Tensor, *, heads: int, decoder: str) -> torch.Tensor:
    """ViTPose written from mmpose's modules (mmpretrain ViT + HeatmapHead), on the mmpose-layout
    state dict: an independent check of the converter."""
    F = torch.nn.functional
    p = "backbone."
    w, b = sd[p + "patch_embed.projection.weight"], sd[p + "patch_embed.projection.bias"]
    t = F.conv2d(x, w, b, stride=16, padding=2)  # [N, C, 16, 12]
    n, c, hp, wp = t.shape
    t = t.flatten(2).transpose(1, 2) + sd[p + "pos_embed"]  # [N, 192, C]
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith(p + "layers.")})
    for i in layers:
        q = f"{p}layers.{i}."
        y = F.layer_norm(t, (c,), sd[q + "ln1.weight"], sd[q + "ln1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"])
        qkv = qkv.reshape(n, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # [3, N, heads, T, C/heads]
        att = (qkv[0] @ qkv[1].transpose(-2, -1) * (c // heads) ** -0.5).softmax(-1)
        y = (att @ qkv[2]).transpose(1, 2).reshape(n, -1, c)
        t = t + F.linear(y, sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        y = F.layer_norm(t, (c,), sd[q + "ln2.weight"], sd[q + "ln2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, sd[q + "ffn.layers.0.0.weight"], sd[q + "ffn.layers.0.0.bias"])),
            sd[q + "ffn.layers.1.weight"],
            sd[q + "ffn.layers.1.bias"],
        )
        t = t + y
    t = F.layer_norm(t, (c,), sd[p + "ln1.weight"], sd[p + "ln1.bias"], eps=1e-6)
    t = t.transpose(1, 2).reshape(n, c, hp, wp)  # [N, C, 16, 12]
    if decoder == "simple":
        t = F.interpolate(F.relu(t), scale_factor=4, mode="bilinear", align_corners=False)
        return F.conv2d(t, sd["head.final_layer.weight"], sd["head.final_layer.bias"], padding=1)
    for d, b in ((0, 1), (3, 4)):
        t = F.conv_transpose2d(t, sd[f"head.deconv_layers.{d}.weight"], stride=2, padding=1)
        bn = f"head.deconv_layers.{b}."
        t = F.relu(F.batch_norm(t, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"], sd[bn + "bias"]))
    return F.conv2d(t, sd["head.final_layer.weight"], sd["head.final_layer.bias"])


def test_converter_matches_an_independent_mmpose_forward(vit_ref):
    from pose_extraction.estimators.convert import vitpose_from_hf

    decoder, model, x, ref = vit_ref
    sd_mm = vitpose_from_hf(model.state_dict(), "mmpose")
    assert sd_mm["backbone.pos_embed"].shape == (1, 192, 32)
    with torch.no_grad():
        out = mmpose_vit_forward(sd_mm, x, heads=TINY_VIT["num_heads"], decoder=decoder).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("layout", ["mmpose", "original"])
def test_vitpose_official_layouts_load_strictly(vit_ref, layout, tmp_path):
    from pose_extraction.estimators.convert import vitpose_from_hf

    decoder, model, x, ref = vit_ref
    path = save_pth(tmp_path / f"{layout}.pth", vitpose_from_hf(model.state_dict(), layout))
    est = vitpose(weights=path, decoder=decoder)
    np.testing.assert_allclose(heat(est, x), ref, atol=1e-5)
    assert est.weights == str(path)


def test_vitpose_transformers_directory(vit_ref, tmp_path):
    decoder, model, x, ref = vit_ref
    model.save_pretrained(tmp_path / "hf")
    est = vitpose(weights=tmp_path / "hf", decoder=decoder)
    np.testing.assert_allclose(heat(est, x), ref, atol=1e-6)
    with pytest.raises(EstimatorError, match="hidden_size: directory 32 vs configured 64"):
        vitpose(weights=tmp_path / "hf", decoder=decoder, hidden_size=64, num_heads=4)


def test_vitpose_layout_round_trips():
    from pose_extraction.estimators.convert import vitpose_from_hf, vitpose_to_hf

    model = randomize_(vitpose(decoder="classic").model, seed=2)
    sd = model.state_dict()
    mm = vitpose_from_hf(sd, "mmpose")
    again = vitpose_from_hf(vitpose_to_hf(mm), "mmpose")
    assert mm.keys() == again.keys() and all(torch.equal(mm[k], again[k]) for k in mm)
    orig = vitpose_from_hf(sd, "original")
    assert set(vitpose_to_hf(orig)) == set(sd) and all(torch.equal(vitpose_to_hf(orig)[k], sd[k]) for k in sd)
    # hf -> mmpose -> hf is the identity when position slot 0 is zero (as mmpose -> hf makes it)
    sd["backbone.embeddings.position_embeddings"][:, 0] = 0
    back = vitpose_to_hf(vitpose_from_hf(sd, "mmpose"))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_mmpose_pos_embed_with_a_cls_slot_drops_it_like_mmpretrain(vit_ref, tmp_path):
    from pose_extraction.estimators.convert import vitpose_from_hf

    decoder, model, x, ref = vit_ref
    sd = vitpose_from_hf(model.state_dict(), "mmpose")
    sd["backbone.pos_embed"] = torch.cat(
        [torch.full_like(sd["backbone.pos_embed"][:, :1], 3.0), sd["backbone.pos_embed"]], dim=1
    )
    est = vitpose(weights=save_pth(tmp_path / "cls.pth", sd), decoder=decoder)
    np.testing.assert_allclose(heat(est, x), ref, atol=1e-5)


def test_vitpose_wrong_architecture_lists_keys(tmp_path):
    from pose_extraction.estimators.convert import vitpose_from_hf

    wide = vitpose(hidden_size=64, num_heads=4).model.state_dict()
    path = save_pth(tmp_path / "wide.pth", vitpose_from_hf(wide, "mmpose"))
    want = r"mis-shaped(.|\n)*projection\.weight: checkpoint \(64, 3, 16, 16\) vs model \(32, 3, 16, 16\)"
    with pytest.raises(EstimatorError, match=want):
        vitpose(weights=path)
    deep = vitpose(num_layers=3).model.state_dict()
    path = save_pth(tmp_path / "deep.pth", vitpose_from_hf(deep, "original"))
    with pytest.raises(EstimatorError, match=r"unexpected(.|\n)*backbone\.encoder\.layer\.2\.attention"):
        vitpose(weights=path)
    classic = vitpose(decoder="classic").model.state_dict()
    path = save_pth(tmp_path / "classic.pth", vitpose_from_hf(classic, "mmpose"))
    with pytest.raises(EstimatorError, match=r"unexpected(.|\n)*head\.deconv1\.weight"):
        vitpose(weights=path, decoder="simple")
    torch.save({"conv1.weight": torch.zeros(1), "final_layer.weight": torch.zeros(1)}, tmp_path / "hrnet.pth")
    with pytest.raises(EstimatorError, match="not a ViTPose checkpoint.*conv1.weight"):
        vitpose(weights=tmp_path / "hrnet.pth")


# ----------------------------------------------------------------------------- HRNet checkpoints


@pytest.fixture(scope="module")
def hrnet_ref():
    est = hrnet()
    randomize_(est.model, seed=3)
    x = crops(1)
    return est.model, x, heat(est, x)


@pytest.mark.parametrize("layout", ["mmpose-1.x", "mmpose-0.x", "original", "original-legacy"])
def test_hrnet_official_layouts_load_strictly(hrnet_ref, layout, tmp_path):
    from pose_extraction.estimators.convert import hrnet_from_ours

    model, x, ref = hrnet_ref
    sd = model.state_dict()
    if layout == "mmpose-1.x":
        path = save_pth(tmp_path / "m1.pth", hrnet_from_ours(sd, "mmpose"))
    elif layout == "mmpose-0.x":  # the model zoo's hrnet_w32_coco_256x192-c78dce93_20200708.pth
        sd0 = {k.replace("head.", "keypoint_head.", 1): v for k, v in hrnet_from_ours(sd, "mmpose").items()}
        path = save_pth(tmp_path / "m0.pth", sd0)
    elif layout == "original":  # leoxiaobin's pose_hrnet_w32_256x192.pth: a bare state dict
        path = save_pth(tmp_path / "o.pth", hrnet_from_ours(sd, "original"), meta=False)
    else:  # DataParallel prefix, no num_batches_tracked (older torch)
        legacy = {
            "module." + k: v
            for k, v in hrnet_from_ours(sd, "original").items()
            if not k.endswith("num_batches_tracked")
        }
        path = save_pth(tmp_path / "legacy.pth", legacy, meta=False)
    est = hrnet(weights=path)
    np.testing.assert_array_equal(heat(est, x), ref)


def test_hrnet_wrong_architecture_lists_keys(hrnet_ref, tmp_path):
    from pose_extraction.estimators.convert import hrnet_from_ours

    sd = hrnet_from_ours(hrnet_ref[0].state_dict(), "original")
    sd.pop("stage2.0.branches.0.0.conv1.weight")
    sd["stage4.0.fuse_layers.1.0.0.0.weight"] = torch.zeros(3)
    sd["final_layer.weight"] = torch.zeros(16, 16, 1, 1)
    with pytest.raises(EstimatorError) as info:
        hrnet(weights=save_pth(tmp_path / "bad.pth", sd, meta=False))
    msg = str(info.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg
    assert "backbone.stage2.0.branches.0.0.conv1.weight" in msg
    assert "backbone.stage4.0.fuse_layers.1.0.0.0.weight" in msg
    assert "final_layer.weight: checkpoint (16, 16, 1, 1) vs model (17, 16, 1, 1)" in msg


def test_hrnet_w32_key_set(tmp_path):
    """The real W32: exactly the 65 documented keys (78 with num_batches_tracked) are dropped,
    its pose checkpoint loads strictly, a timm-complete one and a W18 one fail listing keys."""
    timm = pytest.importorskip("timm")
    from pose_extraction.estimators.convert import hrnet_from_ours
    from pose_extraction.estimators.hrnet import build_pose_hrnet

    model, dropped = build_pose_hrnet("hrnet_w32")
    assert all(
        k.startswith(("stage4.2.fuse_layers.1.", "stage4.2.fuse_layers.2.", "stage4.2.fuse_layers.3.")) for k in dropped
    )
    assert len([k for k in dropped if not k.endswith("num_batches_tracked")]) == 65 and len(dropped) == 78
    assert model["final_layer"].in_channels == 32
    sd = hrnet_from_ours(model.state_dict(), "original")
    est = hrnet(weights=save_pth(tmp_path / "w32.pth", sd, meta=False), variant="hrnet_w32")
    assert est.model["final_layer"].weight.shape == (17, 32, 1, 1)

    full = timm.create_model("hrnet_w32", pretrained=False, features_only=True, feature_location="")
    sd_full = {**full.state_dict(), **{k: v for k, v in sd.items() if k.startswith("final_layer.")}}
    with pytest.raises(EstimatorError, match=r"0 missing, 78 unexpected(.|\n)*stage4\.2\.fuse_layers\.1\."):
        hrnet(weights=save_pth(tmp_path / "full.pth", sd_full, meta=False), variant="hrnet_w32")
    small = hrnet_from_ours(hrnet().model.state_dict(), "mmpose")
    with pytest.raises(EstimatorError, match=r"mis-shaped(.|\n)*backbone\.layer1\.0\.conv1\.weight"):
        hrnet(weights=save_pth(tmp_path / "w18.pth", small), variant="hrnet_w32")


# ----------------------------------------------------------------------------- flip test, batching


def test_hrnet_mirrored_image_gives_mirrored_keypoints():
    """MSRA + shift_heatmap with random weights. With a padded box 192 px wide (1 image px per
    crop px) mirrored about x = W / 2 (x -> W - x), the crop is exactly the flipped original
    crop; the flip test then gives heatmaps that are the swapped mirror shifted one pixel
    right, except in column 0, which mmpose's shift fills from the unshifted map. Keypoints map
    exactly by x -> W - x wherever that column plays no part: peaks in columns 1..46 of the
    original heatmap and not in column 0 of the mirrored one."""
    est = hrnet()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    h, w = frame.shape[:2]
    mirrored = np.ascontiguousarray(frame[:, ::-1])
    box = np.array([[120 - 76.8, 50, 120 + 76.8, 200]], np.float32)  # padded width 192, centre x 120
    mbox = np.stack([w - box[:, 2], box[:, 1], w - box[:, 0], box[:, 3]], axis=1)
    c, s = bbox_xyxy_to_center_scale(box)
    assert s[0, 0] == 192.0 and c[0, 0] == 120.0
    x1, _, _ = crop_batch([frame], [box], udp=False)
    x2, _, _ = crop_batch([mirrored], [mbox], udp=False)
    np.testing.assert_array_equal(x2, x1[..., ::-1])

    (kp, sc), (mkp, msc) = est.estimate([frame, mirrored], [box, mbox])
    locs, vals = get_heatmap_maximum(est.predict_heatmaps(x1))
    mlocs, _ = get_heatmap_maximum(est.predict_heatmaps(x2))
    ok = (vals[0] > 0) & (locs[0, :, 0] >= 1) & (locs[0, :, 0] <= 46) & (mlocs[0, FI, 0] >= 1)
    assert ok.sum() >= 8, ok
    back = mkp[0, FI]
    np.testing.assert_allclose(w - back[ok, 0], kp[0, ok, 0], atol=1e-3)
    np.testing.assert_allclose(back[ok, 1], kp[0, ok, 1], atol=1e-3)
    np.testing.assert_allclose(msc[0, FI], sc[0], atol=1e-6)


def test_vitpose_flip_test_heatmaps_are_mirror_equivariant():
    """UDP: the mirrored crop's flip-averaged heatmaps are the original's, mirrored with
    left/right swapped (no shift). Keypoints then mirror exactly only for separable peaks
    (see test_topdown: mmpose's DARK-UDP mixed derivative uses one diagonal)."""
    est = vitpose()
    randomize_(est.model, seed=4)
    x = crops(2).numpy()
    h1 = est.predict_heatmaps(x)
    h2 = est.predict_heatmaps(np.ascontiguousarray(x[..., ::-1]))
    np.testing.assert_allclose(h2, flip_heatmaps(h1), atol=1e-5)
    no_flip = vitpose(flip_test=False)
    no_flip.model.load_state_dict(est.model.state_dict())
    plain = no_flip.predict_heatmaps(x)
    mirrored = no_flip.predict_heatmaps(np.ascontiguousarray(x[..., ::-1]))
    np.testing.assert_allclose(h1, (plain + flip_heatmaps(mirrored)) / 2, atol=1e-6)


def _mirror_udp(frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image mirrored about its pixel centres (x -> W - 1 - x) and the boxes with it: under
    UDP's warp the mirrored box's crop is then exactly the flipped crop."""
    w = frame.shape[1]
    mboxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    return np.ascontiguousarray(frame[:, ::-1]), mboxes.astype(np.float32)


def _mirror_back(kp: np.ndarray, w: int) -> np.ndarray:
    """Keypoints of the mirrored image [k, 17, 2] -> the original image's (left/right swapped)."""
    back = kp[:, FI].copy()
    back[..., 0] = w - 1 - back[..., 0]
    return back


def test_vitpose_mirrored_image_gives_mirrored_keypoints(monkeypatch):
    """ViTPose end to end (UDP crop, network with flip test, DARK-UDP decoding, mapping back):
    a mirrored image gives mirrored keypoints with left/right swapped.

    Exact for everything but the decoder's one sub-pixel detail: mmpose's DARK-UDP takes the
    mixed derivative from the (+1, +1) / (-1, -1) diagonal only, which a mirror turns into the
    other diagonal. With the decoder symmetrised (its result on a map averaged with the mirror
    of its result on the mirrored map, which is mirror-equivariant by construction) the whole
    pipeline must mirror to 1e-3 px; with mmpose's decoder the integer peaks mirror exactly and
    the keypoints to within a small fraction of a heatmap pixel."""
    from pose_extraction import heatmaps

    est = vitpose(decoder="classic")
    randomize_(est.model, seed=5)
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    w = frame.shape[1]
    # Boxes 191 px wide (padded 238.75: UDP steps 1.25 = 40/32 image px per crop column) with
    # centres at 119.375 + integer: every crop column samples an image position on cv2's 1/32 px
    # interpolation grid, in both images, so its fixed-point warp rounds the two crops alike (on
    # other boxes ~0.01-0.04 % of crop values differ by one grey level between the two).
    boxes = np.array([[63.875, 40, 254.875, 200], [34.875, 20.5, 225.875, 180]], np.float32)
    mirrored, mboxes = _mirror_udp(frame, boxes)

    x, _, scales = crop_batch([frame], [boxes], udp=True)
    mx, _, _ = crop_batch([mirrored], [mboxes], udp=True)
    np.testing.assert_array_equal(mx, x[..., ::-1])
    heat_o, heat_m = est.predict_heatmaps(x), est.predict_heatmaps(mx)
    np.testing.assert_allclose(heat_m, flip_heatmaps(heat_o), atol=1e-5)
    locs, vals = get_heatmap_maximum(heat_o)
    mlocs, _ = get_heatmap_maximum(heat_m)
    # a map with maximum <= 0 has no peak (location -1, score 0: no keypoint, as in mmpose)
    seen = vals > 0
    assert seen.sum() >= 8, vals
    hw = heat_o.shape[-1]
    np.testing.assert_array_equal((hw - 1 - mlocs[:, FI, 0])[seen], locs[..., 0][seen])
    np.testing.assert_array_equal(mlocs[:, FI, 1][seen], locs[..., 1][seen])

    (kp, sc), (mkp, msc) = est.estimate([frame, mirrored], [boxes, mboxes])
    np.testing.assert_allclose(msc[:, FI], sc, atol=1e-6)
    assert ((sc > 0) == seen).all()

    dark = heatmaps.refine_keypoints_dark_udp

    def mirrored_dark(keypoints, heatmaps, kernel):  # mmpose's step with the other diagonal
        mkeys = keypoints.copy()
        mkeys[..., 0] = heatmaps.shape[-1] - 1 - mkeys[..., 0]
        out = dark(mkeys, np.ascontiguousarray(heatmaps[..., ::-1]), kernel)
        out[..., 0] = heatmaps.shape[-1] - 1 - out[..., 0]
        return out

    def symmetric_dark(keypoints, heatmaps, kernel):
        return (dark(keypoints, heatmaps, kernel) + mirrored_dark(keypoints, heatmaps, kernel)) / 2

    # mmpose's decoder: the mirrored image's keypoints are the original's decoded with the
    # mixed derivative from the other diagonal, and that is the only difference
    monkeypatch.setattr(heatmaps, "refine_keypoints_dark_udp", mirrored_dark)
    ((akp, _),) = est.estimate([frame], [boxes])
    np.testing.assert_allclose(_mirror_back(mkp, w)[seen], akp[seen], atol=1e-3)
    assert np.abs(akp - kp)[seen].max() > 1e-3  # ... and it is a real difference

    # the symmetrised decoder: the whole pipeline mirrors exactly
    monkeypatch.setattr(heatmaps, "refine_keypoints_dark_udp", symmetric_dark)
    (skp, _), (smkp, _) = est.estimate([frame, mirrored], [boxes, mboxes])
    np.testing.assert_allclose(_mirror_back(smkp, w)[seen], skp[seen], atol=1e-3)


@pytest.mark.parametrize("name", TOP_DOWN)
def test_image_cli_with_boxes_official_layout(name, tmp_path):
    """`python -m pose_extraction image` on a locally written checkpoint in the official mmpose
    layout (random weights): 17 keypoints per given box, those with a peak (score > 0) inside
    that box's padded crop region, scores in [0, 1], the boxes echoed; no detector is built or
    needed (its weights path does not exist)."""
    import cv2
    import yaml

    from pose_extraction.__main__ import main
    from pose_extraction.estimators.convert import hrnet_from_ours, vitpose_from_hf

    est = vitpose(decoder="classic") if name == "vitpose" else hrnet()
    randomize_(est.model, seed=6)
    sd = est.model.state_dict()
    ck = save_pth(
        tmp_path / f"{name}.pth", vitpose_from_hf(sd, "mmpose") if name == "vitpose" else hrnet_from_ours(sd, "mmpose")
    )
    settings = {**load_settings(name), **(TINY_VIT if name == "vitpose" else TINY_HRNET)}  # ViTPose: classic decoder
    (tmp_path / "tiny.yaml").write_text(
        yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
    )
    rng = np.random.default_rng(7)
    cv2.imwrite(str(tmp_path / "img.png"), rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    boxes = np.array([[100, 40, 200, 170], [20, 120, 90, 235], [250, 10, 318, 60]], np.float32)
    out = tmp_path / "kp.json"
    argv = [
        "image",
        str(tmp_path / "img.png"),
        "--estimator",
        name,
        "--weights",
        str(ck),
        "--device",
        "cpu",
        "--boxes",
        ";".join(",".join(str(v) for v in b) for b in boxes),
        "--out",
        str(out),
        "--set",
        f"estimator_settings={tmp_path / 'tiny.yaml'}",
        "--set",
        f"detector.weights={tmp_path / 'no-detector.pth'}",
    ]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert res["estimator"] == name and len(res["persons"]) == len(boxes)
    centers, scales = bbox_xyxy_to_center_scale(boxes)
    for p, b, c, s in zip(res["persons"], boxes, centers, scales):
        kp, sc = np.array(p["keypoints"]), np.array(p["scores"])
        assert kp.shape == (17, 2) and sc.shape == (17,) and np.isfinite(kp).all()
        assert ((sc >= 0) & (sc <= 1)).all() and p["box"] == b.tolist() and p["box_score"] == 1.0
        seen = sc > 0  # a map with maximum <= 0 has no peak: score 0, location meaningless (as mmpose)
        assert seen.sum() >= 5, sc
        # MSRA cannot leave the crop; UDP's DARK step on mmpose's edge-padded map moves a peak in
        # the border row/column about half a heatmap pixel outward (0.50 here), so allow one pixel
        margin = s / 47 if name == "vitpose" else 0.0
        lo, hi = c - s / 2 - margin, c + s / 2 + margin
        assert ((kp >= lo) & (kp <= hi)).all(axis=-1)[seen].all(), (kp, c, s)
    # the same numbers as the estimator API on the same weights
    ref, _ = (vitpose(weights=ck, decoder="classic") if name == "vitpose" else hrnet(weights=ck)).estimate(
        [cv2.cvtColor(cv2.imread(str(tmp_path / "img.png")), cv2.COLOR_BGR2RGB)], [boxes]
    )[0]
    np.testing.assert_allclose(np.array([p["keypoints"] for p in res["persons"]]), ref, atol=1e-4)


def test_image_cli_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    from pose_extraction.__main__ import main

    (tmp_path / "broken.png").write_bytes(b"not an image")
    rc = main(
        [
            "image",
            str(tmp_path / "broken.png"),
            "--estimator",
            "vitpose",
            "--boxes",
            "0,0,10,10",
            "--out",
            str(tmp_path / "o.json"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "broken.png: cannot read image" in err[0]
    assert not (tmp_path / "o.json").exists()
    import cv2

    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((40, 60, 3), np.uint8))
    rc = main(
        [
            "image",
            str(tmp_path / "ok.png"),
            "--estimator",
            "vitpose",
            "--boxes",
            "1,2,3",
            "--out",
            str(tmp_path / "o.json"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "--boxes expects x1,y1,x2,y2" in err[0]
    monkeypatch.setenv("RSA_WEIGHTS_DIR", str(tmp_path / "empty-cache"))
    rc = main(
        [
            "image",
            str(tmp_path / "ok.png"),
            "--estimator",
            "vitpose",
            "--boxes",
            "1,2,30,30",
            "--out",
            str(tmp_path / "o.json"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "make weights ESTIMATOR=vitpose" in err[0]
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("name", ["vitpose", "hrnet"])
def test_batched_equals_per_frame_and_outputs_are_valid(name):
    est = vitpose(batch_size=3) if name == "vitpose" else hrnet(batch_size=3)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (120 + 10 * i, 160, 3), dtype=np.uint8) for i in range(4)]
    boxes = [
        np.array([[10, 5, 70, 100], [50, 20, 150, 110]], np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[0, 0, 160, 140]], np.float32),
        np.array([[30, 40, 90, 120]] * 3, np.float32),
    ]
    batched = est.estimate(frames, boxes)
    for (kp, sc), frame, b in zip(batched, frames, boxes):
        assert kp.shape == (len(b), 17, 2) and sc.shape == (len(b), 17)
        assert kp.dtype == sc.dtype == np.float32 and np.isfinite(kp).all()
        assert ((sc >= 0) & (sc <= 1)).all()
        kp1, sc1 = est.estimate_one(frame, b)
        np.testing.assert_allclose(kp1, kp, atol=1e-4)
        np.testing.assert_allclose(sc1, sc, atol=1e-6)
        if name == "hrnet" and len(b):  # MSRA peaks cannot leave the crop: inside the padded box
            c, s = bbox_xyxy_to_center_scale(b)
            seen = sc > 0
            inside = (kp >= (c - s / 2)[:, None]) & (kp <= (c + s / 2)[:, None])
            assert inside.all(axis=-1)[seen].all()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_autocast_matches_fp32(precision):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = vitpose(decoder="classic")
    randomize_(cpu.model, seed=5)
    gpu = vitpose(decoder="classic", device="cuda", precision=precision)
    gpu.model.load_state_dict(cpu.model.state_dict())
    x = crops(4).numpy()
    ref, out = cpu.predict_heatmaps(x), gpu.predict_heatmaps(x)
    assert np.abs(out - ref).max() <= 0.02 * np.abs(ref).max()

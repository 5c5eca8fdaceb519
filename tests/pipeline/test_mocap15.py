"""mocap15: real DeepMimic motion -> FK -> COCO-17 -> virtual cameras -> PYSKL index."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

pytest.importorskip("pybullet")

from pipeline import humanoid  # noqa: E402
from pipeline.mocap15 import (  # noqa: E402
    MOCAP15_CLASSES,
    Mocap15Config,
    build_mocap15,
    build_sample,
    load_motion,
    load_motion_coco,
)

SMALL = Mocap15Config(samples_per_class=4)
# COCO-17 limb bones and the URDF joints that carry the same bones (URDF_JOINTS order).
COCO_LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16)]
URDF_LIMBS = [(6, 7), (7, 8), (3, 4), (4, 5), (12, 13), (13, 14), (9, 10), (10, 11)]
NECK, L_ANKLE, R_ANKLE = 2, 14, 11


@pytest.fixture(scope="module")
def index() -> dict:
    return build_mocap15(SMALL)


def _bone_lengths(points: np.ndarray, bones: list[tuple[int, int]]) -> np.ndarray:
    """[..., V, 3] -> [..., len(bones)]."""
    return np.stack([np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1) for a, b in bones], axis=-1)


def test_deterministic_per_seed(index: dict) -> None:
    assert pickle.dumps(build_mocap15(SMALL)) == pickle.dumps(index)
    other = build_mocap15(Mocap15Config(samples_per_class=4, seed=1))
    assert pickle.dumps(other) != pickle.dumps(index)


def test_classes_and_labels(index: dict) -> None:
    assert len(MOCAP15_CLASSES) == 15 == len(set(MOCAP15_CLASSES))
    assert index["label_names"] == list(MOCAP15_CLASSES)
    labels = [a["label"] for a in index["annotations"]]
    assert sorted(set(labels)) == list(range(15))
    assert len(labels) == 15 * SMALL.samples_per_class
    for a in index["annotations"]:
        assert a["frame_dir"].startswith(f"mocap15_{MOCAP15_CLASSES[a['label']]}_")


def test_splits_disjoint_and_complete(index: dict) -> None:
    names = [a["frame_dir"] for a in index["annotations"]]
    assert len(set(names)) == len(names)
    for kind in ("xsub", "xview"):
        train, val = set(index["split"][f"{kind}_train"]), set(index["split"][f"{kind}_val"])
        assert train and val and not train & val
        assert train | val == set(names)
    info = index["mocap15"]["samples"]
    for fd in index["split"]["xsub_val"]:
        assert info[fd]["subject"] in SMALL.xsub_val_subjects
    for fd in index["split"]["xview_val"]:
        assert info[fd]["sector"] in SMALL.xview_val_sectors


def test_records_follow_the_contract(index: dict) -> None:
    H, W = 1080, 1920
    for a in index["annotations"]:
        M, T = a["keypoint"].shape[:2]
        assert M in (1, 2) and SMALL.min_frames <= T <= SMALL.max_frames == 150
        assert a["total_frames"] == T
        assert a["keypoint"].dtype == np.float32 and a["keypoint"].shape == (M, T, 17, 2)
        assert a["keypoint_score"].dtype == np.float32 and a["keypoint_score"].shape == (M, T, 17)
        assert np.isfinite(a["keypoint"]).all() and np.isfinite(a["keypoint_score"]).all()
        assert a["keypoint_score"].min() >= 0 and a["keypoint_score"].max() <= 1
        assert a["img_shape"] == a["original_shape"] == (H, W)
        assert a["fps"] == 30.0 and a["schema_version"] == 1
        assert a["person_ids"].dtype == np.int64 and a["person_ids"].tolist() == list(range(M))
        assert a["estimator"] == {"name": "mocap15", "weights": "", "version": "1"}


def test_index_round_trips_through_schema(index: dict, tmp_path) -> None:
    schema = pytest.importorskip("pipeline.schema")
    schema.write_index(index, tmp_path / "mocap15.pkl")  # validates with the writer's rules
    back = schema.read_index(tmp_path / "mocap15.pkl")  # restricted unpickler
    assert pickle.dumps(back) == pickle.dumps(index)


def test_keypoints_inside_image_and_second_person(index: dict) -> None:
    kp = np.concatenate([a["keypoint"].reshape(-1, 2) for a in index["annotations"]])
    inside = (kp[:, 0] >= 0) & (kp[:, 0] < 1920) & (kp[:, 1] >= 0) & (kp[:, 1] < 1080)
    assert inside.mean() > 0.99
    persons = [a["keypoint"].shape[0] for a in index["annotations"]]
    assert 1 in persons and 2 in persons


def test_urdf_bones_rigid_and_upright() -> None:
    for name in MOCAP15_CLASSES:
        pos = load_motion(name)  # [T0, 15, 3]
        assert pos.shape[1:] == (15, 3) and pos.shape[0] > 10
        lengths = _bone_lengths(pos, URDF_LIMBS)  # [T0, 8]
        assert (lengths.max(0) / lengths.min(0) - 1).max() < 0.01, name
    # Quaternion order check: read as (x, y, z, w) the walk would crouch; y is up.
    walk, coco = load_motion("walk"), load_motion_coco("walk")
    ankles = walk[:, [L_ANKLE, R_ANKLE], 1].max(1)
    assert (walk[:, NECK, 1] - ankles).min() > 0.9 and (walk[:, NECK, 1] - ankles).max() < 1.5
    head_above = coco[:, 0, 1] - coco[:, 15:17, 1].max(1)  # nose over the higher ankle
    assert head_above.min() > 1.2 and head_above.max() < 1.9
    assert walk[-1, 0, 0] - walk[0, 0, 0] > 1.0  # walks forward along +x, as the character faces


def test_face_joints_rigid_near_head() -> None:
    coco = load_motion_coco("dance_a")  # [T0, 17, 3]
    face = _bone_lengths(coco, [(0, 1), (0, 2), (1, 2), (3, 4), (1, 3), (2, 4)])
    assert np.ptp(face, axis=0).max() < 1e-6  # a rigid head
    shoulders = coco[:, 5:7].mean(1)
    assert (np.linalg.norm(coco[:, 0] - shoulders, axis=-1) < 0.35).all()


def test_sample_trajectories_not_degenerate() -> None:
    for label in range(0, 15, 3):
        sample = build_sample(SMALL, label, 0, subject=0, sector=0)
        cam = sample.camera_points[0]  # [T, 17, 3] first person, camera frame, metres
        lengths = _bone_lengths(cam, COCO_LIMBS)  # [T, 8]
        assert (lengths.max(0) / lengths.min(0) - 1).max() < 0.02, MOCAP15_CLASSES[label]
        assert (cam[..., 2] > 0.5).all()  # in front of the camera
        moving = sample.record["keypoint"][0].std(axis=0)  # [17, 2] px over time
        assert moving.max() > 15.0 and np.median(moving) > 5.0, MOCAP15_CLASSES[label]


def test_left_right_seen_from_the_front() -> None:
    """Facing the camera, the person's left shoulder is on the image's right."""
    checked = 0
    for i in range(6):
        sample = build_sample(SMALL, MOCAP15_CLASSES.index("walk"), i, subject=0, sector=0)
        if abs(sample.info["azimuth"]) < 40:
            kp = sample.record["keypoint"][0, 0]
            assert kp[5, 0] > kp[6, 0] and kp[11, 0] > kp[12, 0]
            assert kp[0, 1] < kp[5:7, 1].min()  # nose above the shoulders
            checked += 1
    assert checked


def test_confidence_lower_when_facing_away(index: dict) -> None:
    info = index["mocap15"]["samples"]
    nose = {fd: a["keypoint_score"][0, :, 0].mean() for fd, a in ((a["frame_dir"], a) for a in index["annotations"])}
    front = [s for fd, s in nose.items() if abs(info[fd]["azimuth"]) < 45]
    back = [s for fd, s in nose.items() if abs(info[fd]["azimuth"]) > 135]
    assert front and back and np.mean(back) < np.mean(front) - 0.1


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="min_frames"):
        Mocap15Config(min_frames=100, max_frames=50)
    with pytest.raises(ValueError, match="xsub_val_subjects"):
        Mocap15Config(xsub_val_subjects=(10,))
    with pytest.raises(KeyError, match="unknown mocap15 motion"):
        load_motion("moonwalk")


def test_missing_pybullet_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pybullet", None)
    with pytest.raises(ImportError, match="pip install pybullet"):
        humanoid.import_pybullet()


def test_build_sample_rejects_bad_ids() -> None:
    with pytest.raises(ValueError, match="subject"):
        build_sample(SMALL, 0, 0, subject=SMALL.num_subjects, sector=0)

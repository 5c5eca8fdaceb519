"""Builder of `mocap15`, the embedded offline dataset: 15 real human motions, virtual cameras.

Input: the 15 DeepMimic motion-capture clips shipped in the `pybullet` wheel
(`pybullet_data/data/motions/humanoid3d_<name>.txt`) and its humanoid URDF. Output: an in-memory
PYSKL dataset index `{"split", "annotations", "label_names", ...}` (see `pipeline.schema`);
the CLI writes it (`python -m pipeline build-demo-dataset`). Nothing here touches the disk.

How a sample is made:

1. Forward kinematics, once per clip (`load_motion`): the file's keyframes (quaternions stored
   w-first, pybullet wants x, y, z, w) are slerped onto a uniform `MOTION_FPS` grid and set on
   `humanoid/humanoid.urdf` (pybullet DIRECT, `globalScaling=0.25`, i.e. metres). World frame:
   **y up**, right-handed, ground at y = 0; the character faces +x and its right is +z.
2. COCO-17 in 3D (`load_motion_coco`): body joints are URDF joints; nose, eyes and ears are
   fixed points of a rigid head attached to the neck link (its orientation is the head's),
   around the centre of the URDF's head sphere.
3. Per sample (numpy only, one `np.random.Generator` per sample from `(seed, label, index)`):
   random length T in [min_frames, max_frames] at `fps`, playback speed, start time (looping
   clips wrap with DeepMimic's per-cycle root offset, one-shot clips hold their end poses),
   body scale from the "subject" plus a small jitter, and with `second_person_prob` a second
   person doing another motion beside the first. Each person's net travel is limited to
   `max_travel_m` (as if a dolly camera followed it) so runs stay in view.
4. A virtual pinhole camera at an azimuth (relative to the performer's initial facing),
   elevation, distance and focal length, aimed at the action; 2D points are zoomed/shifted
   so the action fits a 1920x1080 frame, then 2-4 px noise is added. Confidences drop for
   self-occluded joints (behind the torso or head as seen from the camera) and fast joints.

Splits (NTU style): `xview_*` by camera azimuth sector (`azimuth_sectors` equal sectors; azimuth
0 = in front of the performer at the first frame, +90 = at its left, i.e. counter-clockwise seen
from above; sector 0 is centred on 0; `xview_val_sectors` are validation), `xsub_*` by
subject id (`num_subjects` subjects, each a body scale; `xsub_val_subjects` are validation; a
second person is drawn from the same side of the split). Sectors and subjects are balanced
within each class. Same config, same bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.humanoid import (  # noqa: F401  (MOTION_FPS, URDF_JOINTS: part of this module's API)
    DEEPMIMIC_MOTIONS,
    MOTION_FPS,
    ROOT_POS,
    URDF_JOINTS,
    forward_kinematics,
    motion_path,
    resample_keyframes,
)

log = logging.getLogger(__name__)

MOCAP15_CLASSES: tuple[str, ...] = DEEPMIMIC_MOTIONS
ESTIMATOR = {"name": "mocap15", "weights": "", "version": "1"}
SPLITS = ("xsub_train", "xsub_val", "xview_train", "xview_val")

# COCO-17 body joints 5..16 taken from these URDF joints (indices into URDF_JOINTS).
_COCO_BODY_FROM_URDF = (6, 3, 7, 4, 8, 5, 12, 9, 13, 10, 14, 11)
# Rigid face in the neck link's frame (x forward, y up, z right), metres at globalScaling 0.25.
_HEAD_CENTRE = (0.0, 0.175, 0.0)  # the URDF's head sphere: 0.7 units above the neck joint
_FACE_OFFSETS = (  # relative to the head centre: nose, l_eye, r_eye, l_ear, r_ear
    (0.105, -0.015, 0.0),
    (0.085, 0.020, -0.033),
    (0.085, 0.020, 0.033),
    (-0.005, 0.0, -0.075),
    (-0.005, 0.0, 0.075),
)
_HEAD, _ROOT = 17, 18  # extra points carried after the 17 COCO joints in [..., 19, 3] arrays
_L_SHO, _R_SHO, _L_HIP, _R_HIP = 5, 6, 11, 12
_TAG_SUBJECTS, _TAG_ASSIGN, _TAG_SAMPLE = 1, 2, 3  # seed-sequence tags: independent streams


@dataclass(frozen=True)
class Mocap15Config:
    """Knobs of the mocap15 builder; the defaults are the shipped demo dataset.

    Angles are degrees, distances metres, focal length and noise pixels.
    """

    seed: int = 0
    samples_per_class: int = 60
    fps: float = 30.0
    min_frames: int = 40
    max_frames: int = 150
    speed_range: tuple[float, float] = (0.8, 1.25)
    img_shape: tuple[int, int] = (1080, 1920)  # (H, W)
    num_subjects: int = 10
    xsub_val_subjects: tuple[int, ...] = (2, 5, 8)
    subject_scale_range: tuple[float, float] = (0.95, 1.2)  # humanoid is 1.6 m tall at 1.0
    scale_jitter: float = 0.02
    azimuth_sectors: int = 3
    xview_val_sectors: tuple[int, ...] = (1,)
    elevation_range: tuple[float, float] = (-5.0, 30.0)
    roll_range: tuple[float, float] = (-3.0, 3.0)
    distance_range: tuple[float, float] = (4.0, 8.0)
    focal_range: tuple[float, float] = (1100.0, 1900.0)
    noise_px_range: tuple[float, float] = (2.0, 4.0)
    second_person_prob: float = 0.25
    second_person_gap: tuple[float, float] = (0.9, 1.6)
    max_travel_m: float = 3.0

    def __post_init__(self) -> None:
        rules = [  # (rule, holds, fields it reads)
            ("seed >= 0", self.seed >= 0, "seed"),
            ("samples_per_class >= 1", self.samples_per_class >= 1, "samples_per_class"),
            ("fps > 0", self.fps > 0, "fps"),
            ("2 <= min_frames <= max_frames", 2 <= self.min_frames <= self.max_frames, "min_frames max_frames"),
            ("0 <= second_person_prob <= 1", 0 <= self.second_person_prob <= 1, "second_person_prob"),
            ("num_subjects >= 1", self.num_subjects >= 1, "num_subjects"),
            ("azimuth_sectors >= 1", self.azimuth_sectors >= 1, "azimuth_sectors"),
            (
                "xsub_val_subjects in [0, num_subjects)",
                all(0 <= v < self.num_subjects for v in self.xsub_val_subjects),
                "xsub_val_subjects num_subjects",
            ),
            (
                "xview_val_sectors in [0, azimuth_sectors)",
                all(0 <= v < self.azimuth_sectors for v in self.xview_val_sectors),
                "xview_val_sectors azimuth_sectors",
            ),
            ("elevation_range within [-60, 60]", all(-60 <= e <= 60 for e in self.elevation_range), "elevation_range"),
            ("img_shape positive", all(v > 0 for v in self.img_shape), "img_shape"),
            ("0 <= scale_jitter < 0.5", 0 <= self.scale_jitter < 0.5, "scale_jitter"),
            ("max_travel_m > 0", self.max_travel_m > 0, "max_travel_m"),
        ]
        positive = ("speed_range", "subject_scale_range", "distance_range", "focal_range")
        others = ("noise_px_range", "second_person_gap", "roll_range", "elevation_range")
        for name in (*positive, *others):
            lo, hi = getattr(self, name)
            rules.append((f"{name}: low <= high", lo <= hi, name))
            if name in positive:
                rules.append((f"{name} > 0", lo > 0, name))
        bad = []
        for rule, holds, fields in rules:
            if not holds:
                got = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields.split())
                bad.append(f"need {rule} ({got})")
        if bad:
            raise ValueError("invalid mocap15 settings: " + "; ".join(bad))


@dataclass(frozen=True)
class _Clip:
    """One clip after FK: COCO-17 + head centre + root in 3D on a uniform grid (read-only)."""

    points: np.ndarray  # [T0, 19, 3] metres, y up
    urdf: np.ndarray  # [T0, 15, 3] the URDF joints, same grid
    duration: float  # seconds covered by points[0] .. points[-1]
    loop: bool
    cycle_offset: np.ndarray  # [3] root displacement per loop cycle (DeepMimic convention)


@dataclass(frozen=True)
class Mocap15Sample:
    """One generated sample: the record plus what a test or a plot may want to check."""

    record: dict[str, Any]  # the pose record, with "label"
    camera_points: np.ndarray  # [M, T, 17, 3] float64, camera frame (x right, y down, z depth), m
    info: dict[str, Any]  # subject, sector, azimuth, ..., plain Python scalars


@functools.cache
def _load_clip(name: str) -> _Clip:
    """FK of one clip, COCO-17 mapping and the rigid face; cached (deterministic)."""
    path = motion_path(name)
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    frames = np.asarray(data["Frames"], dtype=np.float64)  # [K, 44]
    if frames.ndim != 2 or frames.shape[1] != 44 or len(frames) < 2:
        raise ValueError(f"{path}: expected Frames [K>=2, 44], got {list(frames.shape)}")
    dense, duration = resample_keyframes(frames)
    urdf, neck = forward_kinematics(dense)  # [N, 15, 3], [N, 3, 3]
    head = urdf[:, 2] + neck @ np.asarray(_HEAD_CENTRE)  # [N, 3]
    face = head[:, None] + np.einsum("nij,fj->nfi", neck, np.asarray(_FACE_OFFSETS))  # [N, 5, 3]
    body = urdf[:, _COCO_BODY_FROM_URDF]  # [N, 12, 3]
    points = np.concatenate([face, body, head[:, None], urdf[:, :1]], axis=1)  # [N, 19, 3]
    points.setflags(write=False)  # [N, 19, 3]
    urdf.setflags(write=False)
    offset = frames[-1, ROOT_POS] - frames[0, ROOT_POS]
    log.debug("mocap15: FK of %s: %d keyframes -> %d frames, %.2f s", name, len(frames), len(dense), duration)
    return _Clip(points, urdf, duration, data.get("Loop") == "wrap", offset)


def load_motion(name: str) -> np.ndarray:
    """3D positions of the humanoid's 15 URDF joints over one pass of a clip.

    Args:
        name: one of MOCAP15_CLASSES.

    Returns:
        float64 [T0, 15, 3] in metres, y up, ground at y = 0, sampled uniformly at MOTION_FPS;
        joint order URDF_JOINTS (root, chest, neck, right_shoulder, ...).
    """
    return _load_clip(name).urdf.copy()


def load_motion_coco(name: str) -> np.ndarray:
    """Like load_motion, mapped to COCO-17 (face joints from the rigid head): [T0, 17, 3]."""
    return _load_clip(name).points[:, :17].copy()


# ------------------------------------------------------------------------------------------
# One sample: motion -> 3D scene -> camera -> 2D record (numpy only)
# ------------------------------------------------------------------------------------------


def _play(clip: _Clip, times: np.ndarray) -> np.ndarray:
    """Clip points [T, 19, 3] at `times` seconds: looping clips wrap, one-shot clips hold ends."""
    if clip.loop:
        cycles = np.floor(times / clip.duration)
        phase = times - cycles * clip.duration
    else:
        cycles = np.zeros_like(times)
        phase = np.clip(times, 0.0, clip.duration)
    x = phase / clip.duration * (len(clip.points) - 1)
    i = np.clip(np.floor(x).astype(np.int64), 0, len(clip.points) - 2)
    w = (x - i)[:, None, None]
    pts = (1.0 - w) * clip.points[i] + w * clip.points[i + 1]  # [T, 19, 3]
    return pts + cycles[:, None, None] * clip.cycle_offset


def _sample_motion(
    rng: np.random.Generator, cfg: Mocap15Config, label: int, T: int, scale: float
) -> tuple[np.ndarray, dict[str, float]]:
    """One person's motion over T frames, recentred and scaled: points [T, 19, 3], facts."""
    clip = _load_clip(MOCAP15_CLASSES[label])
    speed = rng.uniform(*cfg.speed_range)
    span = (T - 1) / cfg.fps * speed  # seconds of motion shown
    if clip.loop:
        start = rng.uniform(0.0, clip.duration)
    elif span <= clip.duration:
        start = rng.uniform(0.0, clip.duration - span)
    else:  # the whole action, holding the first/last pose around it
        start = rng.uniform(clip.duration - span, 0.0)
    pts = _play(clip, start + np.arange(T) / cfg.fps * speed)
    pts = pts - pts[0, _ROOT] * np.array([1.0, 0.0, 1.0])  # root over the origin at frame 0
    pts *= scale  # about the ground point under the root: feet stay on the ground
    # Net travel beyond max_travel_m is removed linearly, as if a dolly followed the person.
    travel = (pts[-1, _ROOT] - pts[0, _ROOT]) * np.array([1.0, 0.0, 1.0])
    dist = float(np.linalg.norm(travel))
    if dist > cfg.max_travel_m:
        ramp = np.linspace(0.0, 1.0, T)[:, None, None]
        pts = pts - ramp * travel * (1.0 - cfg.max_travel_m / dist)
    return pts, {"speed": float(speed), "start_s": float(start)}


def _facing_yaw(pts: np.ndarray) -> float:
    """Yaw (rad, about +y) of the body's forward direction in frame 0, from hips and shoulders."""
    left = pts[0, [_L_SHO, _L_HIP]].mean(0) - pts[0, [_R_SHO, _R_HIP]].mean(0)
    fwd = np.cross(left, [0.0, 1.0, 0.0])  # left x up = forward (y up, right-handed)
    return math.atan2(-fwd[2], fwd[0])  # the yaw that rotates +x onto fwd


def _rot_y(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _camera_frame(azimuth: float, elevation: float, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector target->camera [3] and world->camera rotation rows (right, down, forward)."""
    back = _rot_y(azimuth) @ np.array([math.cos(elevation), 0.0, 0.0])
    back[1] = math.sin(elevation)
    fwd = -back
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = math.cos(roll), math.sin(roll)
    rot = np.stack([c * right + s * down, -s * right + c * down, fwd])  # [3, 3]
    return back, rot


def _occlusion(cam: np.ndarray, uv: np.ndarray, focal: float) -> np.ndarray:
    """Self-occlusion in [0, 1] per joint [T, 17] from camera points [T, 19, 3], pixels [T, 17, 2].

    A joint is occluded when it lies deeper than the torso (or, for face joints, the head
    centre) and projects near it in the image.
    """
    z = cam[..., 2]  # [T, 19]
    torso = [_L_SHO, _R_SHO, _L_HIP, _R_HIP]
    z_torso = z[:, torso].mean(1, keepdims=True)  # [T, 1]
    behind = np.clip((z[:, :17] - z_torso - 0.03) / 0.12, 0.0, 1.0)  # [T, 17]
    a = uv[:, [_L_SHO, _R_SHO]].mean(1, keepdims=True)  # [T, 1, 2] mid-shoulder
    b = uv[:, [_L_HIP, _R_HIP]].mean(1, keepdims=True)  # [T, 1, 2] mid-hip
    ab = b - a
    ab2 = np.maximum(np.sum(ab * ab, -1, keepdims=True), 1e-6)  # [T, 1, 1]
    along = np.sum((uv - a) * ab, -1, keepdims=True) / ab2
    t = np.clip(along, 0.0, 1.0)  # [T, 17, 1] position along the torso axis
    d = np.linalg.norm(uv - (a + t * ab), axis=-1)  # [T, 17] px to the torso axis
    half_width = 0.5 * np.linalg.norm(uv[:, _L_SHO] - uv[:, _R_SHO], axis=-1)  # [T]
    radius = np.maximum(half_width, 0.12 * focal / z_torso[:, 0])[:, None]  # [T, 1] px
    occl = behind * np.clip(1.5 - d / radius, 0.0, 1.0)
    behind_head = np.clip((z[:, :5] - z[:, _HEAD : _HEAD + 1]) / 0.05, 0.0, 1.0)  # [T, 5]
    occl[:, :5] = np.maximum(occl[:, :5], behind_head)
    return occl


def _split_groups(cfg: Mocap15Config) -> tuple[np.ndarray, list[int], list[int]]:
    """Subject body scales [num_subjects] and the train / val subject ids."""
    rng = np.random.default_rng([cfg.seed, _TAG_SUBJECTS])
    scales = rng.permutation(np.linspace(*cfg.subject_scale_range, cfg.num_subjects))
    val = sorted(set(cfg.xsub_val_subjects))
    train = [s for s in range(cfg.num_subjects) if s not in val]
    return scales, train, val


def _class_assignment(cfg: Mocap15Config, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced subject ids and azimuth sectors for the samples of one class: [n], [n]."""
    n = cfg.samples_per_class
    rng = np.random.default_rng([cfg.seed, _TAG_ASSIGN, label])
    S, V = cfg.num_subjects, cfg.azimuth_sectors
    subjects = rng.permutation((np.arange(n) + rng.integers(S)) % S)
    sectors = rng.permutation((np.arange(n) + rng.integers(V)) % V)
    return subjects, sectors


def _place_second_person(
    rng: np.random.Generator, cfg: Mocap15Config, label: int, T: int, scale: float, rot: np.ndarray
) -> tuple[np.ndarray, int]:
    """Another motion beside the first person, sideways as seen from the camera: [T, 19, 3]."""
    other = int(rng.choice([c for c in range(len(MOCAP15_CLASSES)) if c != label]))
    pts, _ = _sample_motion(rng, cfg, other, T, scale)
    pts = pts @ _rot_y(rng.uniform(0.0, 2 * math.pi)).T  # its own facing
    flat = np.array([1.0, 0.0, 1.0])
    right = rot[0] * flat / max(float(np.linalg.norm(rot[0] * flat)), 1e-9)  # camera right
    toward = -rot[2] * flat / max(float(np.linalg.norm(rot[2] * flat)), 1e-9)  # to the camera
    side = rng.choice([-1.0, 1.0]) * rng.uniform(*cfg.second_person_gap)
    return pts + side * right + rng.uniform(-0.7, 0.7) * toward, other


def _project(
    rng: np.random.Generator, cfg: Mocap15Config, scene: np.ndarray, back: np.ndarray, rot: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Film `scene` [M, T, 19, 3]: camera points [M, T, 19, 3], pixels [M, T, 17, 2], f, distance.

    The camera looks at the centre of the action's bounding box from direction `back`, far
    enough for all of it to fit; the 2D result is zoomed out if still too big, then shifted
    to a random place that keeps it inside the frame.
    """
    H, W = cfg.img_shape
    focal = rng.uniform(*cfg.focal_range)
    flat = scene.reshape(-1, 3)  # [M*T*19, 3]
    centre = (flat.min(0) + flat.max(0)) / 2
    radius = float(np.linalg.norm(flat - centre, axis=-1).max())
    need = radius * math.sqrt(1.0 + (focal / (0.45 * min(H, W))) ** 2)
    distance = max(rng.uniform(*cfg.distance_range), need, radius + 1.0)
    cam = (scene - (centre + distance * back)) @ rot.T  # [M, T, 19, 3] x right, y down, z depth
    uv = focal * cam[..., :17, :2] / cam[..., :17, 2:3]  # [M, T, 17, 2] about the principal point
    lo, hi = uv.reshape(-1, 2).min(0), uv.reshape(-1, 2).max(0)
    zoom = min(1.0, 0.92 * W / (hi[0] - lo[0]), 0.92 * H / (hi[1] - lo[1]))
    uv, lo, hi = uv * zoom, lo * zoom, hi * zoom
    size = np.array([W, H], dtype=np.float64)
    room = np.maximum((size - (hi - lo)) / 2 - 8.0, 0.0)  # free px on each side
    uv = uv + size / 2 - (lo + hi) / 2 + 0.8 * room * rng.uniform(-1.0, 1.0, 2)
    return cam, uv, focal * zoom, distance


def _observe(
    rng: np.random.Generator, cfg: Mocap15Config, cam: np.ndarray, uv: np.ndarray, focal: float
) -> tuple[np.ndarray, np.ndarray]:
    """Estimator-like output: noisy pixels [M, T, 17, 2] and confidences [M, T, 17] in [0, 1].

    Occluded and fast-moving joints get lower confidence; occluded ones also more noise.
    """
    H, W = cfg.img_shape
    M = len(uv)
    occl = np.stack([_occlusion(cam[m], uv[m], focal) for m in range(M)])  # [M, T, 17]
    size = np.linalg.norm(np.ptp(uv, axis=2), axis=-1).max(axis=1)[:, None, None]  # [M, 1, 1] px
    vel = np.linalg.norm(np.diff(uv, axis=1, prepend=uv[:, :1]), axis=-1)  # [M, T, 17] px/frame
    blur = np.clip(vel / np.maximum(0.06 * size, 1.0), 0.0, 1.0)  # fast joints: motion blur
    score = 0.93 - 0.55 * occl - 0.15 * blur + rng.normal(0.0, 0.02, (M, 1, 17))
    score = np.clip(score + rng.normal(0.0, 0.03, occl.shape), 0.0, 1.0)
    sigma = rng.uniform(*cfg.noise_px_range, (M, 1, 1)) * (1.0 + occl)  # [M, T, 17] px
    uv = uv + sigma[..., None] * rng.standard_normal(uv.shape)
    return np.clip(uv, 0.0, [W - 1.0, H - 1.0]), score


def build_sample(cfg: Mocap15Config, label: int, index: int, subject: int, sector: int) -> Mocap15Sample:
    """Generate sample `index` of class `label` for a given subject id and azimuth sector.

    Deterministic in its arguments (one Generator from `(cfg.seed, label, index)`).
    `build_mocap15` chooses balanced subjects and sectors; tests may call this directly.
    """
    if not (
        0 <= label < len(MOCAP15_CLASSES)
        and 0 <= subject < cfg.num_subjects
        and 0 <= sector < cfg.azimuth_sectors
        and index >= 0
    ):
        raise ValueError(
            f"build_sample: need label in [0, 15), subject in [0, {cfg.num_subjects}), sector in "
            f"[0, {cfg.azimuth_sectors}), index >= 0; got label={label}, subject={subject}, "
            f"sector={sector}, index={index}"
        )
    rng = np.random.default_rng([cfg.seed, _TAG_SAMPLE, label, index])
    scales, train_subjects, val_subjects = _split_groups(cfg)
    T = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    scale = scales[subject] * (1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter))
    first, motion = _sample_motion(rng, cfg, label, T, scale)  # [T, 19, 3]
    width = 360.0 / cfg.azimuth_sectors
    azimuth = (sector * width - width / 2 + rng.uniform(0.0, width) + 180.0) % 360.0 - 180.0
    elevation = rng.uniform(*cfg.elevation_range)
    back, rot = _camera_frame(
        _facing_yaw(first) + math.radians(azimuth), math.radians(elevation), math.radians(rng.uniform(*cfg.roll_range))
    )
    info: dict[str, Any] = {
        "label": label,
        "subject": int(subject),
        "sector": int(sector),
        "azimuth": float(azimuth),
        "elevation": float(elevation),
        "scale": float(scale),
        "frames": T,
        **motion,
    }
    people = [first]
    if rng.random() < cfg.second_person_prob:
        pool = (val_subjects if subject in val_subjects else train_subjects) or [subject]
        jitter = 1.0 + rng.uniform(-cfg.scale_jitter, cfg.scale_jitter)
        scale2 = scales[int(rng.choice(pool))] * jitter
        second, info["second_label"] = _place_second_person(rng, cfg, label, T, scale2, rot)
        people.append(second)
    cam, uv, focal, distance = _project(rng, cfg, np.stack(people), back, rot)
    keypoint, score = _observe(rng, cfg, cam, uv, focal)
    info.update(distance=float(distance), focal=float(focal), persons=len(people))
    H, W = cfg.img_shape
    record = {
        "frame_dir": f"mocap15_{MOCAP15_CLASSES[label]}_{index:04d}",
        "label": int(label),
        "total_frames": T,
        "img_shape": (H, W),
        "original_shape": (H, W),
        "keypoint": keypoint.astype(np.float32),  # [M, T, 17, 2]
        "keypoint_score": score.astype(np.float32),  # [M, T, 17]
        "fps": float(cfg.fps),
        "person_ids": np.arange(len(people), dtype=np.int64),
        "estimator": dict(ESTIMATOR),
        "schema_version": 1,
    }
    return Mocap15Sample(record, cam[:, :, :17], info)


def build_mocap15(cfg: Mocap15Config) -> dict[str, Any]:
    """Build the whole dataset index in memory.

    Args:
        cfg: builder settings; the defaults give 15 x 60 samples.

    Returns:
        `{"split": {xsub_train, xsub_val, xview_train, xview_val}, "annotations": [record],
        "label_names": [...], "mocap15": {"config": ..., "samples": {frame_dir: info}}}`;
        identical (to the byte, once pickled) for identical configs.
    """
    _, _, val_subjects = _split_groups(cfg)
    split: dict[str, list[str]] = {k: [] for k in SPLITS}
    annotations, infos = [], {}
    for label, name in enumerate(MOCAP15_CLASSES):
        _load_clip(name)
        subjects, sectors = _class_assignment(cfg, label)
        for i in range(cfg.samples_per_class):
            sample = build_sample(cfg, label, i, int(subjects[i]), int(sectors[i]))
            fd = sample.record["frame_dir"]
            annotations.append(sample.record)
            infos[fd] = sample.info
            xsub_val = sample.info["subject"] in val_subjects
            xview_val = sample.info["sector"] in cfg.xview_val_sectors
            split["xsub_val" if xsub_val else "xsub_train"].append(fd)
            split["xview_val" if xview_val else "xview_train"].append(fd)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in split.items())
    log.info("mocap15: %d samples (%s)", len(annotations), sizes)
    return {
        "split": split,
        "annotations": annotations,
        "label_names": list(MOCAP15_CLASSES),
        "mocap15": {"config": asdict(cfg), "samples": infos},
    }

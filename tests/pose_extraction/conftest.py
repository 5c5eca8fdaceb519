"""Tiny synthetic videos for stage-1 tests, written in code (no committed binaries).

Frames are 64x48 (W x H) and 8-30 frames long, so every file is a few KB and decodes in
milliseconds. The helpers are plain functions (importable as `conftest` helpers through the
fixtures below); the fixtures write each file once per session.

- indexed video: frame i is one flat colour, R = 16 + 7 i, G = 64, B = 200, so a decoded
  frame tells its index (`frame_index`) and whether R and B were swapped.
- two-person video: two bright upright rectangles (person-sized for the frame) crossing paths,
  with their ground-truth boxes.
- bad inputs: random bytes, a zero-length file, a container with zero frames, a grayscale
  video, a truncated video, a raw MJPEG stream whose frame size changes mid-video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

H, W = 48, 64
FPS = 10.0
R0, R_STEP, G_FLAT, B_FLAT = 16, 7, 64, 200


def indexed_frames(t: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """RGB uint8 [T, H, W, 3]; frame i is flat (R, G, B) = (16 + 7 i, 64, 200)."""
    assert R0 + R_STEP * (t - 1) <= 255, "too many frames for the brightness code"
    frames = np.empty((t, *size, 3), np.uint8)
    for i in range(t):
        frames[i] = (R0 + R_STEP * i, G_FLAT, B_FLAT)
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Invert `indexed_frames` from a decoded RGB frame (robust to a few levels of codec error)."""
    return int(round((float(frame[..., 0].mean()) - R0) / R_STEP))


def two_person_frames(t: int, size: tuple[int, int] = (H, W)) -> tuple[np.ndarray, np.ndarray]:
    """Two bright 12x28 rectangles crossing paths on a dark background.

    Returns:
        frames RGB uint8 [T, H, W, 3] and boxes float32 [T, 2, 4] (x1, y1, x2, y2), person 0
        (brightness 230, moving right) first, person 1 (brightness 150, moving left) second.
    """
    h, w = size
    frames = np.full((t, h, w, 3), 20, np.uint8)
    boxes = np.zeros((t, 2, 4), np.float32)
    bw, bh = 12, 28
    for i in range(t):
        xs = (2 + (w - bw - 4) * i / max(t - 1, 1), w - bw - 2 - (w - bw - 4) * i / max(t - 1, 1))
        for p, (x, level, y) in enumerate(zip(xs, (230, 150), (6, 12))):
            x0 = int(round(x))
            frames[i, y : y + bh, x0 : x0 + bw] = level
            boxes[i, p] = (x0, y, x0 + bw, y + bh)
    return frames, boxes


def write_video(
    path: Path, frames: np.ndarray, *, fps: float = FPS, fourcc: str = "mp4v", is_color: bool = True
) -> Path:
    """Write RGB [T, H, W, 3] (or gray [T, H, W]) frames with cv2.VideoWriter."""
    cv2 = pytest.importorskip("cv2")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), isColor=is_color)
    assert writer.isOpened(), f"cv2 cannot write {fourcc} to {path}"
    for frame in frames:
        writer.write(frame if frame.ndim == 2 else np.ascontiguousarray(frame[:, :, ::-1]))  # RGB -> BGR
    writer.release()
    return path


def write_pyav_video(
    path: Path,
    frames: np.ndarray,
    *,
    fps: int = 10,
    codec: str = "mpeg4",
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
) -> Path:
    """Write RGB [T, H, W, 3] or gray [T, H, W] frames with PyAV (skips the test without av)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        for frame in frames:
            fmt = "gray" if frame.ndim == 2 else "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def videos_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def indexed_video(videos_dir) -> Path:
    """20 frames, 64x48, mp4v, 10 fps; see `indexed_frames`."""
    return write_video(videos_dir / "indexed.mp4", indexed_frames(20))


@pytest.fixture(scope="session")
def two_person_video(videos_dir) -> tuple[Path, np.ndarray]:
    """(path, boxes float32 [T=12, 2, 4]) for two crossing bright rectangles."""
    frames, boxes = two_person_frames(12)
    return write_video(videos_dir / "two_person.mp4", frames), boxes


@pytest.fixture(scope="session")
def corrupt_video(videos_dir) -> Path:
    path = videos_dir / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


@pytest.fixture(scope="session")
def empty_file_video(videos_dir) -> Path:
    """A zero-length file with a video extension."""
    path = videos_dir / "empty.mp4"
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="session")
def zero_frame_video(videos_dir) -> Path:
    """A valid MJPG AVI container (header and stream) holding no frame; both cv2 and PyAV open it."""
    return write_video(videos_dir / "zero_frames.avi", np.zeros((0, H, W, 3), np.uint8), fourcc="MJPG")


@pytest.fixture(scope="session")
def gray_video(videos_dir) -> Path:
    """8 grayscale frames (cv2.VideoWriter isColor=False); frame i has level 30 i."""
    frames = np.stack([np.full((H, W), 30 * i, np.uint8) for i in range(8)])
    return write_video(videos_dir / "gray.mp4", frames, is_color=False)


@pytest.fixture(scope="session")
def truncated_video(videos_dir) -> Path:
    """An MPEG-4 file with its index first (`faststart`), cut at 60 %: the header still
    promises 20 frames, only the first few are readable. Needs PyAV to write."""
    full = write_pyav_video(videos_dir / "full_faststart.mp4", indexed_frames(20), options={"movflags": "faststart"})
    data = full.read_bytes()
    path = videos_dir / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


@pytest.fixture(scope="session")
def size_change_video(videos_dir) -> Path:
    """A raw MJPEG stream (concatenated JPEGs): frames 0-2 are 48x64, frames 3-5 are 40x80."""
    cv2 = pytest.importorskip("cv2")
    path = videos_dir / "size_change.mjpeg"
    with open(path, "wb") as fh:
        for i in range(6):
            shape = (H, W, 3) if i < 3 else (40, 80, 3)
            ok, jpg = cv2.imencode(".jpg", np.full(shape, 40 + 20 * i, np.uint8))
            assert ok
            fh.write(jpg.tobytes())
    return path

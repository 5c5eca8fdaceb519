"""Video reading: order, sizes, RGB, chunking, the decoder thread, and every bad-input path."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pose_extraction import video
from pose_extraction.video import VideoError, list_videos, open_video
from tests.pose_extraction.conftest import FPS, H, W, frame_index, indexed_frames, write_video

pytest.importorskip("cv2")


def _backends() -> list:
    params = ["opencv"]
    for name, module in (("pyav", "av"), ("decord", "decord")):
        try:
            __import__(module)
            params.append(name)
        except ImportError:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"{module} not installed")))
    return params


BACKENDS = _backends()


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("decode:")]


def _read_all(reader) -> tuple[list[int], np.ndarray]:
    starts, chunks = zip(*reader.iter_chunks())
    return list(starts), np.concatenate(chunks)


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata(indexed_video, backend):
    with open_video(indexed_video, backend=backend) as reader:
        assert reader.path == indexed_video
        assert reader.fps == pytest.approx(FPS)
        assert reader.frame_count == 20
        assert reader.size == (H, W)
        assert "indexed.mp4" in repr(reader)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_in_order_rgb(indexed_video, backend):
    with open_video(indexed_video, backend=backend, chunk_size=7) as reader:
        starts, frames = _read_all(reader)
        assert reader.frames_read == 20
    assert starts == [0, 7, 14]  # 7 does not divide 20: chunks of 7, 7, 6
    assert frames.shape == (20, H, W, 3) and frames.dtype == np.uint8
    assert [frame_index(f) for f in frames] == list(range(20))
    # Frame 0 is RGB (16, 64, 200): B must be the big one, or channels were swapped.
    r, g, b = frames[0].reshape(-1, 3).mean(axis=0)
    assert r < 30 and abs(g - 64) < 6 and b > 185


def test_chunk_shapes_and_second_pass(indexed_video):
    with open_video(indexed_video, chunk_size=8) as reader:
        chunks = list(reader.iter_chunks())
        assert [c.shape[0] for _, c in chunks] == [8, 8, 4]
        assert all(c.flags.c_contiguous for _, c in chunks)
        # A second pass reopens the file and yields the same frames.
        again = np.concatenate([c for _, c in reader.iter_chunks()])
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), again)


def test_chunk_size_one_and_larger_than_video(indexed_video):
    with open_video(indexed_video, chunk_size=1) as reader:
        assert [s for s, _ in reader.iter_chunks()] == list(range(20))
    with open_video(indexed_video, chunk_size=64) as reader:
        ((start, frames),) = reader.iter_chunks()
    assert start == 0 and frames.shape[0] == 20


def test_pyav_matches_opencv(indexed_video, two_person_video):
    pytest.importorskip("av")
    for path in (indexed_video, two_person_video[0]):
        with open_video(path) as a, open_video(path, backend="pyav", chunk_size=5) as b:
            fa, fb = _read_all(a)[1], _read_all(b)[1]
        assert fa.shape == fb.shape
        # Same FFmpeg decoder underneath; only the colour conversion could differ.
        assert np.abs(fa.astype(np.int16) - fb.astype(np.int16)).max() <= 2


def test_break_stops_thread(indexed_video):
    with open_video(indexed_video, chunk_size=2) as reader:
        for start, _ in reader.iter_chunks():
            if start >= 2:
                break  # the generator's `finally` stops the worker
        assert not _decode_threads()


def test_close_stops_suspended_iteration(indexed_video):
    reader = open_video(indexed_video, chunk_size=2)
    chunks = reader.iter_chunks()
    next(chunks)
    assert _decode_threads()
    reader.close()
    assert not _decode_threads()
    reader.close()  # idempotent


def test_queue_is_bounded(indexed_video):
    with open_video(indexed_video, chunk_size=2, max_queued=2) as reader:
        chunks = reader.iter_chunks()
        next(chunks)
        time.sleep(0.3)  # plenty for the worker to decode all 10 chunks if it were unbounded
        assert reader.chunks_decoded <= 1 + reader.max_queued
        assert len(list(chunks)) == 9
        assert reader.chunks_decoded == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_file(tmp_path, backend):
    with pytest.raises(VideoError, match="missing.mp4: cannot open: no such file"):
        open_video(tmp_path / "missing.mp4", backend=backend)


def test_directory(tmp_path):
    with pytest.raises(VideoError, match="is a directory"):
        open_video(tmp_path)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture", ["corrupt_video", "empty_file_video"])
def test_unreadable(request, fixture, backend):
    path = request.getfixturevalue(fixture)
    with pytest.raises(VideoError, match=rf"{path.name}: cannot open"):
        open_video(path, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_frames(zero_frame_video, backend):
    # decord cannot even build its decoder for a stream without frames: "cannot open"
    expected = "(no frames|cannot open)" if backend == "decord" else "no frames"
    with pytest.raises(VideoError, match=rf"{zero_frame_video.name}: {expected}"):
        open_video(zero_frame_video, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_becomes_rgb(gray_video, backend):
    with open_video(gray_video, backend=backend) as reader:
        frames = _read_all(reader)[1]
    assert frames.shape == (8, H, W, 3)
    np.testing.assert_array_equal(frames[..., 0], frames[..., 1])
    np.testing.assert_array_equal(frames[..., 0], frames[..., 2])
    assert abs(frames[3].mean() - 90) < 4


def test_gray_pixel_format_stream(tmp_path):
    """A stream stored as 8-bit gray (ffv1) reads as RGB with both backends."""
    from tests.pose_extraction.conftest import write_pyav_video

    gray = np.stack([np.full((H, W), 40 * i, np.uint8) for i in range(5)])
    path = write_pyav_video(tmp_path / "gray.mkv", gray, codec="ffv1", pix_fmt="gray")
    for backend in ("opencv", "pyav"):
        with open_video(path, backend=backend) as reader:
            frames = _read_all(reader)[1]
        assert frames.shape == (5, H, W, 3)
        np.testing.assert_array_equal(frames[4], np.full((H, W, 3), 160, np.uint8))


def test_to_rgb_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for frame in (gray, gray[:, :, None]):
        out = video._to_rgb(frame, bgr=True)
        assert out.shape == (3, 4, 3) and (out == gray[:, :, None]).all()
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 7  # blue, alpha
    out = video._to_rgb(bgra, bgr=True)
    assert out.shape == (2, 2, 3) and (out[..., 2] == 255).all() and (out[..., :2] == 0).all()


def test_size_change_pyav(size_change_video):
    pytest.importorskip("av")
    with open_video(size_change_video, backend="pyav", chunk_size=2) as reader:
        assert reader.size == (48, 64)
        with pytest.raises(VideoError, match=r"frame 3 is 40x80 .*earlier frames are 48x64"):
            list(reader.iter_chunks())
        assert not _decode_threads()


def test_size_change_opencv_rescales(size_change_video):
    """Documented limitation: OpenCV rescales the new-size frames to the first size itself."""
    with open_video(size_change_video, backend="opencv") as reader:
        frames = _read_all(reader)[1]
    assert frames.shape == (6, 48, 64, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_returns_readable_frames(truncated_video, backend, caplog):
    with caplog.at_level(logging.WARNING, logger="pose_extraction.video"):
        with open_video(truncated_video, backend=backend, chunk_size=4) as reader:
            frames = _read_all(reader)[1]
    assert 0 < len(frames) < 20 and reader.frames_read == len(frames)
    assert [frame_index(f) for f in frames] == list(range(len(frames)))
    if backend != "decord":  # decord counts only the packets present (3 here) and reads those
        assert reader.frame_count == 20  # the header's promise
        assert f"decoded {len(frames)} frames, the container reports 20" in caplog.text


class _FakeSource(video._Source):
    """Yields indexed frames, then raises `error` after `fail_after` frames."""

    decode_errors = (OSError,)

    def __init__(self, *, n=10, fps=10.0, fail_after=None, error=None):
        self.fps, self.frame_count = fps, n
        self._frames, self._fail_after, self._error = indexed_frames(n), fail_after, error
        self.closed = False

    def frames(self):
        for i, f in enumerate(self._frames):
            if i == self._fail_after:
                raise self._error
            yield f

    def close(self):
        self.closed = True


def _patch_source(monkeypatch, tmp_path, **kw):
    src = _FakeSource(**kw)
    monkeypatch.setattr(video, "_open_source", lambda *a: src)
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"x")
    return path, src


def test_worker_exception_propagates(monkeypatch, tmp_path):
    path, src = _patch_source(monkeypatch, tmp_path, fail_after=5, error=ZeroDivisionError("boom"))
    with open_video(path, chunk_size=2) as reader:
        with pytest.raises(ZeroDivisionError, match="boom"):
            list(reader.iter_chunks())
    assert src.closed and not _decode_threads()


def test_decode_error_midway_is_truncation(monkeypatch, tmp_path, caplog):
    path, _ = _patch_source(monkeypatch, tmp_path, fail_after=5, error=OSError("bad packet"))
    with caplog.at_level(logging.WARNING, logger="pose_extraction.video"):
        with open_video(path, chunk_size=2) as reader:
            frames = _read_all(reader)[1]
    assert len(frames) == 5
    assert "decoded 5 frames, the container reports 10" in caplog.text and "bad packet" in caplog.text


def test_decode_error_on_first_frame(monkeypatch, tmp_path):
    path, src = _patch_source(monkeypatch, tmp_path, fail_after=0, error=OSError("bad packet"))
    with pytest.raises(VideoError, match="fake.mp4: cannot decode the first frame"):
        open_video(path)
    assert src.closed


@pytest.mark.parametrize("fps", [0.0, float("nan"), -5.0])
def test_fps_fallback(monkeypatch, tmp_path, caplog, fps):
    path, _ = _patch_source(monkeypatch, tmp_path, fps=fps)
    with caplog.at_level(logging.WARNING, logger="pose_extraction.video"):
        with open_video(path) as reader:
            assert reader.fps == 30.0
    assert "using 30.0" in caplog.text


def test_bad_arguments(indexed_video):
    with pytest.raises(ValueError, match="unknown video backend 'ffmpeg'; valid: opencv, pyav, decord"):
        open_video(indexed_video, backend="ffmpeg")
    with pytest.raises(ValueError, match="chunk_size"):
        open_video(indexed_video, chunk_size=0)


def test_missing_backend_names_package(monkeypatch):
    with pytest.raises(ImportError, match="pip install some-package"):
        video._import("no_such_module_xyz", "some-package")


def test_list_videos_directory(tmp_path):
    for name in ("b.mp4", "a.AVI", "c.mkv", "d.mov", "e.webm", "notes.txt", "f.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.mp4").write_bytes(b"")
    assert [p.name for p in list_videos(tmp_path)] == ["a.AVI", "b.mp4", "c.mkv", "d.mov", "e.webm"]
    assert [p.name for p in list_videos(tmp_path, recursive=True)][-1] == "g.mp4"
    assert list_videos(tmp_path / "b.mp4") == [tmp_path / "b.mp4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="no video files"):
        list_videos(empty)


def test_list_videos_text_file(tmp_path):
    (tmp_path / "v").mkdir()
    for name in ("x.mp4", "y.mp4"):
        (tmp_path / "v" / name).write_bytes(b"")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# videos\nv/y.mp4\n\n{tmp_path / 'v' / 'x.mp4'}\n")
    assert list_videos(lst) == [tmp_path / "v" / "y.mp4", tmp_path / "v" / "x.mp4"]
    lst.write_text("v/x.mp4\nv/nope1.mp4\nv/nope2.mp4\n")
    with pytest.raises(VideoError, match=r"2 of 3 listed videos not found: .*nope1.mp4, .*nope2.mp4"):
        list_videos(lst)
    with pytest.raises(VideoError, match="no such file or folder"):
        list_videos(tmp_path / "absent.txt")
    assert list_videos([tmp_path / "v" / "x.mp4"]) == [tmp_path / "v" / "x.mp4"]


def test_writes_real_video_with_cv2_mjpg(tmp_path):
    """The AVI/MJPG path (another container and codec) reads the same indices."""
    path = write_video(tmp_path / "idx.avi", indexed_frames(9), fourcc="MJPG")
    with open_video(path, chunk_size=4) as reader:
        frames = _read_all(reader)[1]
    assert [frame_index(f) for f in frames] == list(range(9))


def test_import_without_heavy_dependencies():
    """`import pose_extraction.{video,detect,tracking}` loads no cv2/torch/av/decord/scipy."""
    code = (
        "import sys, pose_extraction.video, pose_extraction.detect, pose_extraction.tracking\n"
        "heavy = {'cv2', 'torch', 'torchvision', 'av', 'decord', 'scipy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(video.Path(__file__).parents[2]))

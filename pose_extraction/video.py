"""Video decoding for stage 1: a file in, RGB uint8 frames out, in chunks, never all at once.

`open_video(path)` opens the container, reads its metadata and decodes the first frame (so a
corrupt file, an empty one or a missing one fails here, before any model is loaded).
`VideoReader.iter_chunks()` then yields `(start_index, frames [K, H, W, 3] uint8 RGB)` in
order; a background thread decodes ahead into a queue of at most `max_queued` chunks, so a
long video holds about (max_queued + 2) x chunk_size frames in memory.

Backends (one reader interface; docs/dependencies.md §3 gives the measured speeds):

    opencv  cv2.VideoCapture, the default and the fastest here
    pyav    PyAV (`pip install av`); the one backend that reports a frame size change
    decord  decord (`pip install decord`), unmaintained but still common in the field

Decisions on bad input (each is a `VideoError` whose message starts with the path; any other
exception raised in the decoder thread reaches the caller unchanged):
- missing file, directory, unreadable/corrupt container -> "cannot open"
- a container that opens but yields no frame -> "no frames" (decord: "cannot open", it cannot
  build a decoder for such a stream)
- a frame whose size differs from the first frame's -> an error naming the frame index and
  both sizes. Checked with a raw MJPEG stream of two frame sizes: `pyav` raises it; OpenCV
  silently rescales the later frames to the first size; decord cannot open that file at all
  ("broken metadata"). Use `backend="pyav"` where a dataset may hold such files.
- grayscale (or BGRA) frames are converted to RGB.
- truncated video: the readable frames are returned and a warning gives the decoded count
  against the container's count; a decode error after at least one frame counts as
  truncation (decoding stops there). Zero readable frames is an error.
- fps of 0, negative or NaN in the container -> 30.0 with a warning.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

BACKENDS = ("opencv", "pyav", "decord")
VIDEO_EXTENSIONS = tuple(sorted(VIDEO_SUFFIXES))  # one list for the project (pipeline/datasets.py)
DEFAULT_FPS = 30.0
_JOIN_TIMEOUT_S = 10.0


class VideoError(RuntimeError):
    """A video cannot be read as asked; the message starts with the file's path."""


# --- backends: each opens a file and yields frames one by one (any of gray/BGR/RGB/BGRA) ------


class _Source:
    """One opened container. `frames()` yields RGB uint8 [H, W, 3] frames in order."""

    fps: float = 0.0
    frame_count: int | None = None
    decode_errors: tuple[type[BaseException], ...] = ()

    def frames(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _import(module: str, pip_name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"video backend needs the `{module}` module: pip install {pip_name}") from e


def _to_rgb(frame: np.ndarray, *, bgr: bool) -> np.ndarray:
    """Gray [H, W] / [H, W, 1], BGR(A) or RGB(A) -> RGB uint8 [H, W, 3] (contiguous)."""
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(frame, 3, axis=2))  # [H, W, 1] -> [H, W, 3]
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]  # drop alpha
    if bgr:
        frame = frame[:, :, ::-1]
    return np.ascontiguousarray(frame)


def _count_or_none(n: float) -> int | None:
    """A container's frame count, or None where it is unknown or absurd (cv2 gives -1 or -2e14)."""
    return int(n) if math.isfinite(n) and 0 < n < 1e9 else None


class _OpenCVSource(_Source):
    def __init__(self, path: Path):
        cv2 = _import("cv2", "opencv-python-headless")
        self._cv2 = cv2
        self.decode_errors = (cv2.error,)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoError(f"{path}: cannot open (opencv): not a readable video container")
        # cv2 converts every frame to BGR by default (CAP_PROP_CONVERT_RGB); `_to_rgb` also takes
        # gray or BGRA frames in case a build or container hands those out.
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.frame_count = _count_or_none(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def frames(self) -> Iterator[np.ndarray]:
        cv2 = self._cv2
        while True:
            ok, frame = self._cap.read()
            if not ok:
                return
            if frame.ndim == 3 and frame.shape[2] == 3:  # the usual BGR frame: cv2's SIMD swap, ~10x numpy's
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            else:
                yield _to_rgb(frame, bgr=True)

    def close(self) -> None:
        self._cap.release()


class _PyAVSource(_Source):
    def __init__(self, path: Path):
        av = _import("av", "av")
        self.decode_errors = (av.error.FFmpegError,)
        try:
            self._container = av.open(str(path))
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: cannot open (pyav): {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{path}: cannot open (pyav): no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading: faster on MPEG-4 part 2, same on H.264
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        n = stream.frames
        if not n and stream.duration and stream.time_base and self.fps > 0:
            n = round(float(stream.duration * stream.time_base) * self.fps)  # estimate
        self.frame_count = _count_or_none(float(n or 0))
        self._stream = stream

    def frames(self) -> Iterator[np.ndarray]:
        for frame in self._container.decode(self._stream):
            yield frame.to_ndarray(format="rgb24")  # any pixel format (gray too) -> [H, W, 3]

    def close(self) -> None:
        self._container.close()


class _DecordSource(_Source):
    def __init__(self, path: Path, chunk_size: int):
        decord = _import("decord", "decord")
        self.decode_errors = (decord.DECORDError, RuntimeError)
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as e:
            raise VideoError(f"{path}: cannot open (decord): {e}") from e
        self.fps = float(self._vr.get_avg_fps())
        self.frame_count = _count_or_none(float(len(self._vr)))
        self._chunk_size = chunk_size

    def frames(self) -> Iterator[np.ndarray]:
        n = len(self._vr)
        for start in range(0, n, self._chunk_size):
            batch = self._vr.get_batch(list(range(start, min(start + self._chunk_size, n))))
            for frame in batch.asnumpy():  # [K, H, W, 3] RGB
                yield _to_rgb(frame, bgr=False)

    def close(self) -> None:
        self._vr = None


def _open_source(path: Path, backend: str, chunk_size: int) -> _Source:
    if backend == "opencv":
        return _OpenCVSource(path)
    if backend == "pyav":
        return _PyAVSource(path)
    if backend == "decord":
        return _DecordSource(path, chunk_size)
    raise ValueError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")


# --- the reader -------------------------------------------------------------------------------

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class VideoReader:
    """An opened video. Use `open_video()`; close it (or use `with`) to stop the decoder thread.

    Attributes:
        path: the video file.
        backend: "opencv", "pyav" or "decord".
        fps: frames per second (the container's, or 30.0 where it reports none).
        frame_count: the container's frame count: an estimate that can be wrong, None if unknown.
        size: (H, W) of the first frame; every later frame must match it.
        frames_read: frames delivered by the last complete pass of `iter_chunks()` (None before).
        chunks_decoded: chunks the decoder thread has produced in the current pass.
    """

    def __init__(self, path: Path, *, backend: str, chunk_size: int, max_queued: int):
        self.path, self.backend = path, backend
        self.chunk_size, self.max_queued = chunk_size, max_queued
        self.frames_read: int | None = None
        self.chunks_decoded = 0
        self._workers: list[tuple[threading.Thread, threading.Event, queue.Queue]] = []
        self._source: _Source | None = None
        self._source, self._frames, self._first = self._open_and_peek()
        self.size: tuple[int, int] = (int(self._first.shape[0]), int(self._first.shape[1]))
        self.frame_count = self._source.frame_count
        fps = self._source.fps
        if not (math.isfinite(fps) and fps > 0):
            log.warning("%s: container reports fps=%s; using %.1f", path, fps, DEFAULT_FPS)
            fps = DEFAULT_FPS
        self.fps = float(fps)

    def _open_and_peek(self) -> tuple[_Source, Iterator[np.ndarray], np.ndarray]:
        """Open the container and decode its first frame (the reader's reference size).

        The frame iterator is kept and continued by the worker: a fresh `decode()` generator
        would lose the frames PyAV's decoder has buffered.
        """
        source = _open_source(self.path, self.backend, self.chunk_size)
        frames = source.frames()
        try:
            first = next(frames, None)
        except source.decode_errors as e:
            source.close()
            raise VideoError(f"{self.path}: cannot decode the first frame ({self.backend}): {e}") from e
        if first is None:
            source.close()
            raise VideoError(f"{self.path}: no frames")
        return source, frames, first

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoReader({str(self.path)!r}, backend={self.backend!r}, size={self.size}, "
            f"fps={self.fps:g}, frame_count={self.frame_count})"
        )

    def close(self) -> None:
        """Stop any decoder thread and release the container. Safe to call twice."""
        for thread, stop, q in self._workers:
            _stop_worker(thread, stop, q)
        self._workers.clear()
        if self._source is not None:
            self._source.close()
            self._source = None

    def iter_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield `(start_index, frames uint8 [K, H, W, 3] RGB)` in order, K <= chunk_size.

        Each call decodes the video from the start (the first call reuses the frame decoded by
        `open_video`). An exception in the decoder thread is re-raised here (a `VideoError`
        for bad input, such as a mid-video size change). Breaking out of the loop (or closing
        the reader) stops the decoder thread.
        """
        if self._source is None:  # a second pass, or after close(): reopen
            self._source, self._frames, self._first = self._open_and_peek()
        source, frames, first = self._source, self._frames, self._first
        self._source = None  # the worker owns it now and closes it
        self.frames_read, self.chunks_decoded = None, 0
        q: queue.Queue = queue.Queue(maxsize=self.max_queued)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._decode, args=(source, frames, first, q, stop), daemon=True, name=f"decode:{self.path.name}"
        )
        self._workers.append((thread, stop, q))
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            _stop_worker(thread, stop, q)
            if (thread, stop, q) in self._workers:
                self._workers.remove((thread, stop, q))

    def _decode(
        self, source: _Source, frames: Iterator[np.ndarray], first: np.ndarray, q: queue.Queue, stop: threading.Event
    ) -> None:
        """Worker thread: decode into chunks and put them on `q`; always ends with _END or _Failure."""
        try:
            n = self._fill_queue(source, frames, first, q, stop)
            if n is not None:
                self.frames_read = n
                _put(q, _END, stop)
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, which re-raises it
            _put(q, _Failure(e), stop)
        finally:
            source.close()

    def _fill_queue(
        self, source: _Source, frames: Iterator[np.ndarray], first: np.ndarray, q: queue.Queue, stop: threading.Event
    ) -> int | None:
        """Decode all frames into chunks on `q`; return the frame count, None if stopped."""
        h, w = self.size
        buf = np.empty((self.chunk_size, h, w, 3), np.uint8)  # [K, H, W, 3]
        n, k, error = 0, 0, None
        frame: np.ndarray | None = first
        while frame is not None:
            if frame.shape[:2] != (h, w):
                raise VideoError(
                    f"{self.path}: frame {n} is {frame.shape[0]}x{frame.shape[1]} (HxW) "
                    f"but the earlier frames are {h}x{w}; a mid-video size change "
                    "is not supported"
                )
            buf[k] = frame
            n, k = n + 1, k + 1
            if k == self.chunk_size:
                if not _put(q, (n - k, buf), stop):
                    return None
                self.chunks_decoded += 1
                buf, k = np.empty_like(buf), 0  # the consumer owns the old buffer
            if stop.is_set():
                return None
            try:
                frame = next(frames, None)
            except source.decode_errors as e:  # after >= 1 frame: a truncated or damaged tail
                error, frame = e, None
        if k:
            if not _put(q, (n - k, buf[:k]), stop):
                return None
            self.chunks_decoded += 1
        expected = self.frame_count
        if error is not None or (expected is not None and n < expected):
            log.warning(
                "%s: decoded %d frames, the container reports %s%s",
                self.path,
                n,
                expected,
                f"; decoding stopped at an error: {error}" if error is not None else "",
            )
        return n


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` on the bounded queue unless the consumer has stopped; True if it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _stop_worker(thread: threading.Thread, stop: threading.Event, q: queue.Queue) -> None:
    stop.set()
    while thread.is_alive():
        try:  # drain, so a worker blocked on a full queue sees `stop` at once
            while True:
                q.get_nowait()
        except queue.Empty:
            pass
        thread.join(timeout=0.05)
        if not thread.is_alive():
            break
    # Drop anything put after the last drain (the queue object may outlive this call).
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def open_video(
    path: str | os.PathLike, *, backend: str = "opencv", chunk_size: int = 32, max_queued: int = 2
) -> VideoReader:
    """Open a video for chunked, streamed decoding.

    Args:
        path: the video file.
        backend: "opencv" (default), "pyav" or "decord".
        chunk_size: frames per chunk yielded by `iter_chunks()`.
        max_queued: chunks the decoder thread may decode ahead (2-4 is plenty).

    Returns:
        An open `VideoReader` (close it, or use it as a context manager).

    Raises:
        VideoError: the file is missing, a directory, unreadable, or has no frames.
        ImportError: the backend's package is not installed (the message names it).
        ValueError: an unknown backend or a chunk_size / max_queued below 1.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if chunk_size < 1 or max_queued < 1:
        raise ValueError(f"chunk_size and max_queued must be >= 1, got {chunk_size}, {max_queued}")
    p = Path(path)
    if p.is_dir():
        raise VideoError(f"{p}: cannot open: is a directory, not a video file")
    if not p.exists():
        raise VideoError(f"{p}: cannot open: no such file")
    return VideoReader(p, backend=backend, chunk_size=chunk_size, max_queued=max_queued)


def list_videos(source: str | os.PathLike | Sequence[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """The videos to process, from a folder, a list file, one video, or a sequence of paths.

    Args:
        source: a directory (its files with a video extension, case-insensitive, sorted); a
            video file (itself); any other file: a text list, one path per line (blank lines
            and `#` comments skipped; relative paths are relative to the list file's folder);
            or a Python sequence of paths.
        recursive: search the directory's subfolders too (e.g. Kinetics' per-class folders).

    Returns:
        The video paths, in order (sorted for a directory, as listed otherwise).

    Raises:
        VideoError: `source` does not exist, a directory holds no video, or listed paths are
            missing (one error naming all of them).
    """
    if not isinstance(source, (str, os.PathLike)):
        return _check_exist([Path(p) for p in source], "the given list")
    src = Path(source)
    if src.is_dir():
        pattern = "**/*" if recursive else "*"
        videos = sorted(p for p in src.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise VideoError(f"{src}: no video files ({' '.join(VIDEO_EXTENSIONS)}) in this folder")
        return videos
    if not src.exists():
        raise VideoError(f"{src}: no such file or folder")
    if src.suffix.lower() in VIDEO_EXTENSIONS:
        return [src]
    lines = src.read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines]
    paths = [src.parent / e for e in entries if e and not e.startswith("#")]
    return _check_exist(paths, str(src))


def _check_exist(paths: list[Path], where: str) -> list[Path]:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise VideoError(f"{where}: {len(missing)} of {len(paths)} listed videos not found: " + ", ".join(missing))
    return paths

"""The pipelined extraction engine behind `extract --workers N` (N >= 2): decode in N processes,
run the models in this one.

    worker processes (spawn)          main process
    open + decode a video, chunk by   claims, cache checks; per step, the chunks that arrived (one
    chunk, sent over its own pipe --> per worker) through detector + estimator, together on
                                      an accelerator (`VideoExtractor.add_chunks`, the device
                                      loop), heatmaps decoded in a thread; per finished video:
                                      tracking + record writing in another

Each worker decodes one video at a time and sends `chunk_size`-frame chunks over its own pipe,
one message per chunk (the first carries the video's size and fps, the last says so; a worker
holds one chunk back to know which is last). A pipe holds one chunk at most, so memory is
bounded by N x (the reader's read-ahead + 3) chunks, whatever the videos' lengths or count
(tests/pose_extraction/test_engine.py measures it on a 10,000-frame video). The models see the
same chunks, in the same order per video, as in the in-process path (`VideoExtractor.extract`).
With the models on an accelerator, the chunks of one step share the detector's and the top-down
estimator's forwards, so short videos and the tail chunks of long ones fill a batch, and the
heatmaps are decoded in a thread while the device runs the next batch; a crop's result does not
depend on its batch beyond float rounding (keypoints equal to 1e-4 px,
tests/pose_extraction/test_engine.py). On the CPU both are off (`SHARE_ON_CPU`: they gain
nothing there and measured slower), as they are for bottom-up and stand-in estimators and
keyframe detection (state per video): those records are the in-process path's, bit for bit.

Claims (`OUT/.claims/`), the cache checks, failure markers and counts are the in-process path's
(`jobs.begin_video` / `VideoJob`), held by this process. A worker that dies (killed, out of
memory) takes only its own pipe with it: its video is started again once in a new worker, and
fails with a clear error ("decode worker died") if that one dies too. Decoding errors (a corrupt
file, a mid-video frame size change) fail that video only.

The spawn start method (not fork): the main process holds torch, CUDA and threads, none of
which survive a fork; workers import only the video readers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from pose_extraction.jobs import begin_video

log = logging.getLogger(__name__)

MAX_WORKERS = 8
# Forwards shared across videos and the decode thread are for an accelerator, which they keep busy. On the CPU they
# gain nothing and cost: HRNet's batches of 64 crops ran 12-20% slower than two of 32 here (caches), and a decode
# thread competes with the network for the same cores. Tests turn them on to check those paths on the CPU.
SHARE_ON_CPU = False
WORKER_NICENESS = 5
_DIE_ENV = "RSA_EXTRACT_WORKER_DIE"  # tests: "<video stem>" (every attempt) or "<stem>@once"


class WorkerDiedError(RuntimeError):
    """A decode worker process ended while decoding the video (twice: the video is given up)."""


def default_workers() -> int:
    """This rank's share of the machine's CPUs (torchrun ranks share them) less one for the device loop, capped at
    `MAX_WORKERS`; below 2 that is 1, today's in-process path (on 2 cores the engine measured slower, bench/extract.py)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    spare = min(MAX_WORKERS, per_rank - 1)
    return spare if spare >= 2 else 1


# --- worker side ------------------------------------------------------------------------------


def _decode_worker(conn: Connection, reader: str, chunk_size: int) -> None:
    """Worker process: receive (job id, path, attempt), send per chunk ("chunk", id, start, shape, meta, last) and
    the chunk's frames' bytes, meta = (size, fps) on the first chunk and `last` on the final one, or ("error", id,
    type name, message); None ends the worker. One message per chunk (the final chunk is held back until the
    reader says it is the last), so the device loop receives one chunk per worker per step, in step across
    workers, and batches them together."""
    # One decoding thread per worker (the workers are the parallelism), at a lower priority than
    # the device loop: on a CPU-bound box the models' threads are not preempted by read-ahead.
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "threads;1")
    os.nice(WORKER_NICENESS)
    from pose_extraction.video import open_video

    with contextlib.suppress(ImportError):  # a PyAV- or decord-only environment
        import cv2

        cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    die = os.environ.get(_DIE_ENV, "")
    raw = socket.socket(fileno=os.dup(conn.fileno()))  # the pipe's socket, for unframed frame bytes

    def send(jid: int, start: int, chunk: np.ndarray, meta: tuple | None, last: bool) -> None:
        conn.send(("chunk", jid, start, chunk.shape, meta, last))
        raw.sendall(memoryview(np.ascontiguousarray(chunk)).cast("B"))  # the frames, unframed, after their header

    try:
        while (job := conn.recv()) is not None:
            jid, path, attempt = job
            try:
                with open_video(path, backend=reader, chunk_size=chunk_size) as video:
                    meta: tuple | None = (video.size, video.fps)
                    held = None
                    for start, chunk in video.iter_chunks():
                        if held is not None:
                            send(jid, *held, meta, False)
                            meta = None
                        held = (start, chunk)
                        if die in (Path(path).stem, f"{Path(path).stem}@once" if attempt == 0 else None):
                            os.kill(os.getpid(), signal.SIGKILL)
                    send(jid, *held, meta, True)  # open_video read a first frame: there is a chunk
            except Exception as exc:  # noqa: BLE001 -- the video's failure, reported by the main process
                conn.send(("error", jid, type(exc).__name__, str(exc)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the main process is gone: so is the work


# --- main side --------------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill `view` from `sock` (the kernel copies straight into it: multiprocessing's `recv_bytes_into` stages
    every message in a BytesIO, which cost the device loop 1.1 s per GB of frames here)."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("decode worker closed its pipe mid-chunk")
        got += n


@dataclass
class _Worker:
    process: Any
    conn: Connection
    raw: socket.socket  # the same pipe: the frames' bytes follow each chunk header unframed
    job: int | None = None  # the job id it is decoding


@dataclass
class _Active:
    job: Any  # jobs.VideoJob
    attempt: int = 0
    state: Any = None  # extract.VideoState once its first chunk arrived
    error: BaseException | None = None


class Engine:
    """Decode workers plus the in-process device loop; `run(videos)` extracts them (this shard)."""

    def __init__(
        self,
        extractor: Any,
        out: Path,
        *,
        workers: int,
        overwrite: bool,
        retry_failed: bool,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.extractor, self.out, self.n = extractor, out, workers
        self.overwrite, self.retry_failed = overwrite, retry_failed
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.active: dict[int, _Active] = {}
        self.queue: list[tuple[int, int]] = []  # (job id, attempt) waiting for a worker
        self.finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        self.decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.share = False  # run() decides: chunks of a step share forwards, heatmaps decode in `decoder`
        self.finishing: list[Future] = []
        self.counts: Counter = Counter()
        self.refused: list[str] = []
        self.busy: list[Path] = []

    def run(self, videos: Iterable[Path]) -> None:
        """Extract `videos` (a list, or a progress bar over one: it advances as videos are claimed, at most
        2 x workers ahead of the records written); counts, refused and busy videos are left on `self`."""
        self.share = SHARE_ON_CPU or not str(getattr(self.extractor.estimator, "device", "cpu")).startswith("cpu")
        if self.share:
            self.extractor.decoder = self.decoder  # top-down heatmaps decoded while the device runs the next batch
        try:
            todo = iter(videos)
            next_id = 0
            for _ in range(self.n):
                self.workers.append(self._spawn())
            while True:
                while len(self.active) < 2 * self.n:  # a claimed video per worker, and one waiting each
                    video = next(todo, None)
                    if video is None:
                        break
                    outcome, job = begin_video(
                        self.extractor,
                        video,
                        self.out,
                        overwrite=self.overwrite,
                        retry_failed=self.retry_failed,
                        wait=False,
                    )
                    if job is None:
                        self._count(outcome, video)
                        continue
                    self.active[next_id] = _Active(job)
                    self.queue.append((next_id, 0))
                    next_id += 1
                self._dispatch()
                if not self.active:
                    break
                self._step()
            for f in self.finishing:
                self.counts[f.result()] += 1
        finally:
            self._shutdown()

    def _count(self, outcome: Any, video: Path) -> None:
        if outcome == "busy":
            self.busy.append(video)
        elif isinstance(outcome, str):
            self.counts[outcome] += 1
        else:
            self.counts["refused"] += 1
            self.refused.append(outcome[1])

    def _spawn(self) -> _Worker:
        ours, theirs = self.ctx.Pipe(duplex=True)
        cfg = self.extractor.cfg
        p = self.ctx.Process(target=_decode_worker, args=(theirs, cfg.reader, cfg.chunk_size), daemon=True)
        p.start()
        theirs.close()
        return _Worker(p, ours, socket.socket(fileno=os.dup(ours.fileno())))

    def _dispatch(self) -> None:
        for w in self.workers:
            if w.job is None and self.queue:
                jid, attempt = self.queue.pop(0)
                self.active[jid].attempt = attempt
                w.job = jid
                w.conn.send((jid, str(self.active[jid].job.video), attempt))

    def _step(self) -> None:
        """Handle every message (or worker death) that is ready: the chunks that arrived together go through the
        models together (`VideoExtractor.add_chunks`: one detector and pose batch across videos)."""
        by_conn = {w.conn: w for w in self.workers}
        by_sentinel = {w.process.sentinel: w for w in self.workers}
        ready = wait([*by_conn, *by_sentinel], timeout=1.0)
        messages = []
        for r in ready:
            w = by_conn.get(r)
            if w is not None:
                try:
                    msg = w.conn.recv()
                    if msg[0] == "chunk":  # the frames follow, read straight into their array
                        frames = np.empty(msg[3], np.uint8)  # [K, H, W, 3]
                        _recv_exactly(w.raw, memoryview(frames).cast("B"))
                        msg = (*msg[:3], frames, *msg[4:])
                except (EOFError, OSError):
                    continue  # it died: its sentinel says so
                messages.append((w, msg))
        for _, msg in messages:  # a video's first chunk carries its size and fps
            if msg[0] == "chunk" and msg[4] is not None:
                a = self.active[msg[1]]
                a.state = self.extractor.start(a.job.video, size=msg[4][0], fps=msg[4][1])
        chunks = [(self.active[m[1]], m) for _, m in messages if m[0] == "chunk" and self.active[m[1]].error is None]
        groups = [chunks] if self.share else [[c] for c in chunks]
        for group in groups:
            if group:
                errors = self.extractor.add_chunks([(a.state, m[2], m[3]) for a, m in group])  # the device loop
                for (a, _), exc in zip(group, errors):
                    a.error = a.error or exc
        for w, msg in messages:
            if msg[0] == "error" or msg[5]:  # a failed or a finished video
                self._end(w, msg)
        for r in ready:
            w = by_sentinel.get(r)
            if w is not None and w in self.workers:
                self._replace(w)

    def _end(self, w: _Worker, msg: tuple) -> None:
        """The worker sent the video's last chunk or could not read it ("error"): finish it off the loop."""
        jid = msg[1]
        a = self.active.pop(jid)
        w.job = None
        if msg[0] == "error":
            a.error = a.error or DecodeError(msg[2], msg[3])
        self.finishing.append(self.finisher.submit(self._finish, a))
        for f in self.finishing:
            if f.done():
                f.result()  # an unwritable output folder stops the run here

    def _finish(self, a: _Active) -> str:
        """Off the device loop: tracking, the record write (or the failure marker), the claim."""
        try:
            if a.error is not None:
                return a.job.fail(a.error)
            try:
                rec = self.extractor.finish(a.state)
            except Exception as exc:  # noqa: BLE001 -- as in the in-process path
                return a.job.fail(exc)
            return a.job.write(rec)
        finally:
            a.job.release()

    def _replace(self, w: _Worker) -> None:
        """A worker died: start another; retry its video once, then fail it."""
        w.process.join()
        code = w.process.exitcode
        w.conn.close()
        w.raw.close()
        self.workers[self.workers.index(w)] = self._spawn()
        if w.job is None:
            return
        a = self.active[w.job]
        if a.attempt == 0:
            log.warning("%s: decode worker died (exit code %s); starting the video again", a.job.video.name, code)
            a.state, a.error = None, None
            self.queue.insert(0, (w.job, 1))
            return
        del self.active[w.job]
        a.error = WorkerDiedError(f"decode worker died twice while reading the video (exit code {code})")
        self.finishing.append(self.finisher.submit(self._finish, a))

    def _shutdown(self) -> None:
        for w in self.workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
            w.raw.close()
        self.finisher.shutdown(wait=True)
        self.extractor.decoder = None
        self.decoder.shutdown(wait=True)
        for a in self.active.values():  # left by an exception: give the claims back
            a.job.release()


class DecodeError(RuntimeError):
    """A worker's error reading a video; `description` names the worker's exception type."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.description = f"{type_name}: {message}"

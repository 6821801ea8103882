"""Frame sources: a video file, an image, a folder of images, a camera index or a stream URL (what OpenCV opens).

Decoding runs in its own thread and hands frames over through a bounded queue, so the detector and the student work
while the next frame decodes. A file source never drops a frame (the reader waits for room); a live source (camera,
stream) keeps only the newest frame, so a slow consumer sees fresh frames and latency stays bounded.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facetx.data.formats.io import IMAGE_EXTENSIONS
from facetx.errors import UserError
from facetx.pipeline.contracts import Frame

_STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_END = object()


class SourceError(UserError, ValueError):
    """A source that does not exist, does not open, or holds no frames."""


@dataclass(frozen=True)
class SourceInfo:
    """``kind``: video | image | folder | camera | stream; ``fps`` (None when unknown); ``frames``: the count when
    known (files), else None; ``live``: frames are dropped when the consumer falls behind."""

    name: str
    kind: str
    fps: float | None
    frames: int | None
    live: bool


def _kind(source: str | int) -> str:
    if isinstance(source, int) or (isinstance(source, str) and source.strip().isdigit()):
        return "camera"
    if str(source).lower().startswith(_STREAM_PREFIXES):
        return "stream"
    path = Path(str(source))
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    return "video"


def _rgb(image_bgr: np.ndarray) -> np.ndarray:
    if image_bgr.ndim == 2:
        return cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2RGB)
    if image_bgr.shape[2] == 4:
        return cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)


class FrameSource:
    """Iterate over :class:`Frame` s of ``source``; ``key`` names the config key in error messages.

    ``queue_size``: frames decoded ahead (files); ``max_frames``: stop after this many (None: all).
    """

    def __init__(
        self, source: str | int, queue_size: int = 4, max_frames: int | None = None, key: str = "source"
    ) -> None:
        self.key = key
        self.kind = _kind(source)
        self.source = int(source) if self.kind == "camera" else str(source)
        self.queue_size = max(1, int(queue_size))
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise SourceError(f"max_frames={max_frames}: expected a positive number of frames, or null (all)")
        self.max_frames = max_frames
        self._images: list[Path] = []
        self._cap: cv2.VideoCapture | None = None
        self.info = self._open()

    # -- opening ---------------------------------------------------------------------------------------------------

    def _open(self) -> SourceInfo:
        where = f"{self.key}={self.source}"
        if self.kind in ("image", "folder", "video") and not Path(str(self.source)).exists():
            raise SourceError(f"{where}: no such file or folder; expected a video, an image, a folder of images, a "
                              "camera index or a stream URL")  # fmt: skip
        if self.kind == "folder":
            self._images = sorted(p for p in Path(self.source).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not self._images:
                raise SourceError(f"{where}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            return SourceInfo(str(self.source), "folder", None, len(self._images), live=False)
        if self.kind == "image":
            self._images = [Path(self.source)]
            return SourceInfo(str(self.source), "image", None, 1, live=False)
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            what = "camera index that does not open" if self.kind == "camera" else "source OpenCV cannot open"
            raise SourceError(f"{where}: a {what}; expected a readable video, camera or stream")
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS) or None
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.kind == "video" else None
        count = count if count and count > 0 else None  # some containers report 0 or -1
        if self.kind == "video":
            ok, first = cap.read()
            if not ok or first is None:
                cap.release()
                raise SourceError(f"{where}: the video holds no frames (empty or unreadable); expected at least one")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        live = self.kind in ("camera", "stream")
        return SourceInfo(str(self.source), self.kind, float(fps) if fps else None, count or None, live)

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_images(self) -> Iterator[tuple[np.ndarray, float, float]]:
        for i, path in enumerate(self._images):
            t0 = time.perf_counter()
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if bgr is None:
                raise SourceError(f"{self.key}={path}: not a readable image")
            image = _rgb(bgr)
            yield image, float(i), (time.perf_counter() - t0) * 1e3

    def _read_capture(self) -> Iterator[tuple[np.ndarray, float, float]]:
        cap = self._cap
        assert cap is not None
        start = time.perf_counter()
        i = 0
        while True:
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok or bgr is None:
                return
            image = _rgb(bgr)
            ms = (time.perf_counter() - t0) * 1e3
            # files: the frame's place in the video (reproducible); live: when it arrived
            stamp = time.perf_counter() - start if self.info.live else i / (self.info.fps or 30.0)
            yield image, stamp, ms
            i += 1

    def _reader(self, out: queue.Queue, stop: threading.Event) -> None:
        try:
            frames = self._read_images() if self._images else self._read_capture()
            for index, (image, stamp, ms) in enumerate(itertools.islice(frames, self.max_frames)):
                if stop.is_set():
                    break
                frame = Frame(image, index, stamp, ms)
                if self.info.live:
                    try:  # keep only the newest frame: drop the one waiting
                        out.get_nowait()
                    except queue.Empty:
                        pass
                    out.put(frame)
                else:
                    while not stop.is_set():
                        try:
                            out.put(frame, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as e:  # handed to the consumer, which raises it in the main thread
            out.put(e)
        finally:
            out.put(_END)

    def __iter__(self) -> Iterator[Frame]:
        q: queue.Queue = queue.Queue(maxsize=1 if self.info.live else self.queue_size)
        stop = threading.Event()
        thread = threading.Thread(target=self._reader, args=(q, stop), name="facetx-decode", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            deadline = time.perf_counter() + 2.0  # a stalled camera read must not hold up an error or Ctrl-C
            while thread.is_alive() and time.perf_counter() < deadline:
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)
            if not thread.is_alive():
                self.close()  # else the daemon thread still reads from the capture: leave it to the process exit

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

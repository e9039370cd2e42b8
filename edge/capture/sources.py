"""Frame sources chosen by URI, like jetson-utils: file://, v4l2://, rtsp://, csi://.

Live sources are read by a grabber thread that keeps only the newest frame, so a slow
consumer drops frames instead of building lag. Files and image folders are read in order
(every frame) unless ``?realtime=1`` asks for live pacing at the clip's frame rate;
``?loop=1`` plays a clip again from the start when it ends (a kiosk showing a sample).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from ..core.config import ImagesConfig
from ..core.errors import ConfigError, ImageError, SourceError
from ..core.images import IMAGE_SUFFIXES, load_image

log = logging.getLogger(__name__)
Frame = Tuple[np.ndarray, float]  # BGR image, capture time (monotonic seconds)
LIVE_SCHEMES = ("v4l2", "csi", "rtsp", "rtsps")  # cameras and streams: lost, not ended
STREAM_TIMEOUT_MS = 5000


def _nothing() -> None:
    """The default keepalive."""


class Source:
    """Yields frames until the source ends; ``close`` releases it.

    A source that waits (for a frame, or to reopen) calls ``keepalive`` at least every
    half second from the consuming thread, and returns from ``frames`` soon after ``stop``.
    """

    uri: str = ""
    keepalive: Callable[[], None] = staticmethod(_nothing)
    online: Optional[bool] = True  # False while a live source is lost; None before it opens
    reconnects = 0
    reason = ""  # why it is offline
    rate: Optional[float] = None  # frames a second it delivers (None: as fast as read)
    live = False  # frames come at the source's pace, not the reader's: stale ones are dropped

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def stop(self) -> None:
        """Make ``frames`` return at its next wait (thread- and signal-safe)."""

    def close(self) -> None:
        """Release the device or file."""


def _unknown_scheme(uri: str) -> Optional[str]:
    """Why ``uri`` cannot be a source, when its scheme is not one we open."""
    scheme = urlsplit(uri).scheme
    if scheme in ("file",) + LIVE_SCHEMES:
        return None
    return f"{uri}: unknown source scheme {scheme!r} (file://, v4l2://, rtsp://, csi://)"


def check_uri(uri: str, key: str) -> str:
    """A source URI with a known scheme; else a ConfigError naming ``key``."""
    problem = _unknown_scheme(uri)
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return uri


def has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return any("GStreamer" in line and "YES" in line for line in info.splitlines())


def gstreamer_pipeline(uri: str, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The Jetson GStreamer pipeline for a csi:// or rtsp:// URI (hardware decode)."""
    tail = ("nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink drop=true max-buffers=1 sync=false")
    parts = urlsplit(uri)
    if parts.scheme == "csi":
        sensor = int(parts.netloc or parts.path.strip("/") or 0)
        return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},"
                f"height={height},framerate={fps}/1 ! {tail}")
    return (f"rtspsrc location={uri} latency=200 ! rtph264depay ! h264parse ! nvv4l2decoder ! "
            f"{tail}")


class _Capture(Source):
    """An OpenCV VideoCapture (file, V4L2, RTSP, GStreamer)."""

    def __init__(self, uri: str, target, api: int, loop: bool = False):
        self.uri = uri
        self.loop = loop
        # a stream that stops answering fails a read after this, instead of hanging it
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
        self.cap = cv2.VideoCapture(target, api, params)
        if not self.cap.isOpened():
            raise SourceError(f"{uri}: cannot open (unreadable video, or the device is "
                              "missing or busy)")
        self.fps = self.cap.get(cv2.CAP_PROP_FPS) or 30.0

    def read(self) -> Optional[np.ndarray]:
        ok, frame = self.cap.read()
        if not ok and self.loop and self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, frame = self.cap.read()
        return frame if ok and frame is not None else None

    def frames(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame, time.monotonic()

    def close(self) -> None:
        self.cap.release()


class LatestFrame(Source):
    """Reads a capture on a thread and hands out only the newest frame (drops the rest).

    With ``timeout``, no frame for that many seconds is a SourceError (a stalled stream).
    """

    live = True

    def __init__(self, capture: _Capture, pace: bool = False, timeout: float = 0.0):
        self.uri = capture.uri
        self.capture = capture
        self.rate = capture.fps
        self.pace = pace
        self.timeout = timeout
        self.dropped = 0
        self._frame: Optional[Frame] = None
        self._ended = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grab, name="grabber", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        period = 1.0 / self.capture.fps if self.pace else 0.0
        next_time = time.monotonic()
        while not self._stop.is_set():
            frame = self.capture.read()
            with self._cond:
                if frame is None:
                    self._ended = True
                    self._cond.notify_all()
                    return
                if self._frame is not None:
                    self.dropped += 1
                self._frame = (frame, time.monotonic())
                self._cond.notify_all()
            if period:
                next_time += period
                time.sleep(max(0.0, next_time - time.monotonic()))

    def frames(self) -> Iterator[Frame]:
        last = time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._frame is not None or self._ended, 0.5)
                frame, self._frame = self._frame, None
            if frame is not None:
                last = time.monotonic()
                yield frame
            elif self._ended:
                return
            elif self.timeout and time.monotonic() - last > self.timeout:
                raise SourceError(f"{self.uri}: no frame for {self.timeout:g} s")
            else:
                self.keepalive()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=STREAM_TIMEOUT_MS / 1000 + 1)
        if self._thread.is_alive():  # releasing under a blocked read would crash FFmpeg
            log.warning("%s: the reader is still blocked; leaving the capture open", self.uri)
            return
        self.capture.close()


class ImageFolder(Source):
    """Every image file in a folder, in name order, within ``limits`` (``config.images``).
    A FIFO among them is read like a file: the source waits for its writer."""

    def __init__(self, uri: str, folder: Path, limits: Optional[ImagesConfig] = None):
        self.uri = uri
        self.limits = limits
        self.files: List[Path] = sorted(p for p in folder.iterdir()
                                        if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{uri}: no images in {folder}")

    def frames(self) -> Iterator[Frame]:
        for path in self.files:
            try:
                yield load_image(path, limits=self.limits, allow_fifo=True), time.monotonic()
            except ImageError as exc:
                raise SourceError(f"{self.uri}: {exc}") from exc


def open_source(uri: str, timeout: float = 0.0, images: Optional[ImagesConfig] = None) -> Source:
    """Open a frame source from its URI; a live one fails after ``timeout`` s without a frame
    (0: it waits for ever). An image folder's files are read within ``images``."""
    problem = _unknown_scheme(uri)
    if problem:
        raise SourceError(problem)
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    realtime, loop = (query.get(key, ["0"])[0] in ("1", "true", "yes")
                      for key in ("realtime", "loop"))
    if parts.scheme == "file":
        path = Path(parts.netloc + parts.path)
        if path.is_dir():
            return ImageFolder(uri, path, images)
        if not path.is_file():
            raise SourceError(f"{uri}: no such file or folder")
        capture = _Capture(uri, str(path), cv2.CAP_ANY, loop)
        return LatestFrame(capture, pace=True) if realtime else capture
    if parts.scheme == "v4l2":
        return LatestFrame(_Capture(uri, parts.path or "/dev/video0", cv2.CAP_V4L2),
                           timeout=timeout)
    # csi://, rtsp://, rtsps://
    if parts.scheme == "csi" or "nvv4l2decoder" in _gst_elements():
        if not has_gstreamer():
            raise SourceError(f"{uri}: this OpenCV was built without GStreamer; on a Jetson "
                              "use JetPack's OpenCV, not the opencv-python wheel")
        return LatestFrame(_Capture(uri, gstreamer_pipeline(uri), cv2.CAP_GSTREAMER),
                           timeout=timeout)
    return LatestFrame(_Capture(uri, uri, cv2.CAP_FFMPEG), timeout=timeout)


def _gst_elements() -> str:
    """Names of GStreamer plugins on this machine ('' when gst-inspect is absent)."""
    import shutil
    import subprocess

    tool = shutil.which("gst-inspect-1.0")
    if not tool or not has_gstreamer():
        return ""
    try:
        return subprocess.run([tool, "nvv4l2decoder"], capture_output=True, text=True,
                              timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""

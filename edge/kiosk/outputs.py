"""Where the kiosk's frames go, chosen by URI like jetson-utils: display://0 (a full-screen
window), http://host:port/ (MJPEG page for a browser in kiosk mode), file://out.mp4."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..core.errors import ConfigError, OutputError
from .mjpeg import HttpLimits, MjpegServer

NO_KEY = -1


class Output:
    """Shows frames; ``show`` returns the key pressed (``NO_KEY`` when none)."""

    uri = ""
    closed = False  # the viewer went away (window closed)

    def show(self, frame: np.ndarray) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release the window, socket or file."""


class WindowOutput(Output):
    """An OpenCV window on X display N (``$DISPLAY`` when set), full screen if asked."""

    NAME = "jetkiosk"

    def __init__(self, uri: str, screen: int, fullscreen: bool):
        self.uri = uri
        os.environ.setdefault("DISPLAY", f":{screen}")
        gui = [line for line in cv2.getBuildInformation().splitlines() if "GUI:" in line]
        if gui and "NONE" in gui[0]:
            raise ConfigError(f"{uri}: this OpenCV has no GUI (a -headless build?); use "
                              "http://0.0.0.0:8080/ with a browser as the display")
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            if fullscreen:
                cv2.setWindowProperty(self.NAME, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
                size = screen_size(os.environ["DISPLAY"])
                if size:  # without a window manager, the property alone leaves it small
                    cv2.moveWindow(self.NAME, 0, 0)
                    cv2.resizeWindow(self.NAME, *size)
        except cv2.error as exc:
            raise OutputError(f"{uri}: cannot open a window on DISPLAY="
                              f"{os.environ['DISPLAY']} ({exc})") from exc
        self._shown = False

    def show(self, frame: np.ndarray) -> int:
        if self._shown and cv2.getWindowProperty(self.NAME, cv2.WND_PROP_VISIBLE) < 1:
            self.closed = True
            return NO_KEY
        cv2.imshow(self.NAME, frame)
        self._shown = True
        return cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(self.NAME)
        cv2.waitKey(1)


def screen_size(display: str) -> Optional[Tuple[int, int]]:
    """Width and height of ``display``'s default screen, asked of libX11 (None when it
    cannot be loaded or the display opened)."""
    name = ctypes.util.find_library("X11")
    if name is None:
        return None
    try:
        xlib = ctypes.CDLL(name)
    except OSError:
        return None
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for function in (xlib.XDefaultScreen, xlib.XCloseDisplay):
        function.argtypes = [ctypes.c_void_p]
    for function in (xlib.XDisplayWidth, xlib.XDisplayHeight):
        function.argtypes = [ctypes.c_void_p, ctypes.c_int]
    handle = xlib.XOpenDisplay(display.encode())
    if not handle:
        return None
    try:
        screen = xlib.XDefaultScreen(handle)
        return int(xlib.XDisplayWidth(handle, screen)), int(xlib.XDisplayHeight(handle, screen))
    finally:
        xlib.XCloseDisplay(handle)


class HttpOutput(Output):
    """An MJPEG page and stream for browsers, within ``limits`` (default: the kiosk.http_*
    defaults)."""

    def __init__(self, uri: str, host: str, port: int, quality: int,
                 limits: Optional[HttpLimits] = None):
        self.uri = uri
        self.host = host  # the address it listens on (0.0.0.0: every one)
        try:
            self.server = MjpegServer(host, port, quality, limits)
        except OSError as exc:
            raise ConfigError(f"{uri}: cannot listen on {host}:{port} ({exc})") from exc

    @property
    def port(self) -> int:
        return self.server.port

    def show(self, frame: np.ndarray) -> int:
        self.server.post(frame)
        return NO_KEY

    def close(self) -> None:
        self.server.close()


class VideoFileOutput(Output):
    """Writes the frames to a video file (size from the first frame)."""

    def __init__(self, uri: str, path: Path, fps: float = 30.0):
        self.uri = uri
        self.path = path
        self.fps = fps
        self.writer: Optional[cv2.VideoWriter] = None

    def show(self, frame: np.ndarray) -> int:
        if self.writer is None:
            fourcc = cv2.VideoWriter.fourcc(*("mp4v" if self.path.suffix == ".mp4" else "MJPG"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps,
                                          (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise OutputError(f"{self.uri}: cannot write a video there")
        self.writer.write(frame)
        return NO_KEY

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def open_output(uri: str, fullscreen: bool = True, jpeg_quality: int = 80,
                http: Optional[HttpLimits] = None) -> Output:
    """The output ``uri`` names; ``http``: the limits of an http:// one (HttpLimits.from_config
    of the kiosk settings; default: their defaults)."""
    parts = urlsplit(uri)
    if parts.scheme == "display":
        screen = parts.netloc or parts.path.strip("/") or "0"
        if not screen.isdigit():
            raise ConfigError(f"kiosk.output: {uri!r}: the display must be a number")
        return WindowOutput(uri, int(screen), fullscreen)
    if parts.scheme == "http":
        if not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"kiosk.jpeg_quality: must be 1 to 100, got {jpeg_quality}")
        try:
            port = parts.port if parts.port is not None else 8080
        except ValueError as exc:
            raise ConfigError(f"kiosk.output: {uri!r}: {exc}") from None
        return HttpOutput(uri, parts.hostname or "0.0.0.0", port, jpeg_quality, http)
    if parts.scheme == "file":
        return VideoFileOutput(uri, Path(parts.netloc + parts.path))
    raise ConfigError(f"kiosk.output: unknown output {uri!r} (display://0, "
                      "http://0.0.0.0:8080/, file://out.mp4)")


def output_uris(spec: str) -> List[str]:
    """The outputs named in ``kiosk.output`` (comma-separated)."""
    return [part.strip() for part in spec.split(",") if part.strip()]


def open_outputs(spec: str, fullscreen: bool = True, jpeg_quality: int = 80,
                 http: Optional[HttpLimits] = None) -> List[Output]:
    """Comma-separated output URIs; all of them are opened or none."""
    outputs: List[Output] = []
    try:
        for uri in output_uris(spec):
            outputs.append(open_output(uri, fullscreen, jpeg_quality, http))
    except Exception:
        for output in outputs:
            output.close()
        raise
    if not outputs:
        raise ConfigError("kiosk.output: no output given")
    return outputs

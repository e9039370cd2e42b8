"""MJPEG over HTTP: the kiosk display as a web page, for a browser in kiosk mode.

``/`` is a minimal full-screen page, ``/stream.mjpg`` the multipart JPEG stream,
``/snapshot.jpg`` the latest frame. Each client gets the newest frame when it is ready
for one (a slow client skips frames, it never delays the kiosk or other clients); a
frame is JPEG-encoded once, however many clients watch.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional, Tuple

import cv2
import numpy as np

log = logging.getLogger(__name__)

BOUNDARY = "jetkioskframe"
PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jetkiosk</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>html,body{margin:0;height:100%;background:#000;overflow:hidden}
img{width:100vw;height:100vh;object-fit:contain;display:block}</style></head>
<body><img id="stream" src="stream.mjpg" alt="jetkiosk"></body></html>
"""


class FrameBoard:
    """The newest frame, its JPEG made on first demand, and a condition to wait on."""

    def __init__(self, quality: int):
        self.quality = quality
        self._cond = threading.Condition()
        self._frame: Optional[np.ndarray] = None
        self._jpeg: Optional[bytes] = None
        self._seq = 0
        self.closed = False

    def post(self, frame: np.ndarray) -> None:
        with self._cond:
            self._frame, self._jpeg = frame, None
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, after: int, timeout: float) -> Tuple[int, Optional[bytes]]:
        """The first frame newer than sequence ``after`` (None on timeout or close)."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after or self.closed, timeout)
            if self._seq <= after or self.closed or self._frame is None:
                return after, None
            if self._jpeg is None:
                ok, buf = cv2.imencode(".jpg", self._frame,
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                self._jpeg = buf.tobytes() if ok else b""
            return self._seq, self._jpeg


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(PAGE, "text/html; charset=utf-8")
        elif path == "/snapshot.jpg":
            _, jpeg = self.server.board.wait(0, timeout=5.0)
            if jpeg is None:
                self.send_error(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
            else:
                self._send(jpeg, "image/jpeg")
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seq = 0
        board = self.server.board
        try:
            while not board.closed:
                seq, jpeg = board.wait(seq, timeout=1.0)
                if not jpeg:
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                self.wfile.write(jpeg)
                self.wfile.write(b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.debug("MJPEG client %s left", self.client_address[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    board: FrameBoard


class MjpegServer:
    """Serves posted frames on ``host:port`` (port 0: any free port, see ``.port``)."""

    def __init__(self, host: str, port: int, quality: int = 80):
        self.httpd = _Server((host, port), _Handler)
        self.httpd.board = FrameBoard(quality)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mjpeg",
                                        daemon=True)
        self._thread.start()

    def post(self, frame: np.ndarray) -> None:
        self.httpd.board.post(frame)

    def close(self) -> None:
        self.httpd.board.close()
        self.httpd.shutdown()
        self.httpd.server_close()

"""Snapshots (``kiosk.snapshots``): the frame as shown, as a JPEG kept in memory only, served
at an unguessable URL for ``kiosk.snapshot_ttl`` seconds, and that URL as a QR code drawn
on the screen for the person to fetch it with a phone.

Nothing is written to disk. A token is ``secrets.token_urlsafe(24)`` (192 random bits);
an unknown, guessed or expired token is a 404 exactly like a path that never existed. At
most ``MAX_SNAPSHOTS`` live at once (the oldest goes first), so taps cannot fill memory.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np
import segno

from ..core.errors import JetkioskError

PATH = "/snapshots/"  # a snapshot is served at PATH + token + ".jpg"
TOKEN_BYTES = 24  # 192 bits
MAX_SNAPSHOTS = 16
QR_CAPTION = "Scan for your picture"


class SnapshotError(JetkioskError):
    """No snapshot could be taken; ``status``: the HTTP status that says why."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.SERVICE_UNAVAILABLE):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Snapshot:
    """One snapshot: its token, JPEG and the monotonic time it expires at."""

    token: str
    jpeg: bytes
    expires: float

    @property
    def path(self) -> str:
        return f"{PATH}{self.token}.jpg"


class SnapshotStore:
    """Token -> JPEG, in memory, each for ``ttl`` seconds (any thread)."""

    def __init__(self, ttl: float, limit: int = MAX_SNAPSHOTS,
                 clock: Optional[Callable[[], float]] = None):
        if ttl <= 0:
            raise ValueError(f"snapshot ttl must be positive, got {ttl}")
        self.ttl = ttl
        self.limit = limit
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._items: "OrderedDict[str, Snapshot]" = OrderedDict()  # noqa: UP037 - 3.8

    def add(self, jpeg: bytes) -> Snapshot:
        snapshot = Snapshot(secrets.token_urlsafe(TOKEN_BYTES), jpeg, self._clock() + self.ttl)
        with self._lock:
            self._purge()
            self._items[snapshot.token] = snapshot
            while len(self._items) > self.limit:
                self._items.popitem(last=False)
        return snapshot

    def get(self, token: str) -> Optional[bytes]:
        """The JPEG under ``token`` while it lives, else None."""
        with self._lock:
            self._purge()
            snapshot = self._items.get(token)
        return snapshot.jpeg if snapshot is not None else None

    def lookup(self, path: str) -> Optional[bytes]:
        """The JPEG a request path names (``/snapshots/<token>.jpg``), else None."""
        if not path.startswith(PATH) or not path.endswith(".jpg"):
            return None
        return self.get(path[len(PATH):-len(".jpg")])

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._items)

    def _purge(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._items.items() if s.expires <= now]:
            del self._items[token]


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("the frame could not be encoded as JPEG")
    return buf.tobytes()


def lan_address() -> str:
    """This machine's address on its local network: the source address of its default
    route (a UDP socket is connected, nothing is sent); the host name's address, or
    127.0.0.1, without one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect(("10.255.255.255", 1))
        return str(sock.getsockname()[0])
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    finally:
        sock.close()


def reachable_host(address: Optional[str]) -> str:
    """The host for a snapshot URL: ``address`` (the local address a request came in on,
    or the address the server listens on) unless it is missing, a wildcard or loopback
    (a phone cannot reach the kiosk's own 127.0.0.1), then the LAN address."""
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return lan_address()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_loopback:
        return lan_address()
    if isinstance(ip, ipaddress.IPv6Address):
        return f"[{ip}]"
    return str(ip)


def snapshot_url(host: str, port: int, snapshot: Snapshot) -> str:
    """``host``: as ``reachable_host`` gives it (an IPv6 address in brackets)."""
    return f"http://{host}:{port}{snapshot.path}"


def qr_modules(text: str) -> np.ndarray:
    """``text`` as a QR code: a boolean matrix, True for a dark module, with the 4-module
    quiet zone."""
    matrix = np.array([list(row) for row in segno.make(text, error="m").matrix], bool)
    return np.pad(matrix, 4, constant_values=False)


def draw_qr(frame: np.ndarray, modules: np.ndarray, caption: str = QR_CAPTION) -> np.ndarray:
    """The QR code (``qr_modules``) in the bottom right corner of ``frame``, about 40% of its
    height, on white, whole pixels per module, with ``caption`` above it (in place)."""
    height, width = frame.shape[:2]
    side = modules.shape[0]
    cell = max(2, int(0.4 * min(height, width)) // side)
    size = side * cell
    if size > min(height, width):
        cell = max(1, min(height, width) // side)
        size = side * cell
    image = np.where(np.kron(modules, np.ones((cell, cell), bool))[..., None],
                     np.uint8(0), np.uint8(255))
    x, y = max(width - size - 8, 0), max(height - size - 8, 0)
    frame[y:y + size, x:x + size] = image
    scale = max(0.4, height / 900)
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = y - th - base - 8
    if top >= 0:
        left = max(0, x + size - tw - 8)
        cv2.rectangle(frame, (left, top), (min(width - 1, left + tw + 8), y), (255, 255, 255),
                      cv2.FILLED)
        cv2.putText(frame, caption, (left + 4, y - base - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), max(1, round(scale)), cv2.LINE_AA)
    return frame


class ShownQr:
    """The QR code of the newest snapshot, drawn on every frame until ``until``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._qr: Optional[Tuple[np.ndarray, float]] = None

    def show(self, url: str, until: float) -> None:
        modules = qr_modules(url)
        with self._lock:
            self._qr = (modules, until)

    def clear(self) -> None:
        with self._lock:
            self._qr = None

    def current(self, now: float) -> Optional[np.ndarray]:
        with self._lock:
            if self._qr is not None and now >= self._qr[1]:
                self._qr = None
            return self._qr[0] if self._qr is not None else None


def snapshot_result(url: str, snapshot: Snapshot, ttl: float) -> Dict[str, object]:
    """What a snapshot command or tap answers."""
    return {"url": url, "expires_in": round(ttl, 3), "bytes": len(snapshot.jpeg)}

"""The live stylization kiosk: camera -> style network -> display, one frame at a time.

Live sources hand over only their newest frame, so a slow network drops frames instead of
lagging. Styles change by key, by a rotation timer and from other threads (MQTT, the page).

Each frame goes through every filter first (the network, flicker control, colours, blend:
``Stylizer``); with the face path, each tracked face's luminance is blended back in
(``kiosk.face_keep``, ``face_keep.py``); then the frame is scaled to the display size;
overlays (face boxes and labels, a greeting, walk-up enrollment, the FPS text, a snapshot's
QR code) are drawn on that final frame only, never fed back into a filter: a filter's
history holds no overlay, so a moved or changed overlay leaves nothing behind.
"""

from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..capture.sources import Source
from ..core.config import KioskConfig
from ..core.errors import ConfigError, JetkioskError, SourceError
from ..service.sd_notify import Notifier
from .face_keep import keep_faces
from .faces import FacePath
from .outputs import NO_KEY, HttpOutput, Output
from .overlay import pixelate, scale_box
from .snapshots import (
    ShownQr,
    SnapshotError,
    SnapshotStore,
    draw_qr,
    encode_jpeg,
    reachable_host,
    snapshot_result,
    snapshot_url,
)
from .stylizer import Stylizer

log = logging.getLogger(__name__)

KEYS_HELP = ("n/space: next style, p: previous, 1-9: pick, f: FPS overlay, c: colours, "
             "e: enroll (y/n: agree/decline, n: cancel), s: snapshot (kiosk.snapshots), "
             "q/Esc: quit")


class FpsMeter:
    """Frames per second over a sliding window of recent frames."""

    def __init__(self, window: int = 30):
        self.times: List[float] = []
        self.window = window

    def tick(self) -> None:
        self.times = (self.times + [time.monotonic()])[-self.window:]

    @property
    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


class Kiosk:
    def __init__(self, config: KioskConfig, stylizer: Stylizer, outputs: List[Output],
                 rotation: List[str], faces: Optional[FacePath] = None):
        """``faces``: the face path, given each frame read and drawing on each frame shown."""
        if config.rotate_every < 0:
            raise ConfigError(f"kiosk.rotate_every: must be >= 0, got {config.rotate_every}")
        if not 0.0 <= config.face_keep <= 1.0:
            raise ConfigError(f"kiosk.face_keep: must be between 0 and 1, got "
                              f"{config.face_keep}")
        self.config = config
        self.stylizer = stylizer
        self.outputs = outputs
        self.rotation = rotation
        self.faces = faces
        self.overlay = config.fps_overlay
        self.meter = FpsMeter()
        self.stop = threading.Event()
        self.frames = 0
        self.listeners: List[Callable[[str], None]] = []
        self._next_rotation = 0.0
        self.notifier = Notifier()  # systemd: READY=1 and WATCHDOG=1 from this loop
        self._base_style = stylizer.style  # the style shown when no person's style applies
        self._person_style: Optional[str] = None  # the main person's style, while shown
        # the newest frame as shown, after every filter, with every overlay but the QR code
        self.final: Optional[np.ndarray] = None
        self.http = next((o for o in outputs if isinstance(o, HttpOutput)), None)
        self.snapshots: Optional[SnapshotStore] = None
        self.qr = ShownQr()
        if config.snapshots:
            if self.http is None:
                raise ConfigError("kiosk.snapshots: needs an http:// output in kiosk.output "
                                  "to serve them")
            self.snapshots = SnapshotStore(config.snapshot_ttl)
        # called with each camera frame (the page's thumbnails), and what it must hide
        self.on_frame: Optional[Callable[[np.ndarray, Callable[[np.ndarray], None]],
                                         Any]] = None

    def set_style(self, name: str) -> str:
        """Switch style (any thread); raises StyleError or ModelError and keeps the old one.
        While a recognised person's own style is shown, it is loaded and shown once they
        leave."""
        if self._person_style is None:
            self._base_style = self._show(name)
        else:
            self._base_style = self.stylizer.catalog.get(name).name
        return self._base_style

    def _show(self, name: str) -> str:
        name = self.stylizer.set_style(name)
        log.info("style: %s", name)
        for listener in self.listeners:
            listener(name)
        return name

    def follow_person_style(self) -> None:
        """While the largest recognised face is someone with a style of their own, show it;
        back to the kiosk's style when they leave."""
        wanted = self.faces.main_style() if self.faces is not None else None
        if wanted == self._person_style:
            return
        self._person_style = wanted
        try:
            self._show(wanted or self._base_style)
        except JetkioskError as exc:  # a style removed since it was stored
            log.warning("person's style %s not shown: %s", wanted, exc)

    def run(self, source: Source) -> int:
        """Show frames until the source ends, a viewer quits, or ``stop`` is set.

        Under systemd: READY=1 once the first frame is shown; WATCHDOG=1 every quarter of
        WatchdogSec, after frames and while the source waits (reopening a lost camera), and
        only while the face path keeps up too, so that a hung display or face path is
        restarted. A ``stop`` set while the source waits ends the wait."""
        self._next_rotation = time.monotonic() + self.config.rotate_every
        watchdog = self.notifier.watchdog_seconds
        pinged = -float("inf")

        def ping() -> None:
            nonlocal pinged
            if self.stop.is_set():
                source.stop()
            now = time.monotonic()
            if watchdog and now - pinged >= watchdog / 4 and (
                    self.faces is None or self.faces.alive(watchdog)):
                self.notifier.watchdog()
                pinged = now

        source.keepalive = ping
        for frame, _ in source.frames():
            if self.faces is not None:
                self.faces.post(frame)
            self.follow_person_style()
            styled = self.stylizer(frame)  # every filter
            self.final = self.compose(styled, frame)  # then the overlays, on the final frame
            shown = self.with_qr(self.final)
            for output in self.outputs:
                self.on_key(output.show(shown))
            if self.on_frame is not None:
                self.on_frame(frame, self.hide_unknown)
            self.meter.tick()
            self.frames += 1
            if self.frames == 1:
                self.notifier.ready(f"showing {source.uri}")
            ping()
            self.rotate_on_timer()
            if self.stop.is_set() or any(output.closed for output in self.outputs):
                break
        else:
            if self.frames == 0 and not self.stop.is_set():
                raise SourceError(f"{source.uri}: no frames")
            log.info("%s: the source ended after %d frames", source.uri, self.frames)
        return self.frames

    def compose(self, styled: np.ndarray, frame: Optional[np.ndarray] = None) -> np.ndarray:
        """``styled`` (through every filter) with the faces of ``frame`` (the camera frame it
        was made from) kept recognisable, at the display size, with the overlays drawn on a
        frame of its own: nothing drawn here reaches a filter's history."""
        if frame is not None:
            styled = self.keep_faces(styled, frame)
        size = self.display_size(styled.shape[1], styled.shape[0])
        shown = styled.copy() if size == (styled.shape[1], styled.shape[0]) else \
            cv2.resize(styled, size, interpolation=cv2.INTER_LINEAR)
        if self.faces is not None:
            self.faces.draw(shown)
        if self.overlay:
            text = f"{self.meter.fps:4.1f} fps  {self.stylizer.style}"
            scale = max(0.5, shown.shape[0] / 720)
            outlined_text(shown, text, (10, int(30 * scale)), scale)
        return shown

    def keep_faces(self, styled: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """With the face path and ``kiosk.face_keep`` > 0: each tracked face's luminance from
        ``frame`` blended back into a copy of ``styled`` (a feathered ellipse per box; see
        ``face_keep``); with ``kiosk.blur_unknown``, only faces recognised (the others are
        pixelated). Otherwise ``styled`` itself."""
        strength = self.config.face_keep
        if self.faces is None or strength <= 0.0:
            return styled
        tracked, size = self.faces.board.boxes()
        boxes = [box for box, decision in tracked
                 if not self.faces.blur or decision == "match"]
        if not boxes:
            return styled
        return keep_faces(styled.copy(), frame, boxes, size, strength)

    def with_qr(self, final: np.ndarray) -> np.ndarray:
        """``final`` with the newest snapshot's QR code while it is shown (on a copy: the
        snapshot is taken from ``final``)."""
        modules = self.qr.current(time.monotonic())
        return final if modules is None else draw_qr(final.copy(), modules)

    def hide_unknown(self, image: np.ndarray) -> None:
        """With ``kiosk.blur_unknown``: pixelate on ``image`` (any size) every face the
        screen pixelates (not recognised), as the face path last saw them."""
        if self.faces is None or not self.faces.blur:
            return
        labels, size = self.faces.board.labels()
        shape = (image.shape[1], image.shape[0])
        for label in labels:
            if label.decision != "match":
                pixelate(image, scale_box(label.box, size, shape))

    def take_snapshot(self, local: Optional[str] = None) -> Dict[str, Any]:
        """The frame as shown now (stylized, with its overlays, faces not recognised
        pixelated with kiosk.blur_unknown; not the QR code) as a JPEG in memory, served for
        kiosk.snapshot_ttl seconds at an unguessable URL whose QR code the screen then shows
        (any thread). ``local``: the address a page's request came in on, for the URL's
        host (else the http:// output's address, else the LAN address; never loopback).
        SnapshotError when snapshots are off or no frame was shown yet."""
        if self.snapshots is None or self.http is None:
            raise SnapshotError("snapshots are off (kiosk.snapshots)", HTTPStatus.NOT_FOUND)
        final = self.final
        if final is None:
            raise SnapshotError("no frame shown yet")
        snapshot = self.snapshots.add(encode_jpeg(final))
        ttl = self.config.snapshot_ttl
        url = snapshot_url(reachable_host(local or self.http.host), self.http.port, snapshot)
        qr_seconds = min(self.config.snapshot_qr_seconds or ttl, ttl)
        self.qr.show(url, time.monotonic() + qr_seconds)
        log.info("snapshot taken: %d bytes, served for %.0f s, its QR code shown for %.0f s",
                 len(snapshot.jpeg), ttl, qr_seconds)
        return snapshot_result(url, snapshot, ttl)

    def display_size(self, width: int, height: int) -> Tuple[int, int]:
        w, h = self.config.display_width, self.config.display_height
        if w and h:
            return w, h
        if w:
            return w, max(1, round(w * height / width))
        if h:
            return max(1, round(h * width / height)), h
        return width, height

    def on_key(self, key: int) -> None:
        if key == NO_KEY:
            return
        char = chr(key & 0xFF)
        if char in ("q", "\x1b"):
            self.stop.set()
        elif self.faces is not None and self.faces.enrollment.on_key(char):
            pass
        elif char in ("n", " "):
            self.step(1)
        elif char == "p":
            self.step(-1)
        elif char.isdigit() and 1 <= int(char) <= len(self.rotation):
            self.set_style(self.rotation[int(char) - 1])
        elif char == "f":
            self.overlay = not self.overlay
        elif char == "c":
            self.stylizer.colors = not self.stylizer.colors
        elif char == "s" and self.snapshots is not None:
            self.take_snapshot()

    def step(self, offset: int) -> None:
        current = self._base_style
        index = self.rotation.index(current) if current in self.rotation else -1
        self.set_style(self.rotation[(index + offset) % len(self.rotation)])

    def rotate_on_timer(self) -> None:
        if self.config.rotate_every > 0 and time.monotonic() >= self._next_rotation:
            self._next_rotation = time.monotonic() + self.config.rotate_every
            self.step(1)

    def close(self) -> None:
        for output in self.outputs:
            output.close()


def outlined_text(frame: np.ndarray, text: str, origin: Tuple[int, int], scale: float) -> None:
    """White ``text`` with a black outline around each stroke, in place. The outline is the
    white text's own mask grown, so it stays under the letters: OpenCV advances each
    glyph by its stroke thickness, and a thick black ``putText`` under a thin white one
    drifts right along the line into a dark second copy beside it."""
    thickness = max(1, round(scale))
    grow = max(1, round(1.5 * scale))
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x0, y0 = origin[0] - grow - 1, origin[1] - height - grow - 1
    mask = np.zeros((height + base + 2 * grow + 2, width + 2 * grow + 2), np.uint8)
    cv2.putText(mask, text, (grow + 1, height + grow + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                thickness, cv2.LINE_AA)
    ring = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                      (2 * grow + 1, 2 * grow + 1)))
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + mask.shape[1]), min(frame.shape[0], y0 + mask.shape[0])
    if fx1 <= fx0 or fy1 <= fy0:
        return
    window = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    dark = ring[window].astype(np.float32)[..., None] / 255.0
    light = mask[window].astype(np.float32)[..., None] / 255.0
    region *= 1.0 - dark
    region += light * (255.0 - region)
    frame[fy0:fy1, fx0:fx1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def rotation_list(spec: str, available: List[str]) -> List[str]:
    """``kiosk.rotation`` as names (empty: every available style)."""
    names = [n.strip() for n in spec.split(",") if n.strip()] or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"kiosk.rotation: unknown style(s) {', '.join(unknown)} "
                          f"(available: {', '.join(available)})")
    return names

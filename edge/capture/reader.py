"""A source read on a thread of its own, one frame at a time for whoever takes it.

A live source (camera, stream, a clip paced with ``?realtime=1``) keeps only its newest frame:
one the consumer has not taken yet is replaced (dropped). A clip or an image folder hands
each frame over and waits until it is taken, so that every frame is processed, in order.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from .sources import Frame, Source

KEEPALIVE = 0.5  # seconds: a waiting source calls keepalive at least this often


class FrameReader:
    """Reads ``source`` on a thread; ``take`` gets the frame waiting, if any. ``wake`` is set
    whenever a frame arrives or the source ends."""

    def __init__(self, source: Source, wake: threading.Event, name: str = ""):
        self.source = source
        self.wake = wake
        self.error: Optional[Exception] = None  # what ended the source, if not its end
        self.beat = time.monotonic()  # the reader's last sign of life
        self._frame: Optional[Frame] = None
        self._done = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"reader {name}", daemon=True)

    def start(self) -> FrameReader:
        self.source.keepalive = self._keepalive  # waiting, reopening: alive, not hung
        self._thread.start()
        return self

    def _keepalive(self) -> None:
        self.beat = time.monotonic()

    def _read(self) -> None:
        try:
            for frame in self.source.frames():
                with self._cond:
                    while self._frame is not None and not self.source.live and \
                            not self._stop.is_set():  # a clip waits for the loop: no drop
                        self._cond.wait(KEEPALIVE)
                        self._keepalive()
                    if self._stop.is_set():
                        return
                    self._frame = frame  # a live source's frame not taken yet is dropped
                    self._keepalive()
                self.wake.set()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, raised on its thread
            self.error = exc
        finally:
            with self._cond:
                self._done = True
            self.wake.set()

    def take(self) -> Optional[Frame]:
        """The frame waiting, if any (it is then the reader's no longer)."""
        with self._cond:
            frame, self._frame = self._frame, None
            self._cond.notify_all()
        return frame

    @property
    def finished(self) -> bool:
        """The source has ended (or failed) and its last frame has been taken."""
        with self._cond:
            return self._done and self._frame is None

    def alive(self, within: float) -> bool:
        """Delivered a frame, waited for the consumer or for the source (a live source
        between frames, one being reopened) within the last ``within`` seconds, or ended:
        False while it hangs inside a read."""
        return self._done or time.monotonic() - self.beat <= within

    def stop(self) -> None:
        """End the thread at its next wait (thread- and signal-safe)."""
        self._stop.set()
        self.source.stop()
        self.wake.set()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

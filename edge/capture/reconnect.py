"""A live source (camera, stream) that is reopened with backoff when it fails or ends."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Optional

from ..core.config import RunConfig
from ..core.errors import SourceError
from .sources import Frame, Source, open_source

log = logging.getLogger(__name__)

StateChange = Callable[[bool], None]  # online; the reason stays in ``reason``


class GaveUp(SourceError):
    """A live source still lost after ``run.retries`` reopenings."""


class ReconnectingSource(Source):
    """Opens ``uri`` and yields its frames; when it cannot be opened, fails, stalls for
    ``run.frame_timeout`` or ends, reports it offline and reopens it after
    ``run.reconnect_min`` seconds, doubling up to ``run.reconnect_max``. After
    ``run.retries`` failed reopenings in a row (0: never) it raises GaveUp."""

    live = True

    def __init__(self, uri: str, settings: RunConfig,
                 on_state: StateChange = lambda online: None,
                 opener: Callable[[str, float], Source] = open_source):
        self.uri = uri
        self.settings = settings
        self.on_state = on_state
        self.opener = opener
        self.online: Optional[bool] = None  # None until the first open or failure
        self.reason = ""
        self.reconnects = 0
        self._current: Optional[Source] = None
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        failures = 0
        while not self._stop.is_set():
            try:
                self._current = self.opener(self.uri, self.settings.frame_timeout)
                self._current.keepalive = self.keepalive
                for frame in self._current.frames():
                    if self.online is not True:
                        self._set(True, "")
                        failures = 0
                    yield frame
                reason = "the stream ended"
            except SourceError as exc:
                reason = str(exc)
            finally:
                if self._current is not None:
                    self._current.close()
                    self._current = None
            if self._stop.is_set():
                return
            failures += 1
            if self.online is not False:
                self._set(False, reason)
            if self.settings.retries and failures > self.settings.retries:
                raise GaveUp(f"{self.uri}: gave up after {self.settings.retries} "
                                  f"reopenings ({reason})")
            delay = min(self.settings.reconnect_min * 2 ** (failures - 1),
                        self.settings.reconnect_max)
            log.warning("%s: %s; reopening in %.1f s", self.uri, reason, delay)
            self._wait(delay)
            self.reconnects += 1

    def _set(self, online: bool, reason: str) -> None:
        self.online, self.reason = online, reason
        if online:
            log.log(logging.WARNING if self.reconnects else logging.INFO, "%s: online", self.uri)
        self.on_state(online)

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.wait(min(0.5, max(0.0, end - time.monotonic()))):
            self.keepalive()
            if time.monotonic() >= end:
                return

    @property
    def rate(self) -> Optional[float]:  # type: ignore[override]
        """The open source's rate (None while it is being reopened)."""
        current = self._current
        return current.rate if current is not None else None

    def stop(self) -> None:
        self._stop.set()
        current = self._current
        if current is not None:
            current.stop()

    def close(self) -> None:
        self.stop()

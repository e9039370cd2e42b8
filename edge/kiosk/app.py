"""Everything `jetkiosk kiosk` runs, built from the configuration: styles, the per-frame
stylizer, outputs, the kiosk loop, when ``kiosk.mqtt`` is on its MQTT remote, and when
``kiosk.faces`` is on the face path over the same frames."""

from __future__ import annotations

import logging
from typing import Callable, Optional
from urllib.parse import urlsplit

from ..capture.sources import Source
from ..core.config import Config
from ..core.errors import ConfigError, JetkioskError
from ..faces.analyzer import FaceAnalyzer
from ..faces.decisions import Matcher
from ..node.daemon import open_service_source, serve_until_stopped
from .catalog import BUNDLED, StyleCatalog
from .faces import FacePath, face_config
from .flicker import FlickerFilter
from .loop import Kiosk, rotation_list
from .mjpeg import HttpLimits
from .outputs import HttpOutput, open_outputs
from .page import KioskPage, Thumbnails
from .remote import KioskRemote
from .stylizer import Stylizer

log = logging.getLogger(__name__)


def kiosk_source(uri: str) -> str:
    """A clip plays at its own frame rate in the kiosk (``realtime=1`` unless given)."""
    parts = urlsplit(uri)
    if parts.scheme == "file" and "realtime=" not in parts.query:
        return uri + ("&" if parts.query else "?") + "realtime=1"
    return uri


class KioskService:
    source: Optional[Source] = None  # the kiosk's source, once `run` has opened it

    def __init__(self, config: Config, analyzer: Optional[FaceAnalyzer] = None,
                 load_matcher: Optional[Callable[[], Matcher]] = None):
        """``analyzer`` and ``load_matcher``: the face path's, needed with ``kiosk.faces``
        (loaded with ``faces.face_config(config)``)."""
        k = config.kiosk
        self.config = config
        self.catalog = StyleCatalog([config.models_dir, BUNDLED], config.models.backend, config)
        try:
            flicker = FlickerFilter(k.flicker, k.flicker_motion) if k.flicker > 0 else None
        except ValueError as exc:
            raise ConfigError(f"kiosk.flicker: {exc}") from None
        stylizer = Stylizer(self.catalog, k.style, k.width, k.blend, k.keep_colors, flicker,
                            k.canvas)
        rotation = rotation_list(k.rotation, self.catalog.names)
        self.faces: Optional[FacePath] = None
        if k.faces:
            if analyzer is None or load_matcher is None:
                raise ConfigError("kiosk.faces: the face path's models are not loaded")
            self.faces = FacePath(face_config(config), analyzer, load_matcher)
        try:
            outputs = open_outputs(k.output, k.fullscreen, k.jpeg_quality,
                                   HttpLimits.from_config(k))
        except JetkioskError:
            if self.faces is not None:
                self.faces.close()
            raise
        try:
            self.kiosk = Kiosk(k, stylizer, outputs, rotation, self.faces)
        except JetkioskError:
            for output in outputs:
                output.close()
            if self.faces is not None:
                self.faces.close()
            raise
        self.thumbnails = Thumbnails(self.catalog, rotation)
        for output in outputs:
            if isinstance(output, HttpOutput):  # the page: stream, style picker, snapshots
                output.server.routes = KioskPage(self.kiosk, self.thumbnails)
                self.kiosk.on_frame = self.thumbnails.update
        if self.faces is not None:
            self.faces.on_failure = self.kiosk.stop.set
        self.remote: Optional[KioskRemote] = None
        self._closed = False
        try:
            if k.mqtt:
                self.remote = KioskRemote(config, self.kiosk, self.catalog.names,
                                          self.faces.enrollment if self.faces else None)
        except JetkioskError:
            self.close()
            raise

    def run(self) -> int:
        """Frames shown until the source ends, the viewer quits or ``shutdown``; then the face
        path finishes its tracks and everything is closed (the outboxes flushed within
        ``mqtt.flush_timeout``, the node and camera published offline, the outputs
        finalised). A live source is reopened when lost (see ``open_service_source``); its
        availability goes to the face path's node, when there is one."""
        uri = self.config.kiosk.source or self.config.run.source
        try:
            if not uri:
                raise JetkioskError("kiosk: no source (give --source URI or set kiosk.source)")
            if self.remote is not None and not self.remote.start(self.config.mqtt.connect_timeout):
                log.warning("MQTT: %s; style commands work once it answers",
                            self.remote.link.last_error or "not connected yet")
            node = self.faces.runner.node if self.faces is not None else None
            self.source = source = open_service_source(
                kiosk_source(uri), self.config, node.camera_state if node else None)
            if self.kiosk.stop.is_set():  # a signal came while opening
                source.stop()
            if self.faces is not None:
                self.faces.tap.camera = source  # the node's stats and state: the camera's
                self.faces.start()
            try:
                frames = self.kiosk.run(source)
            finally:
                self.kiosk.notifier.stopping()
                source.close()
            if self.faces is not None:
                self.faces.finish()  # raises what stopped the face path (LinkFailed: exit 1)
            if self.remote is not None:
                self.remote.link.check()  # LinkFailed when the link gave up: exit 1
            return frames
        finally:
            self.close()

    def shutdown(self) -> None:
        """Stop at the next frame, or while the source waits; ``run`` then finishes (safe
        from signal handlers and other threads)."""
        self.kiosk.stop.set()
        if self.source is not None:
            self.source.stop()

    def reload(self) -> None:
        """With ``kiosk.faces``: the face path loads the gallery again between its frames,
        the display goes on; without it, nothing to reload."""
        if self.faces is not None:
            runner = self.faces.runner
            runner.loop.call_soon(runner.reloader)

    def serve(self) -> int:
        """``run`` as a service (main thread): SIGTERM and SIGINT ``shutdown``, SIGHUP
        ``reload``; 0, or 1 when a live source was given up (``run.retries``) so that
        systemd restarts the kiosk."""
        return serve_until_stopped(self.run, self.shutdown, self.reload)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.kiosk.close()
        if self.faces is not None:
            self.faces.close()
        if self.remote is not None:
            self.remote.close(self.config.mqtt.flush_timeout)
        self.catalog.close()

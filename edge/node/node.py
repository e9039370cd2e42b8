"""The face-verification node on MQTT: the capture loop wired to events, states, stats,
commands and Home Assistant discovery."""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Callable, Dict, Optional

import paho.mqtt.client as mqtt

from ..capture.sources import Source
from ..core.audit import AuditLog
from ..core.config import Config
from ..core.errors import GalleryError
from ..faces.decisions import Matcher
from ..faces.gallery import locked_update
from ..mqtt.commands import CommandError, CommandRouter
from ..mqtt.discovery import Discovery
from ..mqtt.link import OFFLINE, ONLINE
from ..mqtt.payloads import encode
from .loop import RECENT_DECISIONS, CaptureLoop
from .mqtt_sink import MqttSink
from .telemetry import Telemetry

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("jetkiosk")
    except metadata.PackageNotFoundError:
        return "unknown"


class Node:
    """Speaks MQTT for the capture loop: camera state, commands, discovery and stats over the
    link of ``sink``. It connects the link but owns nothing: ``daemon.Runner`` opens and
    closes the link, the outbox and the sinks."""

    def __init__(self, config: Config, loop: CaptureLoop, sink: MqttSink,
                 load_matcher: Callable[[], Matcher]):
        self.config = config
        self.load_matcher = load_matcher
        self.audit = AuditLog.from_config(config)
        self.cameras = [camera.name for camera in loop.cameras]
        self.topics = sink.topics
        self.link = sink.link
        self.mqtt_sink = sink
        sink.set_people(loop.matcher.names)
        self.loop = loop
        self.telemetry = Telemetry(self.loop, self.topics.node)
        self.commands = CommandRouter(self.link, self.topics, config.mqtt.max_command_bytes)
        self.commands.register("recognition", "enable", lambda c: self._recognition(True))
        self.commands.register("recognition", "disable", lambda c: self._recognition(False))
        self.commands.register("gallery", "reload", lambda c: self.reload())
        self.commands.register("gallery", "reject", self._reject)
        self._recognition(True)
        self.discovery: Optional[Discovery] = None
        if config.mqtt.discovery:
            self.discovery = Discovery(self.topics, config.mqtt.discovery_prefix,
                                       config.mqtt.presence_expire_after, _version())
            self.link.subscribe(self.discovery.status_topic, self._on_ha_status)
            self._announce(loop.matcher)
        if config.mqtt.stats_interval > 0:
            self.link.every(config.mqtt.stats_interval, self.publish_stats)
        self.link.on_failure(self.loop.shutdown)  # the link gave up: stop; run() raises

    def start(self) -> Node:
        """Connect; an unreachable broker is not fatal (events wait in the outbox), bad
        credentials or certificates are (MqttError)."""
        self.link.start()
        if not self.link.wait_connected(self.config.mqtt.connect_timeout):
            log.warning("MQTT: %s; events are kept in the outbox until it answers",
                        self.link.last_error or "not connected yet")
        return self

    def run(self, *sources: Source) -> int:
        """The capture loop over one source per camera, with each camera's availability
        published around it."""
        for name, source in zip(self.cameras, sources):
            if source.online:
                self.camera_state(True, name)
        try:
            frames = self.loop.run(*sources)
        finally:
            for name in self.cameras:
                self.camera_state(False, name)
        self.link.check()  # LinkFailed when the link gave up: `run` exits 1 (systemd restarts)
        return frames

    def camera_state(self, online: bool, camera: Optional[str] = None) -> None:
        """A camera's availability (default: the first, a kiosk's only one), retained on
        ``<prefix>/<camera>/availability``."""
        self.link.set_state(self.topics.camera_availability(camera or self.cameras[0]),
                            ONLINE if online else OFFLINE)

    def reload(self) -> Dict[str, Any]:
        """Load the gallery file again; the loop switches at its next frame."""
        old = set(self.loop.matcher.names)
        try:
            matcher = self.load_matcher()
        except Exception as exc:
            raise CommandError(f"gallery not reloaded, the old one stays in use: {exc}") from exc
        self.loop.matcher = matcher
        new = set(matcher.names)
        self.mqtt_sink.set_people(new)
        self._announce(matcher)
        return {"people": len(new), "added": sorted(new - old), "removed": sorted(old - new)}

    def _reject(self, command: Dict[str, Any]) -> Dict[str, Any]:
        """``gallery reject``: the encoding a recent event was decided on is not ``name``;
        stored in the gallery file (never a photo), then the gallery is reloaded."""
        if "name" not in command or "event_id" not in command:
            raise CommandError("reject needs name and event_id")
        encoding = self.loop.decided_encoding(command["event_id"])
        if encoding is None:
            raise CommandError(f"event {command['event_id']} is not among this node's last "
                               f"{RECENT_DECISIONS} decisions")
        manifest = self.loop.analyzer.encoder_manifest
        try:
            with locked_update(self.config.gallery_path, manifest.fingerprint,
                               manifest.legacy_fingerprint, self.config.gallery) as gallery:
                count = gallery.reject(command["name"], encoding)
        except GalleryError as exc:
            raise CommandError(str(exc)) from None
        self.audit.note("reject", name=command["name"], rejections=count,
                        event_id=command["event_id"], source="mqtt")
        return {"name": command["name"], "rejections": count, **self.reload()}

    def outbox_figures(self) -> Dict[str, int]:
        return self.link.figures()

    def publish_stats(self) -> None:
        self.link.set_state(self.topics.stats,
                            encode(self.telemetry.snapshot(self.outbox_figures())), qos=0)

    def _recognition(self, on: bool) -> Dict[str, Any]:
        (self.loop.recognition.set if on else self.loop.recognition.clear)()
        self.link.set_state(self.topics.recognition_state, b"ON" if on else b"OFF")
        return {"recognition": on}

    def _announce(self, matcher: Matcher) -> None:
        if self.discovery is not None:
            self.link.set_state(self.discovery.topic,
                                self.discovery.message(self.cameras, matcher.names))

    def _on_ha_status(self, message: mqtt.MQTTMessage) -> None:
        if message.payload == b"online":
            log.info("Home Assistant is online: discovery sent again")
            self._announce(self.loop.matcher)

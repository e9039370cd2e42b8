"""MQTT topic names under one prefix (default ``jetkiosk/<node>``)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from ..core.config import MqttConfig
from ..core.errors import ConfigError

COMMAND_TARGETS = ("recognition", "gallery", "style")


def slug(text: str) -> str:
    """A topic- and entity-id-safe form of a name: ``Grace Hopper`` -> ``grace_hopper``."""
    value = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return value or "_"


def check_level(value: str, key: str) -> str:
    """A single topic level: not empty, no wildcards or separators."""
    if not value or any(c in value for c in "/+#\0"):
        raise ConfigError(f"{key}: {value!r} cannot be an MQTT topic level "
                          "(empty, or has / + # in it)")
    return value


def _prefix(config: MqttConfig, node: str) -> str:
    return config.prefix.replace("{node}", node).strip("/")


def every_node(config: MqttConfig) -> str:
    """The filter for everything nodes publish under ``mqtt.prefix``: one node's when
    ``mqtt.node`` is set, else every node's (``+`` in place of the node)."""
    return f"{_prefix(config, config.node or '+')}/#"


@dataclass(frozen=True)
class Topics:
    prefix: str
    node: str

    @classmethod
    def from_config(cls, config: MqttConfig) -> Topics:
        node = check_level(config.node or slug(socket.gethostname()), "mqtt.node")
        prefix = _prefix(config, node)
        if not prefix or any(c in prefix for c in "+#\0") or "//" in prefix:
            raise ConfigError(f"mqtt.prefix: {config.prefix!r} is not a valid topic prefix")
        return cls(prefix, node)

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def response(self) -> str:
        return f"{self.prefix}/response"

    @property
    def recognition_state(self) -> str:
        return f"{self.prefix}/recognition/state"

    @property
    def kiosk_availability(self) -> str:
        return f"{self.prefix}/kiosk/availability"

    @property
    def style_state(self) -> str:
        return f"{self.prefix}/style/state"

    def camera_availability(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/availability"

    def events(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/faces/events"

    def count(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/faces/count"

    def crop(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/faces/crop"

    def person(self, name: str) -> str:
        return f"{self.prefix}/person/{slug(name)}/state"

    def command(self, target: str) -> str:
        return f"{self.prefix}/{target}/set"

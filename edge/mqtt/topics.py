"""MQTT names: topics under one prefix (default ``jetkiosk/<node>``), and the rules every
topic, topic filter and level we publish, subscribe to or answer on must follow."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Optional, Tuple

import paho.mqtt.client as mqtt

from ..core.config import MqttConfig
from ..core.errors import ConfigError

COMMAND_TARGETS = ("recognition", "gallery", "style", "enroll", "snapshot")
MAX_TOPIC_BYTES = 65535  # MQTT's limit on a UTF-8 string
MAX_RESPONSE_TOPIC_BYTES = 1024  # a requester's reply topic: far more than any real one


def slug(text: str) -> str:
    """A topic- and entity-id-safe form of a name: ``Grace Hopper`` -> ``grace_hopper``."""
    value = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return value or "_"


def text_problem(value: str, limit: int = MAX_TOPIC_BYTES) -> Optional[str]:
    """Why ``value`` cannot be an MQTT string (a topic, filter or client id), or None:
    empty, not encodable as UTF-8, a NUL, or over ``limit`` bytes."""
    if not value:
        return "is empty"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\0" in value:
        return "contains NUL"
    if size > limit:
        return f"is {size} bytes long (limit {limit})"
    return None


def topic_problem(topic: str, limit: int = MAX_TOPIC_BYTES) -> Optional[str]:
    """Why ``topic`` cannot be published to, or None (see ``text_problem``; no wildcards)."""
    if "+" in topic or "#" in topic:
        return "contains a wildcard (+ or #)"
    return text_problem(topic, limit)


def filter_problem(topic_filter: str) -> Optional[str]:
    """Why ``topic_filter`` cannot be subscribed to, or None: ``+`` and ``#`` only as whole
    levels, ``#`` only last."""
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if level not in ("+", "#") and ("+" in level or "#" in level):
            return f"has a wildcard inside the level {level!r}"
        if level == "#" and i != len(levels) - 1:
            return "has # before its last level"
    return text_problem(topic_filter)


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest; neither matches ``$`` topics at
    the first level)."""
    return mqtt.topic_matches_sub(topic_filter, topic)


def check_level(value: str, key: str) -> str:
    """A single topic level: not empty, no wildcards or separators."""
    if "/" in value or topic_problem(value) is not None:
        raise ConfigError(f"{key}: {value!r} cannot be an MQTT topic level "
                          "(empty, or has / + # in it)")
    return value


def _prefix(config: MqttConfig, node: str) -> str:
    return config.prefix.replace("{node}", node).strip("/")


def _check_prefix(value: str, key: str, shown: Optional[str] = None) -> str:
    if "//" in value or topic_problem(value) is not None:
        raise ConfigError(f"{key}: {shown or value!r} is not a valid topic prefix")
    return value


def every_node(config: MqttConfig) -> str:
    """The filter for everything nodes publish under ``mqtt.prefix``: one node's when
    ``mqtt.node`` is set, else every node's (``+`` in place of the node)."""
    return f"{_prefix(config, config.node or '+')}/#"


@dataclass(frozen=True)
class Topics:
    prefix: str
    node: str
    responses: Tuple[str, ...] = ()  # filters an MQTT 5 response topic must match

    @classmethod
    def from_config(cls, config: MqttConfig) -> Topics:
        """Every name ``[mqtt]`` turns into a topic or filter, checked: the node, the prefix,
        ``mqtt.response_prefixes`` and, with discovery, ``mqtt.discovery_prefix``."""
        node = check_level(config.node or slug(socket.gethostname()), "mqtt.node")
        prefix = _check_prefix(_prefix(config, node), "mqtt.prefix", config.prefix)
        responses = tuple(part.strip().replace("{prefix}", prefix)
                          for part in config.response_prefixes.split(",") if part.strip())
        for topic_filter in responses:
            why = filter_problem(topic_filter)
            if why:
                raise ConfigError(f"mqtt.response_prefixes: {topic_filter!r} {why}")
        if config.discovery:
            _check_prefix(config.discovery_prefix, "mqtt.discovery_prefix")
        return cls(prefix, node, responses)

    def response_problem(self, topic: str) -> Optional[str]:
        """Why a command's MQTT 5 response topic is refused, or None."""
        why = topic_problem(topic, MAX_RESPONSE_TOPIC_BYTES)
        if why is None and not any(matches(f, topic) for f in self.responses):
            why = ("matches none of mqtt.response_prefixes "
                   f"({', '.join(self.responses) or 'empty: none allowed'})")
        return why

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

    @property
    def enroll_state(self) -> str:
        return f"{self.prefix}/enroll/state"

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

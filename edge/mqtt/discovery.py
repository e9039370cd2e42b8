"""Home Assistant MQTT discovery: one retained device message with all entities.

Entities: an event entity per camera (recognized / unknown / uncertain / spoof /
not_verified_live, with the liveness decision and score), a presence sensor per enrolled
person (with ``expire_after``), a recognition switch, a reload-gallery button and diagnostic
sensors from ``stats``. A person who was removed gets a component with only
its platform, which is how Home Assistant's device discovery removes an entity.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Set

from .topics import Topics, slug

EVENT_TYPES = ["recognized", "unknown", "uncertain", "spoof", "not_verified_live"]
EVENT_TEMPLATE = (
    "{% if value_json.event != 'end' %}{{ {'event_type': 'recognized' if value_json.decision "
    "== 'match' else value_json.decision, 'name': value_json.name, 'distance': "
    "value_json.distance, 'track_id': value_json.track_id, 'live': value_json.live.decision, "
    "'live_score': value_json.live.score} | tojson }}{% endif %}"
)
DIAGNOSTICS = {  # key: (name, template, unit)
    "fps": ("Frames per second", "{{ value_json.fps }}", "fps"),
    "detect_ms": ("Detection latency", "{{ value_json.latency_ms.detect | default(0) }}", "ms"),
    "embed_ms": ("Encoding latency", "{{ value_json.latency_ms.embed | default(0) }}", "ms"),
    "outbox": ("Outbox depth", "{{ value_json.outbox.depth }}", None),
    "dropped": ("Events dropped", "{{ value_json.outbox.dropped }}", None),
}


class Discovery:
    """Builds the device discovery message; remembers people to remove."""

    def __init__(self, topics: Topics, prefix: str, expire_after: int, version: str):
        self.topics = topics
        self.topic = f"{prefix}/device/jetkiosk_{topics.node}/config"
        self.status_topic = f"{prefix}/status"
        self.expire_after = expire_after
        self.version = version
        self.removed: Set[str] = set()
        self._people: Set[str] = set()

    def message(self, cameras: Iterable[str], people: Iterable[str]) -> bytes:
        people = set(people)
        self.removed = (self.removed | (self._people - people)) - people
        self._people = people
        node = self.topics.node
        components: Dict[str, Dict[str, Any]] = {}
        for camera in cameras:
            components[f"{node}_{slug(camera)}_faces"] = {
                "p": "event", "name": f"{camera} faces",
                "unique_id": f"jetkiosk_{node}_{slug(camera)}_faces",
                "event_types": EVENT_TYPES,
                "state_topic": self.topics.events(camera), "value_template": EVENT_TEMPLATE,
            }
        for name in sorted(people):
            components[self._person_id(name)] = {
                "p": "binary_sensor", "device_class": "presence", "name": f"{name} present",
                "unique_id": f"jetkiosk_{node}_person_{slug(name)}",
                "state_topic": self.topics.person(name),
                "value_template": "{{ 'ON' if value_json.present else 'OFF' }}",
                "json_attributes_topic": self.topics.person(name),
                "expire_after": self.expire_after,
            }
        for name in sorted(self.removed):
            components[self._person_id(name)] = {"p": "binary_sensor"}
        components[f"{node}_recognition"] = {
            "p": "switch", "name": "Recognition", "unique_id": f"jetkiosk_{node}_recognition",
            "command_topic": self.topics.command("recognition"),
            "state_topic": self.topics.recognition_state,
            "payload_on": '{"action":"enable"}', "payload_off": '{"action":"disable"}',
            "state_on": "ON", "state_off": "OFF",
        }
        components[f"{node}_reload"] = {
            "p": "button", "name": "Reload gallery", "unique_id": f"jetkiosk_{node}_reload",
            "command_topic": self.topics.command("gallery"),
            "payload_press": '{"action":"reload"}', "entity_category": "config",
        }
        for key, (label, template, unit) in DIAGNOSTICS.items():
            components[f"{node}_{key}"] = {
                "p": "sensor", "name": label, "unique_id": f"jetkiosk_{node}_{key}",
                "state_topic": self.topics.stats, "value_template": template,
                "entity_category": "diagnostic", "state_class": "measurement",
                **({"unit_of_measurement": unit} if unit else {}),
            }
        return json.dumps({
            "device": {"identifiers": [f"jetkiosk_{node}"], "name": f"jetkiosk {node}",
                       "manufacturer": "jetkiosk", "model": "face verification kiosk",
                       "sw_version": self.version},
            "origin": {"name": "jetkiosk", "sw_version": self.version},
            "availability_topic": self.topics.availability,
            "qos": 1,
            "components": components,
        }, sort_keys=True).encode()

    def _person_id(self, name: str) -> str:
        return f"{self.topics.node}_person_{slug(name)}"

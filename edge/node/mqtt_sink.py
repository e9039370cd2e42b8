"""The MQTT sink: face events through the outbox, plus person states, counts and crops.

Events (``<camera>/faces/events``) must not be lost: they go through the persistent outbox.
Person states and face counts are retained latest values; crops are best effort and never
stored on disk (raw pictures are not kept). The link is not the sink's: closing the sink
leaves it to its owner (``daemon.Runner``), who flushes it after the last event.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterable, Optional, Set, Tuple

import cv2
import numpy as np
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..mqtt.link import MqttLink
from ..mqtt.payloads import encode, face_count, person_state
from ..mqtt.topics import Topics
from .sinks import Sink


class MqttSink(Sink):
    """Publishes face events and the states derived from them."""

    def __init__(self, link: MqttLink, topics: Topics, crops: bool = False,
                 presence_refresh: float = 30.0):
        self.link = link
        self.topics = topics
        self.wants_crops = crops
        self._lock = threading.Lock()
        self._live: Dict[Tuple[str, int], Dict[str, Any]] = {}  # (camera, track) -> last event
        self._counts: Dict[str, Tuple[int, int, Tuple[str, ...]]] = {}
        self._people: Optional[Set[str]] = None  # the gallery's; None: anyone matched
        if presence_refresh > 0:
            link.every(presence_refresh, self.refresh_presence)

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        camera = event["camera"]
        self.link.put(self.topics.events(camera), encode(event))
        key = (camera, event["track_id"])
        with self._lock:
            previous = self._live.pop(key, None)
            if event["event"] != "end":
                self._live[key] = event
            touched = {e["name"] for e in (event, previous) if e and e["decision"] == "match"}
            for name in touched:
                self._publish_person(name, event)
            self._publish_count(camera)
        if crop is not None and event["event"] != "end":
            self._publish_crop(camera, event, crop)

    def refresh_presence(self) -> None:
        """Keep present people's states fresh (Home Assistant's ``expire_after``)."""
        with self._lock:
            now = time.time()
            for event in self._live.values():
                if event["decision"] == "match" and self._enrolled(event["name"]):
                    self.link.set_state(self.topics.person(event["name"]), encode(person_state(
                        event["name"], True, now, event["camera"], event["distance"])))

    def set_people(self, names: Iterable[str]) -> None:
        """The people in the gallery now: someone no longer among them has their retained
        state cleared, and no state is published for them again, even when a track still
        carries their name from before."""
        names = set(names)
        with self._lock:
            gone = (self._people or set()) - names
            self._people = names
            for name in sorted(gone):
                self.link.set_state(self.topics.person(name), b"")

    def _enrolled(self, name: str) -> bool:
        return self._people is None or name in self._people

    def _publish_person(self, name: str, event: Dict[str, Any]) -> None:
        if not self._enrolled(name):
            return
        live = [e for e in self._live.values() if e["decision"] == "match" and e["name"] == name]
        latest = live[-1] if live else event
        self.link.set_state(self.topics.person(name), encode(person_state(
            name, bool(live), time.time(), latest["camera"], latest["distance"])))

    def _publish_count(self, camera: str) -> None:
        payload = face_count(camera, (e for (c, _), e in self._live.items() if c == camera))
        key = (payload["known"], payload["unknown"], tuple(payload["people"]))
        if self._counts.get(camera) != key:
            self._counts[camera] = key
            self.link.set_state(self.topics.count(camera), encode(payload))

    def _publish_crop(self, camera: str, event: Dict[str, Any], crop: np.ndarray) -> None:
        ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return
        props = None
        if self.link.settings.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("event_id", event["event_id"]),
                                  ("track_id", str(event["track_id"]))]
            props.ContentType = "image/jpeg"
        self.link.send(self.topics.crop(camera), jpeg.tobytes(), qos=0, properties=props)

"""``jetkiosk listen``: a subscriber that prints what nodes publish, as it arrives."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set

import paho.mqtt.client as mqtt

from ..core.config import MqttConfig
from .client import (
    BrokerSettings,
    MqttError,
    connect_or_explain,
    describe_refusal,
    make_client,
)


def _clock(stamp: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "--:--:--"


def _distance(p: Dict[str, Any]) -> str:
    if p.get("distance") is None:
        return ""
    return f", d={p['distance']:.3f}" + (f" / {p['threshold']:.3f}" if p.get("threshold") else "")


def describe(topic: str, payload: Any) -> str:
    """One human-readable line for a message."""
    if not isinstance(payload, dict):
        return f"{topic}: {payload}"
    if topic.endswith("/faces/events"):
        who = payload["name"] or "unknown face"
        return (f"{_clock(payload['timestamp'])} {payload['camera']} {payload['event']:<6} "
                f"track {payload['track_id']}: {who} ({payload['decision']}{_distance(payload)})")
    if "/person/" in topic:
        state = "present" if payload["present"] else "gone"
        return f"{_clock(payload['last_seen'])} {payload['name']} {state} ({payload['camera']})"
    if topic.endswith("/faces/count"):
        return (f"{_clock(payload['timestamp'])} {payload['camera']} faces: {payload['faces']} "
                f"({payload['known']} known{': ' if payload['people'] else ''}"
                f"{', '.join(payload['people'])}; {payload['unknown']} unknown)")
    if topic.endswith("/stats"):
        box = payload["outbox"]
        return (f"{_clock(payload['timestamp'])} {payload['node']} {payload['fps']:.1f} fps, "
                f"outbox {box['depth']} (dropped {box['dropped']}), {payload['backend']}")
    if topic.endswith("/response"):
        verdict = "ok" if payload["ok"] else f"refused: {payload['error']}"
        return f"{_clock(payload['timestamp'])} reply to {payload['target']}: {verdict}"
    return f"{topic}: {json.dumps(payload, sort_keys=True)}"


def decode(payload: bytes) -> Any:
    """JSON when it is JSON, text when it is text, a size for binary (face crops)."""
    try:
        return json.loads(payload)
    except ValueError:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(payload)} bytes>"


def listen(config: MqttConfig, topic_filter: str, emit: Callable[[str, Any, bool], None],
           count: int = 0, timeout: float = 0.0, session: Optional[str] = None,
           stop: Optional[threading.Event] = None) -> int:
    """Print messages on ``topic_filter`` until ``count`` arrived, ``timeout`` passed or
    ``stop`` is set.

    Events are de-duplicated by ``event_id`` (QoS 1 may deliver one twice). ``session``
    names a persistent session, so events published while the listener was away arrive
    when it comes back. Returns the number of messages printed.
    """
    settings = BrokerSettings.from_config(config)
    client = make_client(settings, session or "", persistent=bool(session))
    seen: Set[str] = set()
    printed = [0]
    error: List[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            error.append(describe_refusal(reason_code, settings))
            client.disconnect()
            return
        client.subscribe(topic_filter, qos=1)

    def on_message(client, userdata, message):
        payload = decode(message.payload)
        if isinstance(payload, dict) and "event_id" in payload:
            if payload["event_id"] in seen:
                return
            seen.add(payload["event_id"])
        emit(message.topic, payload, bool(message.retain))
        printed[0] += 1

    client.on_connect, client.on_message = on_connect, on_message
    connect_or_explain(client, settings, persistent=bool(session))
    deadline = time.monotonic() + timeout if timeout else None
    while deadline is None or time.monotonic() < deadline:
        if count and printed[0] >= count or error or stop is not None and stop.is_set():
            break
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS and not error:
            time.sleep(1.0)  # the broker went away: keep trying until it is back
            try:
                client.reconnect()
            except OSError:
                pass
    client.disconnect()
    if error:
        raise MqttError(error[0])
    return printed[0]

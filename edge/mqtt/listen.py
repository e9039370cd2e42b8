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

PREVIEW = 48  # bytes of a payload shown raw
MAX_NESTING = 32  # deeper JSON is shown raw
JSON_TOPICS = ("/faces/events", "/faces/count", "/stats", "/response", "/style/state")


def _preview(data: bytes) -> str:
    return f"<{len(data)} bytes: {data[:PREVIEW]!r}{'...' if len(data) > PREVIEW else ''}>"


class Binary(str):
    """A payload that is not text (a face crop), as its size and first bytes: a string, so
    that ``--json`` prints it too."""


def _nesting(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def _clock(stamp: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "--:--:--"


def _distance(p: Dict[str, Any]) -> str:
    if p.get("distance") is None:
        return ""
    return f", d={p['distance']:.3f}" + (f" / {p['threshold']:.3f}" if p.get("threshold") else "")


def _line(topic: str, payload: Dict[str, Any]) -> str:
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


def _raw(topic: str, payload: Any, why: str) -> str:
    """A message shown as it came (its size and first bytes), with why it is not shown
    readably."""
    if not isinstance(payload, Binary):
        text = payload if isinstance(payload, str) else json.dumps(
            payload, separators=(",", ":"), default=str)
        payload = _preview(text.encode("utf-8", "backslashreplace"))
    return f"{topic}: unexpected payload ({why}): {payload}"


def describe(topic: str, payload: Any) -> str:
    """One human-readable line for a message (``payload`` from ``decode``); never fails: a
    payload of the wrong shape for its topic is shown raw: its size and first bytes."""
    if not isinstance(payload, dict):
        if payload != "" and (topic.endswith(JSON_TOPICS) or "/person/" in topic):
            return _raw(topic, payload, "not a JSON object")
        return f"{topic}: {payload}"
    try:
        return _line(topic, payload)
    except Exception as exc:  # noqa: BLE001 - missing keys, wrong types: shown raw
        return _raw(topic, payload, f"{exc.__class__.__name__}: {exc}")


def decode(payload: bytes) -> Any:
    """JSON when it is JSON (nested at most ``MAX_NESTING`` deep), text when it is text,
    else ``Binary`` (face crops)."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        pass
    else:
        if _nesting(value) <= MAX_NESTING:
            return value
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return Binary(_preview(payload))


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
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        if isinstance(event_id, str):
            if event_id in seen:
                return
            seen.add(event_id)
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

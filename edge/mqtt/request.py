"""One command to a running node over MQTT and its reply (``jetkiosk gallery reject --event``),
then, if asked, what it publishes until it is done (``jetkiosk enroll --kiosk``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import paho.mqtt.client as mqtt

from ..core.config import MqttConfig
from ..core.errors import JetkioskError
from .client import (
    BrokerSettings,
    MqttError,
    connect_or_explain,
    describe_refusal,
    make_client,
)
from .topics import Topics


def send_command(config: MqttConfig, target: str, command: Dict[str, Any],
                 timeout: float = 10.0, follow: Optional[str] = None,
                 until: Callable[[Dict[str, Any]], bool] = lambda message: True,
                 follow_timeout: float = 0.0) -> Dict[str, Any]:
    """Publish ``command`` on ``<prefix>/<target>/set`` and wait for the node's reply on
    ``<prefix>/response`` (matched by a fresh ``request_id``). A refusal is an error.

    ``follow``: a topic (under the prefix) subscribed to before the command is sent; after
    the reply, each JSON object on it goes to ``until`` until it returns True, for at most
    ``follow_timeout`` s (JetkioskError after that)."""
    settings = BrokerSettings.from_config(config)
    topics = Topics.from_config(config)
    request = {**command, "request_id": uuid.uuid4().hex}
    replies: List[Dict[str, Any]] = []
    followed: List[Dict[str, Any]] = []
    errors: List[str] = []
    watched = f"{topics.prefix}/{follow}" if follow else None
    client = make_client(settings, "")

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            errors.append(describe_refusal(reason_code, settings))
            return
        client.subscribe([(t, 1) for t in (topics.response, watched) if t])

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        client.publish(topics.command(target), json.dumps(request), qos=1)

    def on_message(client, userdata, message):
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if message.topic == watched:
            followed.append(payload)
        elif payload.get("request_id") == request["request_id"]:
            replies.append(payload)

    def wait(done: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not done() and not errors and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise MqttError(f"{settings.address}: the connection was lost")

    ended: List[bool] = []

    def finished() -> bool:
        while followed and not ended:
            if until(followed.pop(0)):
                ended.append(True)
        return bool(ended)

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    connect_or_explain(client, settings)
    try:
        wait(lambda: bool(replies), timeout)
        reply = _checked(replies, errors, topics, timeout)
        if watched:
            wait(finished, follow_timeout)
            if not errors and not finished():
                raise JetkioskError(f"{watched}: no end within {follow_timeout:g} s")
    finally:
        client.disconnect()
    if errors:
        raise MqttError(errors[0])
    return reply


def _checked(replies: List[Dict[str, Any]], errors: List[str], topics: Topics,
             timeout: float) -> Dict[str, Any]:
    """The reply's result; an error for a refusal, no reply or a refused connection."""
    if errors:
        raise MqttError(errors[0])
    if not replies:
        raise JetkioskError(f"no reply from node {topics.node} within {timeout:g} s "
                            f"(is it running, with MQTT on, on this broker?)")
    if not replies[0]["ok"]:
        raise JetkioskError(f"node {topics.node} refused: {replies[0]['error']}")
    return replies[0]["result"] or {}

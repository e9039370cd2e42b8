"""One command to a running node over MQTT, and its reply (``jetkiosk gallery reject --event``)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Dict, List

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
                 timeout: float = 10.0) -> Dict[str, Any]:
    """Publish ``command`` on ``<prefix>/<target>/set`` and wait for the node's reply on
    ``<prefix>/response`` (matched by a fresh ``request_id``). A refusal is an error."""
    settings = BrokerSettings.from_config(config)
    topics = Topics.from_config(config)
    request = {**command, "request_id": uuid.uuid4().hex}
    replies: List[Dict[str, Any]] = []
    errors: List[str] = []
    client = make_client(settings, "")

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            errors.append(describe_refusal(reason_code, settings))
            return
        client.subscribe(topics.response, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        client.publish(topics.command(target), json.dumps(request), qos=1)

    def on_message(client, userdata, message):
        try:
            reply = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(reply, dict) and reply.get("request_id") == request["request_id"]:
            replies.append(reply)

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message
    connect_or_explain(client, settings)
    deadline = time.monotonic() + timeout
    try:
        while not replies and not errors and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise MqttError(f"{settings.address}: the connection was lost")
    finally:
        client.disconnect()
    if errors:
        raise MqttError(errors[0])
    if not replies:
        raise JetkioskError(f"no reply from node {topics.node} within {timeout:g} s "
                            f"(is `jetkiosk run` running with the mqtt sink?)")
    if not replies[0]["ok"]:
        raise JetkioskError(f"node {topics.node} refused: {replies[0]['error']}")
    return replies[0]["result"] or {}

"""Commands on ``<prefix>/<target>/set``: strictly checked, answered, never fatal.

A command is a JSON object no larger than ``mqtt.max_command_bytes`` that matches
``schemas/command.schema.json`` and names an action allowed for its target. Anything else
gets an error reply (on ``<prefix>/response``, or the MQTT 5 response topic of the request)
and changes nothing. An MQTT 5 response topic is checked before anything is sent to it
(``Topics.response_problem``: no wildcards or NUL, at most 1 KiB, matching
``mqtt.response_prefixes``); a command whose response topic is refused is refused, with the
reason on ``<prefix>/response``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, Optional, Tuple

import fastjsonschema
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from ..core.errors import JetkioskError
from .link import MqttLink, reply_properties
from .payloads import encode, response, validator
from .topics import Topics

log = logging.getLogger(__name__)

Action = Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]


class CommandError(JetkioskError):
    """A command that was refused; the message goes back in the reply."""


def _shown(text: str, limit: int = 64) -> str:
    """``text`` quoted for a reply or a log line, cut to ``limit`` characters."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


class CommandRouter:
    """Subscribes to each target's ``set`` topic and runs allow-listed actions."""

    def __init__(self, link: MqttLink, topics: Topics, max_bytes: int):
        self.link = link
        self.topics = topics
        self.max_bytes = max_bytes
        self.actions: Dict[Tuple[str, str], Action] = {}
        self.handled = 0
        self.refused = 0

    def register(self, target: str, action: str, run: Action) -> None:
        """Allow ``action`` on ``target``; ``run(command)`` returns the reply's result."""
        if not any((t == target) for t, _ in self.actions):
            topic = self.topics.command(target)
            self.link.subscribe(topic, lambda message: self.handle(target, message))
        self.actions[(target, action)] = run

    def handle(self, target: str, message: mqtt.MQTTMessage) -> None:
        """Decode, check and run one command; every outcome gets a reply."""
        command: Dict[str, Any] = {}
        topic: Optional[str] = None
        props: Optional[Properties] = None
        try:
            topic, props = reply_properties(message)
            refused = None if topic is None else self.topics.response_problem(topic)
            if topic is not None and refused:  # checked first: nothing is sent there
                refused, topic = f"response topic {_shown(topic)} {refused}", None
            command = self._decode(bytes(message.payload))
            if refused:
                raise CommandError(refused)
            self._check(target, command)
            result = self.actions[(target, command["action"])](command)
        except CommandError as exc:
            self.refused += 1
            log.warning("command on %s refused: %s", message.topic, exc)
            self._reply(topic, props, target, command, ok=False, error=str(exc))
            return
        except Exception as exc:  # the action failed: say so, keep running
            self.refused += 1
            log.exception("command on %s failed", message.topic)
            self._reply(topic, props, target, command, ok=False,
                        error=f"{command.get('action')} failed: {exc}")
            return
        self.handled += 1
        log.info("command on %s: %s done", message.topic, command["action"])
        self._reply(topic, props, target, command, ok=True, result=result)

    def _decode(self, payload: bytes) -> Dict[str, Any]:
        if len(payload) > self.max_bytes:
            raise CommandError(f"command is {len(payload)} bytes; the limit is {self.max_bytes}")
        try:
            command = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandError(f"command is not valid UTF-8 JSON ({exc})") from None
        except RecursionError:
            raise CommandError("command is not valid UTF-8 JSON (nested too deeply)") from None
        if not isinstance(command, dict):
            raise CommandError("command must be a JSON object")
        return command

    def _check(self, target: str, command: Dict[str, Any]) -> None:
        try:
            validator("command")(command)
        except fastjsonschema.JsonSchemaException as exc:
            raise CommandError(f"invalid command: {exc}") from None
        allowed = sorted(a for t, a in self.actions if t == target)
        if command["action"] not in allowed:
            raise CommandError(f"action {command['action']!r} is not allowed on {target} "
                               f"(allowed: {', '.join(allowed)})")

    def _reply(self, topic: Optional[str], props: Optional[Properties], target: str,
               command: Dict[str, Any], ok: bool, error: Optional[str] = None,
               result: Optional[Dict[str, Any]] = None) -> None:
        # A refused command's id and action are echoed only when they are well formed.
        request_id = command.get("request_id")
        if not isinstance(request_id, str) or len(request_id) > 64:
            request_id = None
        action = command.get("action")
        payload = encode(response(target, action if isinstance(action, str) else None,
                                  request_id, ok, error, result))
        self.link.send(topic or self.topics.response, payload, qos=1, properties=props)

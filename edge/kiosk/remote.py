"""The kiosk on MQTT: ``<prefix>/style/set`` commands and the retained ``style/state``;
with the face path, walk-up enrollment: ``<prefix>/enroll/set`` (start with a name,
accept, cancel) and each of its steps on ``<prefix>/enroll/state``; with
``kiosk.snapshots``, ``<prefix>/snapshot/set`` (action ``take``: its reply's result is the
snapshot's URL, schemas/snapshot_result.schema.json).

The kiosk has its own connection (client id ``<id>-kiosk``, availability on
``<prefix>/kiosk/availability``) beside the face-verification node's, and nothing to
keep: its outbox lives in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..core.config import Config
from ..core.errors import JetkioskError
from ..faces.events import SCHEMA_VERSION
from ..mqtt.commands import CommandError, CommandRouter
from ..mqtt.link import link_from_config
from ..mqtt.outbox import Outbox
from ..mqtt.payloads import encode
from ..mqtt.topics import Topics
from .enrollment import EnrollmentError, WalkUpEnrollment
from .loop import Kiosk


class KioskRemote:
    def __init__(self, config: Config, kiosk: Kiosk, styles: list,
                 enrollment: Optional[WalkUpEnrollment] = None):
        self.kiosk = kiosk
        self.styles = styles
        self.topics = Topics.from_config(config.mqtt)
        self.link = link_from_config(config.mqtt, self.topics, Outbox(Path(":memory:")),
                                     self.topics.kiosk_availability, role="kiosk")
        self.commands = CommandRouter(self.link, self.topics, config.mqtt.max_command_bytes)
        self.commands.register("style", "set", self._set)
        if kiosk.snapshots is not None:
            self.commands.register("snapshot", "take", self._snapshot)
        if enrollment is not None:
            self._enrollment(enrollment)
        kiosk.listeners.append(lambda name: self.publish_state())
        if config.mqtt.stats_interval > 0:
            self.link.every(config.mqtt.stats_interval, self.publish_state)
        self.link.on_failure(kiosk.stop.set)  # the link gave up: stop; the app raises
        self.publish_state()

    def start(self, timeout: float) -> bool:
        """Connect; False (not fatal) when the broker does not answer within ``timeout``."""
        return self.link.start().wait_connected(timeout)

    def _set(self, command: Dict[str, Any]) -> Dict[str, Any]:
        if "style" not in command:
            raise CommandError("style/set needs \"style\": one of " + ", ".join(self.styles))
        try:
            return {"style": self.kiosk.set_style(command["style"])}
        except JetkioskError as exc:
            raise CommandError(str(exc)) from exc

    def _snapshot(self, command: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return self.kiosk.take_snapshot()
        except JetkioskError as exc:
            raise CommandError(str(exc)) from exc

    def _enrollment(self, enrollment: WalkUpEnrollment) -> None:
        def run(action: Callable[..., Dict[str, Any]], *args: Any) -> Dict[str, Any]:
            try:
                return action(*args)
            except EnrollmentError as exc:
                raise CommandError(str(exc)) from None

        self.commands.register("enroll", "start",
                               lambda c: run(enrollment.start, c.get("name")))
        self.commands.register("enroll", "accept", lambda c: run(enrollment.accept))
        self.commands.register("enroll", "cancel", lambda c: run(enrollment.cancel))
        enrollment.announce = self.publish_enrollment

    def publish_enrollment(self, state: Dict[str, Any]) -> None:
        """Each step of a walk-up enrollment (not retained: a step is news, not a state)."""
        payload = {"schema": SCHEMA_VERSION, "timestamp": round(time.time(), 3), **state}
        self.link.send(self.topics.enroll_state, encode(payload), qos=1)

    def publish_state(self) -> None:
        state = {"schema": SCHEMA_VERSION, "timestamp": round(time.time(), 3),
                 "style": self.kiosk.stylizer.style, "styles": self.styles,
                 "fps": round(self.kiosk.meter.fps, 2), "frames": self.kiosk.frames}
        self.link.set_state(self.topics.style_state, encode(state))

    def close(self, flush_timeout: float) -> None:
        self.link.close(flush_timeout)

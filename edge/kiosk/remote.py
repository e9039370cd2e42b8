"""The kiosk on MQTT: ``<prefix>/style/set`` commands and the retained ``style/state``.

The kiosk has its own connection (client id ``<id>-kiosk``, availability on
``<prefix>/kiosk/availability``) beside the face-verification node's, and nothing to
keep: its outbox lives in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict

from ..core.config import Config
from ..core.errors import JetkioskError
from ..faces.events import SCHEMA_VERSION
from ..mqtt.commands import CommandError, CommandRouter
from ..mqtt.link import link_from_config
from ..mqtt.outbox import Outbox
from ..mqtt.payloads import encode
from ..mqtt.topics import Topics
from .loop import Kiosk


class KioskRemote:
    def __init__(self, config: Config, kiosk: Kiosk, styles: list):
        self.kiosk = kiosk
        self.styles = styles
        self.topics = Topics.from_config(config.mqtt)
        self.link = link_from_config(config.mqtt, self.topics, Outbox(Path(":memory:")),
                                     self.topics.kiosk_availability, role="kiosk")
        self.commands = CommandRouter(self.link, self.topics, config.mqtt.max_command_bytes)
        self.commands.register("style", "set", self._set)
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

    def publish_state(self) -> None:
        state = {"schema": SCHEMA_VERSION, "timestamp": round(time.time(), 3),
                 "style": self.kiosk.stylizer.style, "styles": self.styles,
                 "fps": round(self.kiosk.meter.fps, 2), "frames": self.kiosk.frames}
        self.link.set_state(self.topics.style_state, encode(state))

    def close(self, flush_timeout: float) -> None:
        self.link.close(flush_timeout)

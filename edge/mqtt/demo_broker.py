"""The demo's broker: the one at ``mqtt.broker`` when it answers, else an embedded amqtt.

amqtt is a maintained pure-Python broker; it is only for the demo (a Jetson uses Mosquitto).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from typing import Any, Optional

from ..core.errors import JetkioskError, missing_extra
from .client import BrokerSettings


def answers(settings: BrokerSettings, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at the broker's address."""
    try:
        socket.create_connection((settings.host, settings.port), timeout=timeout).close()
        return True
    except OSError:
        return False


class EmbeddedBroker:
    """amqtt on ``host:port`` in a background thread with its own event loop."""

    def __init__(self, host: str, port: int):
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise missing_extra("no MQTT broker answers, and the embedded one (amqtt, Python "
                                "3.10+)", "demo", exc) from exc
        self.loop = asyncio.new_event_loop()
        self.broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }, loop=self.loop)
        self._error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error:
            raise JetkioskError(f"embedded MQTT broker did not start on {host}:{port} "
                                f"({self._error})")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.broker.start())
        except Exception as exc:  # noqa: BLE001 - whatever stops the start, __init__ says it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        """Stop it; amqtt's own shutdown waits on idle tasks, so it gets a second at most."""
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        future: Any = asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop)
        try:
            future.result(1.0)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, OSError):
            # timed out or failed: the loop stops below either way
            future.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

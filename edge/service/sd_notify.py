"""systemd's notification protocol in pure Python (sd_notify(3), sd_watchdog_enabled(3)).

A service of ``Type=notify`` tells the manager ``READY=1`` once it serves, ``WATCHDOG=1``
at least every ``WatchdogSec`` (systemd passes it as ``WATCHDOG_USEC``), ``STOPPING=1`` on
the way out and free-form ``STATUS=...``. Messages are datagrams on the AF_UNIX socket named
by ``NOTIFY_SOCKET``: a path, or an abstract socket when it starts with ``@``. Outside
systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the same code runs anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, Optional

log = logging.getLogger(__name__)


class Notifier:
    """Sends state changes to the service manager; silent when there is none."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]  # abstract namespace
        elif address.startswith("/"):
            self.address = address
        elif address:
            log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; "
                        "not notifying systemd", address)
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False when not under systemd or when the
        manager cannot be reached (logged: a service must not die for its watchdog)."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def _watchdog_seconds(env: Mapping[str, str]) -> Optional[float]:
    """WatchdogSec as systemd passes it, when meant for this process (sd_watchdog_enabled)."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog pings off", usec)
        return None
    return value / 1e6 if value > 0 else None

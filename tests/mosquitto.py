"""A real Mosquitto broker per test: random port, own configuration, kill and restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One broker process with persistence written after every change."""

    def __init__(self, workdir: Path, tls: Optional[Dict[str, Any]] = None,
                 password_file: Optional[Path] = None):
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.password_file = password_file
        self.proc: Optional[subprocess.Popen] = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if password_file else 'true'}",
            "persistence true",
            f"persistence_location {workdir / 'data'}/",
            "autosave_interval 1",
            "autosave_on_changes true",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type all",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot write here
        if password_file:
            lines.append(f"password_file {password_file}")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if tls.get("require_certificate"):
                lines.append("require_certificate true")
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def uri(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final save."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Subscriber:
    """A QoS 1 subscriber (persistent session by default) that records what arrives."""

    def __init__(self, port: int, topic: str, client_id: str = "", persistent: bool = True,
                 protocol: int = 4, **tls):
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        v5 = protocol == mqtt.MQTTv5
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"sub-{free_port()}",
                                  clean_session=None if v5 else not persistent,
                                  protocol=protocol)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5,
                            **({"clean_start": not persistent} if v5 else {}))
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not get SUBACK"

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append(message)

    def payloads(self, topic_suffix: str = "") -> list:
        with self.lock:
            return [m.payload for m in self.messages if m.topic.endswith(topic_suffix)]

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        """Poll ``predicate()`` until true or the deadline (a hang guard, not a speed check)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_link(broker: Mosquitto, outbox_path: Path, client_id: str = "publisher") -> Any:
    """jetkiosk's MQTT link to ``broker``, publishing from an outbox at ``outbox_path``."""
    from jetkiosk.edge.core.config import MqttConfig
    from jetkiosk.edge.mqtt.client import BrokerSettings
    from jetkiosk.edge.mqtt.link import MqttLink
    from jetkiosk.edge.mqtt.outbox import Outbox

    settings = BrokerSettings.from_config(MqttConfig(broker=broker.uri, keepalive=5))
    return MqttLink(settings, client_id, Outbox(outbox_path), "jetkiosk/test/availability",
                    reconnect=(0.1, 1.0)).start()

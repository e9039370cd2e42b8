"""The broker connection settings and a configured paho-mqtt 2.x client.

Every way a connection can fail is turned into one sentence that names the setting to fix.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ..core.config import MqttConfig
from ..core.errors import ConfigError, JetkioskError


class MqttError(JetkioskError):
    """The broker cannot be reached or refused us."""


PROTOCOLS = {"3.1.1": mqtt.MQTTProtocolVersion.MQTTv311, "5": mqtt.MQTTProtocolVersion.MQTTv5}


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    tls: bool
    protocol: mqtt.MQTTProtocolVersion
    username: Optional[str]
    password: Optional[str]
    ca: Optional[str]
    cert: Optional[str]
    key: Optional[str]
    tls_insecure: bool
    keepalive: int

    @property
    def v5(self) -> bool:
        return self.protocol == mqtt.MQTTProtocolVersion.MQTTv5

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @classmethod
    def from_config(cls, config: MqttConfig) -> BrokerSettings:
        """Validate ``[mqtt]``; credentials in the URI are overridden by the explicit keys."""
        url = urlsplit(config.broker)
        if url.scheme not in ("mqtt", "mqtts"):
            raise ConfigError(f"mqtt.broker: {config.broker!r}: scheme must be mqtt:// or mqtts://")
        try:
            port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        except ValueError:
            raise ConfigError(f"mqtt.broker: {config.broker!r}: invalid port") from None
        if not url.hostname:
            raise ConfigError(f"mqtt.broker: {config.broker!r}: no host")
        if config.protocol not in PROTOCOLS:
            raise ConfigError(f"mqtt.protocol: {config.protocol!r}: expected one of "
                              f"{', '.join(PROTOCOLS)}")
        password = config.password or (unquote(url.password) if url.password else None)
        if config.password_file:
            try:
                password = Path(config.password_file).read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ConfigError(f"mqtt.password_file: cannot read a password from "
                                  f"{config.password_file} ({exc})") from None
        files = {}
        for key in ("ca", "cert", "key"):
            value = getattr(config, key)
            if value and not Path(value).is_file():
                raise ConfigError(f"mqtt.{key}: {value}: no such file")
            files[key] = value or None
        if (files["cert"] is None) != (files["key"] is None):
            raise ConfigError("mqtt.cert and mqtt.key: give both for a client certificate")
        if url.scheme == "mqtt" and any(files.values()):
            raise ConfigError("mqtt.broker: certificates are set but the URI is mqtt://, "
                              "use mqtts://")
        return cls(host=url.hostname, port=port, tls=url.scheme == "mqtts",
                   protocol=PROTOCOLS[config.protocol],
                   username=config.username or (unquote(url.username) if url.username else None),
                   password=password, ca=files["ca"], cert=files["cert"], key=files["key"],
                   tls_insecure=config.tls_insecure, keepalive=config.keepalive)


def make_client(settings: BrokerSettings, client_id: str,
                will: Optional[Tuple[str, bytes]] = None, persistent: bool = False,
                ) -> mqtt.Client:
    """A paho client (callback API v2) with TLS, credentials and last will applied.

    ``persistent``: MQTT 3.1.1 clean_session=False (for MQTT 5, pass ``clean_start=False``
    to connect). Automatic reconnection is off: the caller reconnects so that every failure
    is visible.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=None if settings.v5 else not persistent,
                         protocol=settings.protocol, reconnect_on_failure=False)
    if settings.tls:
        try:
            client.tls_set(ca_certs=settings.ca, certfile=settings.cert, keyfile=settings.key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt.ca/cert/key: cannot load TLS files ({exc})") from exc
        client.tls_insecure_set(settings.tls_insecure)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client


def connect(client: mqtt.Client, settings: BrokerSettings, persistent: bool = False) -> None:
    """Open the connection (CONNECT sent; the CONNACK arrives in the client's loop)."""
    if settings.v5:
        client.connect(settings.host, settings.port, settings.keepalive,
                       clean_start=not persistent)
    else:
        client.connect(settings.host, settings.port, settings.keepalive)


def connect_or_explain(client: mqtt.Client, settings: BrokerSettings,
                       persistent: bool = False) -> None:
    """``connect`` for a short-lived client (a listener, one request): a failure is an
    MqttError that says what it means."""
    try:
        connect(client, settings, persistent)
    except (OSError, ValueError) as exc:
        raise MqttError(describe_exception(exc, settings)) from exc


def describe_exception(exc: BaseException, settings: BrokerSettings) -> str:
    """What a failed connection attempt means, in one line."""
    where = settings.address
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"{where}: TLS certificate verification failed ({exc.verify_message}); "
                "check mqtt.ca and that the broker's certificate names this host")
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS handshake failed ({exc.reason or exc}); is the port a TLS listener?"
    if isinstance(exc, ConnectionRefusedError):
        return f"{where}: connection refused (is the broker running on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve host {settings.host!r} ({exc.strerror})"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"{where}: timed out connecting"
    return f"{where}: {exc.__class__.__name__}: {exc}"


def describe_refusal(reason: ReasonCode, settings: BrokerSettings) -> str:
    """What a CONNACK refusal means, naming the settings involved."""
    text = str(reason)
    hint = ""
    if text in ("Bad user name or password", "Not authorized"):
        hint = "; check mqtt.username and mqtt.password (or mqtt.password_file)"
    elif text in ("Client identifier not valid",):
        hint = "; check mqtt.client_id"
    return f"{settings.address}: broker refused the connection: {text}{hint}"


def is_fatal_refusal(reason: ReasonCode) -> bool:
    """Refusals that retrying cannot fix without a configuration change."""
    return str(reason) in ("Bad user name or password", "Not authorized",
                           "Client identifier not valid", "Unsupported protocol version")

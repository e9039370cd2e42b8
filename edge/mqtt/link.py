"""One thread that owns the MQTT connection: reconnects, drains the outbox, keeps state fresh.

Three kinds of messages leave through it:

* ``put``: must not be lost. Written to the persistent outbox first (by the caller's thread,
  which never touches the network), sent in order with QoS 1, and deleted from the outbox
  only when the broker acknowledges it. At most ``window`` are in flight; paho resends those
  after a reconnect before anything newer goes out, so the order holds across reconnects.
* ``set_state``: the latest value of a retained topic. Only the newest value is kept and it
  is sent again after every reconnect.
* ``send``: best effort (command replies, face crops): sent when connected, a bounded number
  waiting otherwise.

All paho calls and callbacks happen in this one thread, so the bookkeeping needs no locks
beyond the hand-over from other threads.

The thread never dies of an exception: one in a callback, hook, handler or its own loop is
logged with its traceback and counted in ``errors`` (``stats.outbox.errors``); a message paho
refuses (a bad topic) is dropped; any other failure drops the connection as a network
failure would (the broker publishes the will) and the link connects again with backoff.
After ``max_failures`` such failures in a row it gives up: ``failure`` says why, the
``on_failure`` hooks run and the thread ends, so that the process can exit non-zero and be
restarted (``LinkFailed``).
"""

from __future__ import annotations

import functools
import logging
import random
import sqlite3
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..core.config import MqttConfig
from ..core.errors import ConfigError
from .client import (
    BrokerSettings,
    MqttError,
    connect,
    describe_exception,
    describe_refusal,
    is_fatal_refusal,
    make_client,
)
from .outbox import Outbox
from .topics import Topics, text_problem

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]
ONLINE, OFFLINE = b"online", b"offline"
CONNACK_TIMEOUT = 10.0  # seconds


class LinkFailed(MqttError):
    """The link gave up after repeated failures; the process should exit with status 1 so
    that its supervisor restarts it (2 means a configuration to fix: no restart)."""


class MqttLink:
    """The connection, the outbox drain, retained state and subscriptions, in one thread."""

    max_failures = 10  # failures of the link's own loop in a row before it gives up

    def __init__(self, settings: BrokerSettings, client_id: str, outbox: Outbox,
                 availability_topic: str, reconnect: Tuple[float, float] = (0.5, 30.0),
                 window: int = 64, poll: float = 0.05):
        self.settings = settings
        self.outbox = outbox
        self.availability_topic = availability_topic
        self.reconnect = reconnect
        self.window = window
        self.poll = poll
        self.client = make_client(settings, client_id, will=(availability_topic, OFFLINE))
        self.client.max_inflight_messages_set(window)
        self.client.on_connect = self._safe(self._on_connect)
        self.client.on_disconnect = self._safe(self._on_disconnect)
        self.client.on_publish = self._safe(self._on_publish)
        self.client.on_message = self._safe(self._on_message)
        self.client.on_subscribe = self._safe(self._on_subscribe)
        self.connected = threading.Event()
        self._unacked_subs: Set[int] = set()  # SUBSCRIBE message ids awaiting SUBACK
        self.last_error: Optional[str] = None
        self.fatal = False  # the last failure needs a configuration change
        self.rejected = 0  # messages the broker refused (MQTT 5 reason codes)
        self.unsaved = 0  # messages the outbox could not store (sent without a durable copy)
        self.connections = 0
        self.errors = 0  # exceptions caught in the link thread, and messages paho refused
        self.failure: Optional[str] = None  # why the link gave up; its thread has ended
        self._streak = 0  # failures of the loop since it last went round cleanly
        self._last_exception = ""
        self._lock = threading.Lock()
        self._states: Dict[str, Tuple[bytes, int]] = {}
        self._dirty: Set[str] = set()
        self._sends: Deque[Tuple[str, bytes, int, bool, Optional[Properties]]] = deque(maxlen=256)
        self._subs: Dict[str, Handler] = {}
        self._hooks: List[Callable[[], None]] = []
        self._failure_hooks: List[Callable[[], None]] = []
        self._timers: List[List[Any]] = []
        self._inflight: Dict[int, int] = {}  # paho message id -> outbox id
        self._acked: List[int] = []
        self._cursor = 0  # highest outbox id handed to paho
        self._more = threading.Event()  # the outbox may hold messages past the cursor
        self._more.set()
        self._just_connected = False
        self._answered = False  # a CONNACK came for the current attempt
        self._stop = threading.Event()
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self.set_state(availability_topic, ONLINE)

    # ----------------------------------------------------------------- any thread
    def put(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Store durably, then send with QoS 1 when connected; never blocks on the network.

        When the outbox cannot store it (a full disk), the message is sent without the
        durable copy (lost if the broker is away too) and counted in ``unsaved``; 0 is
        returned."""
        try:
            message_id = self.outbox.put(topic, payload, qos=1, retain=retain)
        except sqlite3.Error as exc:
            if not self.unsaved:
                log.error("outbox %s cannot store events (%s); sending them without a "
                          "durable copy until it can", self.outbox.path, exc)
            self.unsaved += 1
            self.send(topic, payload, qos=1, retain=retain)
            return 0
        self._more.set()
        return message_id

    def set_state(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Retained latest value; an empty payload clears the retained message."""
        with self._lock:
            self._states[topic] = (payload, qos)
            self._dirty.add(topic)

    def send(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
             properties: Optional[Properties] = None) -> None:
        """Best effort: sent when connected; the oldest waiting message gives way when full."""
        with self._lock:
            self._sends.append((topic, payload, qos, retain, properties))

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Call ``handler`` (in the link thread) for each message; subscribed on every connect."""
        self._subs[topic_filter] = handler
        if self.connected.is_set():
            self._subscribe([topic_filter])

    def on_connected(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` in the link thread after each successful connection."""
        self._hooks.append(hook)

    def every(self, seconds: float, task: Callable[[], None]) -> None:
        """Run ``task`` in the link thread every ``seconds`` while connected."""
        self._timers.append([seconds, time.monotonic() + seconds, task])

    def on_failure(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` (in the link thread) when the link gives up; see ``check``."""
        self._failure_hooks.append(hook)

    def check(self) -> None:
        """LinkFailed once the link has given up."""
        if self.failure is not None:
            raise LinkFailed(self.failure)

    def figures(self) -> Dict[str, int]:
        """Delivery figures for ``stats.outbox`` and the metrics."""
        return {"depth": self.outbox.depth, "dropped": self.outbox.dropped,
                "in_flight": self.in_flight, "rejected": self.rejected,
                "unsaved": self.unsaved, "errors": self.errors}

    def start(self) -> MqttLink:
        self._thread.start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        """True once connected with every subscription acknowledged; False on timeout;
        MqttError when retrying cannot help (LinkFailed when the link gave up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.wait(0.05) and not self._unacked_subs:
                return True
            self.check()
            if self.fatal:
                raise MqttError(self.last_error or "cannot connect")
        return False

    def close(self, flush_timeout: float = 5.0) -> None:
        """Drain the outbox for up to ``flush_timeout`` s, publish ``offline``, disconnect.

        What is not acknowledged by then stays in the outbox for the next start.
        """
        self._deadline = time.monotonic() + flush_timeout
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(flush_timeout + 5.0)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # --------------------------------------------------------------- link thread
    def _run(self) -> None:
        delay = self.reconnect[0]
        while not self._stop.is_set():
            try:
                if self._attempt():
                    delay = self.reconnect[0]
            except Exception as exc:
                self._count(exc)
                log.exception("MQTT link failed (%d error(s) so far); reconnecting",
                              self.errors)
                self._streak += 1
                self._drop()
                if self._streak >= self.max_failures:
                    self._give_up()
                    return
            if self._stop.is_set():
                break
            self._stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.reconnect[1])

    def _attempt(self) -> bool:
        """Connect and serve the connection until it drops; whether the broker accepted it."""
        try:
            connect(self.client, self.settings)
        except (OSError, ValueError) as exc:
            self._failed(describe_exception(exc, self.settings),
                         fatal=isinstance(exc, ssl.SSLCertVerificationError))
            return False
        return self._serve()

    def _serve(self) -> bool:
        """Run one connection until it drops or, after ``close``, the outbox is flushed.

        Returns whether the broker accepted the connection.
        """
        accepted, self._answered = False, False
        started = time.monotonic()
        while True:
            rc = self.client.loop(timeout=self.poll)
            self._settle_acks()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                if not accepted and not self._answered:
                    self._failed(self._hung_up())
                self.connected.clear()
                return accepted
            if not self.connected.is_set():
                if self._stop.is_set() or accepted:
                    return accepted
                if time.monotonic() - started > CONNACK_TIMEOUT:
                    self._failed(f"{self.settings.address}: no answer to CONNECT (is it an MQTT "
                                 "broker?)")
                    self.client.disconnect()
                    return False
                continue
            accepted = True
            self._pump()  # states set just before close (a camera going offline) go out too
            self._streak = 0
            if self._stop.is_set() and (self._flushed() or time.monotonic() > self._deadline):
                self._go_offline()
                return accepted

    def _pump(self) -> None:
        if self._just_connected:
            self._just_connected = False
            for hook in self._hooks:
                self._guard(hook)
        now = time.monotonic()
        for timer in self._timers:
            if now >= timer[1]:
                timer[1] = now + timer[0]
                self._guard(timer[2])
        with self._lock:
            states = [(t, *self._states[t]) for t in self._dirty]
            self._dirty.clear()
            sends = list(self._sends)
            self._sends.clear()
        for topic, payload, qos in states:
            if self._publish(topic, payload, qos, True) is None or not payload:
                with self._lock:  # cleared, or a topic paho refuses: not sent again
                    if self._states.get(topic, (None,))[0] == payload:
                        del self._states[topic]
        self._drain_outbox()
        for topic, payload, qos, retain, props in sends:
            self._publish(topic, payload, qos, retain, props)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                 properties: Optional[Properties] = None) -> Optional[mqtt.MQTTMessageInfo]:
        """``client.publish``; a message paho refuses (a bad topic) is logged, counted and
        dropped (None)."""
        try:
            return self.client.publish(topic, payload, qos=qos, retain=retain,
                                       properties=properties)
        except ValueError as exc:
            self.errors += 1
            log.error("MQTT: cannot publish on %r (%s); dropped", topic[:200], exc)
            return None

    def _drain_outbox(self) -> None:
        room = self.window - len(self._inflight)
        if room <= 0 or not self._more.is_set():
            return
        self._more.clear()
        batch = self.outbox.peek(after=self._cursor, limit=room)
        for message in batch:
            info = self._publish(message.topic, message.payload, message.qos, message.retain)
            if info is None:
                self._acked.append(message.id)  # never sendable: not kept for ever
            else:
                self._inflight[info.mid] = message.id
            self._cursor = message.id
        if len(batch) == room:
            self._more.set()

    def _settle_acks(self) -> None:
        if self._acked:
            try:
                self.outbox.ack(*self._acked)
            except sqlite3.Error as exc:  # a full disk: delivered, but sent again after a restart
                log.warning("outbox %s cannot forget %d delivered event(s): %s",
                            self.outbox.path, len(self._acked), exc)
            self._acked.clear()

    def _flushed(self) -> bool:
        return not self._inflight and not self._more.is_set() and self.outbox.depth == 0

    def _go_offline(self) -> None:
        """Clean shutdown: ``offline`` (the will is not sent on a clean disconnect), then bye."""
        info = self.client.publish(self.availability_topic, OFFLINE, qos=1, retain=True)
        until = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < until:
            if self.client.loop(timeout=self.poll) != mqtt.MQTT_ERR_SUCCESS:
                break
        self._settle_acks()
        self.client.disconnect()
        self.client.loop(timeout=self.poll)
        self.connected.clear()

    def _hung_up(self) -> str:
        """The broker closed the connection before answering CONNECT."""
        why = "the broker closed the connection before accepting it"
        if self.settings.tls and not self.settings.cert:
            return (f"{self.settings.address}: {why}; does it require a client certificate "
                    "(mqtt.cert and mqtt.key)? Its log says why")
        return f"{self.settings.address}: {why}; its log says why"

    def _guard(self, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception as exc:  # a faulty hook must not take the connection down
            self._count(exc)
            log.exception("MQTT task %r failed (%d error(s) so far)", task, self.errors)

    def _safe(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback`` for paho: its exceptions are logged and counted, never raised into
        paho's loop (which would end this thread)."""
        def call(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self._count(exc)
                log.exception("MQTT callback %s failed (%d error(s) so far)",
                              callback.__name__, self.errors)
        return call

    def _count(self, exc: Exception) -> None:
        self.errors += 1
        self._last_exception = f"{exc.__class__.__name__}: {exc}"

    def _drop(self) -> None:
        """Close the connection without DISCONNECT, as a network failure would: the broker
        publishes the will (``offline``) until the next connection says ``online``."""
        self.connected.clear()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def _give_up(self) -> None:
        self.failure = (f"the MQTT link failed {self._streak} times in a row, the last: "
                        f"{self._last_exception}; it stops (events wait in the outbox)")
        log.critical("%s", self.failure)
        for hook in self._failure_hooks:
            self._guard(hook)

    def _failed(self, message: str, fatal: bool = False) -> None:
        if message != self.last_error:
            log.warning("MQTT: %s; retrying with backoff", message)
        self.last_error, self.fatal = message, fatal

    # ------------------------------------------------------------ paho callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._answered = True
        if reason_code.is_failure:
            self._failed(describe_refusal(reason_code, self.settings),
                         fatal=is_fatal_refusal(reason_code))
            return
        self.connections += 1
        log.info("MQTT: connected to %s", self.settings.address)
        self.last_error, self.fatal = None, False
        with self._lock:
            self._dirty.update(self._states)
        self._unacked_subs.clear()
        if self._subs:
            self._subscribe(list(self._subs))
        self._just_connected = True
        self._more.set()
        self.connected.set()

    def _subscribe(self, topic_filters: List[str]) -> None:
        mid = self.client.subscribe([(topic, 1) for topic in topic_filters])[1]
        if mid is not None:  # None: not connected; the next connect subscribes
            self._unacked_subs.add(mid)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._unacked_subs.discard(mid)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected and not self._stop.is_set():
            self._failed(f"{self.settings.address}: connection lost ({reason_code})")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        outbox_id = self._inflight.pop(mid, None)
        if outbox_id is None:
            return
        if reason_code.is_failure:
            self.rejected += 1
            log.error("MQTT: broker refused message %d (%s); dropped", outbox_id, reason_code)
        self._acked.append(outbox_id)
        self._more.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        for topic_filter, handler in self._subs.items():
            if mqtt.topic_matches_sub(topic_filter, message.topic):
                self._guard(functools.partial(handler, message))


def reply_properties(message: mqtt.MQTTMessage) -> Tuple[Optional[str], Optional[Properties]]:
    """MQTT 5 request/response: the requester's response topic and correlation data."""
    props = getattr(message, "properties", None)
    topic = getattr(props, "ResponseTopic", None) if props else None
    if not topic:
        return None, None
    out = Properties(PacketTypes.PUBLISH)
    correlation = getattr(props, "CorrelationData", None)
    if correlation is not None:
        out.CorrelationData = correlation
    return topic, out


def client_id(config: MqttConfig, topics: Topics, role: str = "") -> str:
    """``mqtt.client_id`` (default ``jetkiosk-<node>``; ``-<role>`` appended for a second
    connection of the same node, such as the kiosk's); ConfigError when MQTT cannot carry it."""
    value = (config.client_id or f"jetkiosk-{topics.node}") + (f"-{role}" if role else "")
    why = text_problem(value)
    if why:
        raise ConfigError(f"mqtt.client_id: {value!r} {why}")
    return value


def link_from_config(config: MqttConfig, topics: Topics, outbox: Outbox, availability: str,
                     role: str = "") -> MqttLink:
    """The broker connection from ``[mqtt]``: its settings, the client id (``client_id``),
    the reconnect backoff."""
    return MqttLink(BrokerSettings.from_config(config), client_id(config, topics, role), outbox,
                    availability, (config.reconnect_min, config.reconnect_max))

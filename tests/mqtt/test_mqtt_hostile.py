"""Hostile input on MQTT, on a real Mosquitto (MQTT 5) with the real node and link: response
topics nobody may publish to, exceptions inside the link thread, topic names `config check`
must refuse as `run` does, payloads of the wrong shape for `jetkiosk listen`, and fuzzed
commands (hypothesis, seeded)."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import configure, enroll_demo_people
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import MqttConfig
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, load_gallery
from jetkiosk.edge.faces.open_set import threshold_rule
from jetkiosk.edge.mqtt.client import BrokerSettings
from jetkiosk.edge.mqtt.commands import CommandRouter
from jetkiosk.edge.mqtt.link import LinkFailed, MqttLink
from jetkiosk.edge.mqtt.listen import decode, describe
from jetkiosk.edge.mqtt.outbox import Outbox
from jetkiosk.edge.mqtt.payloads import schema
from jetkiosk.edge.mqtt.topics import Topics
from jetkiosk.edge.node.daemon import Runner
from mosquitto import Subscriber, open_link

PREFIX = "jetkiosk/kiosk1"


def send(port: int, topic: str, payload: bytes, response_topic: str = "",
         correlation: bytes = b"") -> None:
    """One MQTT 5 publish (QoS 1), with a response topic and correlation data if given."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation:
        props.CorrelationData = correlation
    client.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def node(config, analyzer, demo_clip, broker, tmp_path):
    """The real node on MQTT 5, its clip looping so that events keep coming, in a thread."""
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    configure(config, {"run.source": f"file://{clip}?loop=1", "run.sink": "mqtt",
                       "mqtt.broker": broker.uri, "mqtt.node": "kiosk1", "mqtt.protocol": "5",
                       "mqtt.outbox": str(tmp_path / "outbox.db"), "mqtt.stats_interval": 0.5,
                       "mqtt.reconnect_min": 0.1, "mqtt.reconnect_max": 0.2})
    runner = Runner(config, analyzer, lambda: Matcher(
        load_gallery(config.gallery_path, analyzer.fingerprint),
        threshold_rule(config.gallery, analyzer.encoder_manifest)))
    with runner:
        runner.start()
        thread = threading.Thread(target=runner.run)
        thread.start()
        try:
            yield runner
        finally:
            runner.loop.shutdown()
            thread.join(60)


def replies(watcher: Subscriber) -> list:
    return [json.loads(p) for p in watcher.payloads(f"{PREFIX}/response")]


def test_refused_response_topics_get_a_reply_and_the_node_carries_on(node, broker):
    everything = Subscriber(broker.port, "#", persistent=False, protocol=mqtt.MQTTv5)
    command = f"{PREFIX}/recognition/set"
    refused = [("a/#", "contains a wildcard (+ or #)"),
               ("a/+/response", "contains a wildcard (+ or #)"),
               ("elsewhere/inbox",
                f"matches none of mqtt.response_prefixes ({PREFIX}/response, +/response)"),
               ("me/deeper/response", "matches none of mqtt.response_prefixes"),
               ("$SYS/response", "matches none of mqtt.response_prefixes"),
               ("x" * 2000 + "/response", "is 2009 bytes long (limit 1024)")]
    for i, (topic, _) in enumerate(refused):
        send(broker.port, command, b'{"action": "enable", "request_id": "r%d"}' % i, topic,
             correlation=b"c%d" % i)
    assert everything.wait(lambda: len(replies(everything)) == len(refused))
    for i, ((topic, why), reply) in enumerate(zip(refused, replies(everything))):
        jsonschema.validate(reply, schema("response"))
        assert not reply["ok"] and reply["request_id"] == f"r{i}" and why in reply["error"]
        assert reply["error"].startswith(f"response topic {topic[:64]!r}")
    correlations = [m.properties.CorrelationData for m in everything.messages
                    if m.topic == f"{PREFIX}/response"]
    assert correlations == [b"c%d" % i for i in range(len(refused))]

    # The thread lives: a command with an allowed inbox is answered there, events still flow.
    events = len(everything.payloads("/faces/events"))
    send(broker.port, command, b'{"action": "enable", "request_id": "ok"}', "me/response")
    assert everything.wait(lambda: everything.payloads("me/response"))
    assert json.loads(everything.payloads("me/response")[0])["ok"]
    assert everything.wait(lambda: len(everything.payloads("/faces/events")) > events + 2, 120)
    assert not any(m.topic.startswith(("a/", "elsewhere", "x", "$")) for m in everything.messages)
    link = node.node.link
    assert link._thread.is_alive() and link.errors == 0 and link.failure is None
    assert node.node.commands.refused == len(refused) and node.node.commands.handled == 1
    everything.close()


def test_a_response_topic_with_nul_is_refused(node, broker):
    """Mosquitto drops a client that sends NUL in a topic, so the message is handed to the
    node's command router as its link would."""
    watcher = Subscriber(broker.port, f"{PREFIX}/response", persistent=False)
    message = mqtt.MQTTMessage(topic=f"{PREFIX}/recognition/set".encode())
    message.payload = b'{"action": "enable"}'
    message.properties = Properties(PacketTypes.PUBLISH)
    message.properties.ResponseTopic = "me\0/response"
    node.node.commands.handle("recognition", message)
    assert watcher.wait(lambda: watcher.messages)
    reply = json.loads(watcher.messages[0].payload)
    assert not reply["ok"] and reply["error"] == "response topic 'me\\x00/response' contains NUL"
    watcher.close()


def event(i: int) -> bytes:
    return json.dumps({"event_id": f"{i:032x}", "i": i}).encode()


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def test_an_exception_in_the_link_thread_is_logged_counted_and_survived(broker, tmp_path,
                                                                        caplog):
    watcher = Subscriber(broker.port, "jetkiosk/test/#", persistent=False)
    link = open_link(broker, tmp_path / "outbox.db")
    ack, calls = link.outbox.ack, []

    def ack_failing_once(*ids: int) -> None:
        calls.append(ids)
        if len(calls) == 1:
            raise RuntimeError("injected outbox failure")
        ack(*ids)

    link.outbox.ack = ack_failing_once  # type: ignore[method-assign]
    handled = []

    def handler(message: mqtt.MQTTMessage) -> None:
        handled.append(message.payload)
        if len(handled) == 1:
            raise ValueError("injected handler failure")

    link.subscribe("jetkiosk/test/in", handler)
    try:
        assert link.wait_connected(10)
        for i in range(20):
            link.put("jetkiosk/test/events", event(i))
        assert watcher.wait(lambda: len({json.loads(p)["i"] for p in
                                          watcher.payloads("/events")}) == 20)
        assert wait_for(lambda: link.outbox.depth == 0)  # every event acknowledged in the end
        for payload in (b"one", b"two"):
            send(broker.port, "jetkiosk/test/in", payload)
        assert wait_for(lambda: handled == [b"one", b"two"])
        assert link.errors == 2 and link.figures()["errors"] == 2 and link.failure is None
        assert link._thread.is_alive()
    finally:
        link.close(2.0)
        watcher.close()
    logged = [r for r in caplog.records if r.name == "jetkiosk.edge.mqtt.link"]
    assert any("MQTT link failed" in r.getMessage() and r.exc_info for r in logged)
    assert any("injected handler failure" in str(r.exc_info[1]) for r in logged if r.exc_info)


def test_a_permanent_failure_gives_up_loudly(broker, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(MqttLink, "max_failures", 3)
    availability = Subscriber(broker.port, "jetkiosk/test/availability", persistent=False)
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.put("jetkiosk/test/events", event(0))

    def peek(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    outbox.peek = peek  # type: ignore[method-assign]
    settings = BrokerSettings.from_config(MqttConfig(broker=broker.uri, keepalive=5))
    link = MqttLink(settings, "publisher", outbox, "jetkiosk/test/availability",
                    reconnect=(0.05, 0.1))
    gave_up = threading.Event()
    link.on_failure(gave_up.set)
    link.start()
    try:
        assert gave_up.wait(30)
        assert wait_for(lambda: not link._thread.is_alive())
        assert link.failure and "failed 3 times in a row" in link.failure
        assert "OperationalError: disk I/O error" in link.failure
        with pytest.raises(LinkFailed, match="failed 3 times in a row"):
            link.check()
        with pytest.raises(LinkFailed):
            link.wait_connected(1)
        assert link.errors == 3
        # The broker saw the connection drop, not a goodbye: it published the will.
        assert availability.wait(lambda: availability.payloads()[-1:] == [b"offline"])
    finally:
        link.close(1.0)
        availability.close()
    assert any(r.levelno == logging.CRITICAL and "failed 3 times" in r.getMessage()
               for r in caplog.records)
    assert Outbox(tmp_path / "outbox.db").depth == 1  # the event waits for the next start


def test_the_node_reports_link_errors_in_stats(node, broker):
    stats = Subscriber(broker.port, f"{PREFIX}/stats", persistent=False)
    link = node.node.link
    link.every(0.1, lambda: 1 / 0)  # a faulty periodic task: logged, counted
    assert wait_for(lambda: link.errors >= 2)

    def counted() -> list:
        return [s for s in map(json.loads, stats.payloads()) if s["outbox"].get("errors", 0) >= 2]

    assert stats.wait(counted, 10)
    jsonschema.validate(counted()[0], schema("stats"))
    stats.close()


def test_run_exits_1_when_the_link_gives_up(config, analyzer, demo_clip, broker, monkeypatch,
                                            tmp_path):
    """`jetkiosk run` exits 1 (systemd restarts it; 2 would not) once the link gives up."""
    clip, photos = demo_clip
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    gallery.add("eileen_collins", analyzer.analyze(photos["eileen_collins"])[0].encoding[None])
    gallery.save(config.gallery_path)
    monkeypatch.setattr(MqttLink, "max_failures", 3)

    def ack(self, *ids: int) -> None:  # acknowledgements can never be stored
        raise RuntimeError("injected permanent failure")

    monkeypatch.setattr(Outbox, "ack", ack)
    code = main(["run", "--source", f"file://{clip}", "--sink", "mqtt", "--broker", broker.uri,
                 "--models", str(config.models.dir), "--gallery", str(config.gallery_path),
                 "--set", "mqtt.node=kiosk1", "--set", f"mqtt.outbox={tmp_path / 'o.db'}",
                 "--set", "mqtt.reconnect_min=0.05", "--set", "mqtt.reconnect_max=0.1"])
    assert code == 1


def test_config_check_refuses_what_run_refuses(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text('[run]\nsource = "file:///clip.mp4"\nsink = "mqtt"\ncamera = "c/+"\n')
    why = "run.camera: 'c/+' cannot be an MQTT topic level (empty, or has / + # in it)"
    assert main(["config", "check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"jetkiosk: error: {path}: {why}"
    assert main(["run", "--config", str(path)]) == 2  # refused before any model is loaded
    assert capsys.readouterr().err.strip() == f"jetkiosk: error: {why}"

    for line, why in [('[mqtt]\nclient_id = "a\\u0000b"', "mqtt.client_id: 'a\\x00b' contains NUL"),
                      ('[mqtt]\nresponse_prefixes = "a/#/b"',
                       "mqtt.response_prefixes: 'a/#/b' has # before its last level"),
                      ('[mqtt]\ndiscovery_prefix = "ha/+"',
                       "mqtt.discovery_prefix: 'ha/+' is not a valid topic prefix"),
                      ('[mqtt]\nprefix = "x\\u0000/{node}"',
                       "mqtt.prefix: 'x\\x00/{node}' is not a valid topic prefix")]:
        path.write_text('[run]\nsource = "file:///clip.mp4"\nsink = "mqtt"\n' + line + "\n")
        assert main(["config", "check", "--config", str(path)]) == 2
        assert capsys.readouterr().err.strip() == f"jetkiosk: error: {path}: {why}"
        assert main(["run", "--config", str(path)]) == 2
        assert capsys.readouterr().err.strip() == f"jetkiosk: error: {why}"


def test_listen_prints_malformed_payloads_raw_and_keeps_going(broker):
    bad = {
        "cam1/faces/events": b'{"camera": "cam1", "event": "new"}',  # no name
        "cam2/faces/events": b'{"name": 5, "timestamp": "noon", "camera": [], "event": {}}',
        "cam3/faces/events": b"[1, 2, 3]",
        "cam4/faces/events": b"\x00\xff\xfe binary",
        "cam5/faces/events": b'{"event_id": ["unhashable"]}',
        "cam6/faces/events": b"[" * 5000 + b"]" * 5000,
        "cam7/faces/events": b'{"name": "x", "timestamp": 1e300, "camera": "c", "event": "new",'
                             b' "track_id": 1, "decision": "match", "distance": "far"}',
        "stats": b'{"outbox": null}',
        "person/eve/state": b'"present"',
        "cam1/faces/count": b'{"people": 7, "timestamp": 1, "camera": "c", "faces": 1,'
                            b' "known": 0, "unknown": 1}',
        "response": b'{"ok": false}',
    }
    good = json.dumps({"schema": 1, "event": "new", "event_id": "1" * 32, "track_id": 3,
                       "camera": "cam9", "timestamp": 1795343420.9, "decision": "match",
                       "name": "grace_hopper", "distance": 0.1, "threshold": 1.0}).encode()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic, payload in [*bad.items(), ("cam9/faces/events", good)]:
        client.publish(f"{PREFIX}/{topic}", payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    result = subprocess.run(
        [sys.executable, "-m", "jetkiosk.edge.cli.main", "listen", "--broker", broker.uri,
         "--topic", f"{PREFIX}/#", "--count", str(len(bad) + 1), "--timeout", "60"],
        capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = {line.split(": ", 1)[0]: line for line in result.stdout.splitlines()}
    for topic in bad:
        assert "unexpected payload" in lines[f"{PREFIX}/{topic}"], lines
    assert "KeyError: 'name'" in lines[f"{PREFIX}/cam1/faces/events"]
    assert "<10 bytes: b'\\x00\\xff\\xfe binary'>" in lines[f"{PREFIX}/cam4/faces/events"]
    assert """<31 bytes: b'{"camera":"cam1","event":"new"}'>""" in lines[
        f"{PREFIX}/cam1/faces/events"]
    assert "<10000 bytes: b'[[[[" in lines[f"{PREFIX}/cam6/faces/events"]
    assert "grace_hopper (match, d=0.100 / 1.000)" in result.stdout


def test_the_wrong_topic_filter_for_listen_is_a_clear_error(capsys):
    assert main(["listen", "--topic", "a/#/b", "--broker", "mqtt://127.0.0.1:1"]) == 2
    assert "--topic: 'a/#/b' has # before its last level" in capsys.readouterr().err


class FakeLink:
    """What the command router needs of a link: subscriptions and best-effort sends."""

    def __init__(self) -> None:
        self.sent: list = []

    def subscribe(self, topic_filter: str, handler) -> None:
        pass

    def send(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
             properties=None) -> None:
        self.sent.append((topic, payload, properties))


@pytest.mark.parametrize("payload, error", [
    (b"{not json", "command is not valid UTF-8 JSON (Expecting property name"),
    (b"\xff\xfe{}", "command is not valid UTF-8 JSON ('utf-8' codec can't decode"),
    (b"x" * 4097, "command is 4097 bytes; the limit is 4096"),
    (b"[" * 2000 + b"]" * 2000, "command is not valid UTF-8 JSON (nested too deeply)"),
    (b'{"a":[' * 500 + b"]}" * 500, "not valid UTF-8 JSON (nested too deeply)"),
    (b"null", "command must be a JSON object"),
    (b'"enable"', "command must be a JSON object"),
    (b'{"action": 1}', "invalid command: data.action must be one of"),
    (b'{"action": "enable", "request_id": 5}', "invalid command: data.request_id must be string"),
    (b'{"action": "enable", "who": "me"}', "invalid command: data must not contain {'who'}"),
    (b'{"action": "enable", "name": ' + b"[" * 900 + b"]" * 900 + b"}",
     "invalid command: data.name must be string"),
    (b'{"action": NaN}', "invalid command: data.action must be one of"),
    (b'{"action": "reload"}', "action 'reload' is not allowed on recognition (allowed: enable)"),
])
def test_every_malformed_command_gets_a_reason(payload, error):
    link = FakeLink()
    router = CommandRouter(link, Topics.from_config(MqttConfig(node="kiosk1")),  # type: ignore[arg-type]
                           max_bytes=4096)
    router.register("recognition", "enable", lambda c: {"recognition": True})
    message = mqtt.MQTTMessage(topic=f"{PREFIX}/recognition/set".encode())
    message.payload = payload
    router.handle("recognition", message)
    (topic, reply, _), = link.sent
    reply = json.loads(reply)
    assert topic == f"{PREFIX}/response" and not reply["ok"] and error in reply["error"], reply
    jsonschema.validate(reply, schema("response"))


def json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=20)


def commands():
    keys = st.sampled_from(["action", "request_id", "style", "name", "event_id", "extra"])
    values = st.sampled_from(["enable", "disable", "reload", "r1", "x" * 70]) | json_values()
    shaped = st.dictionaries(keys, values, max_size=4).map(lambda d: json.dumps(d).encode())
    return (st.binary(max_size=200) | json_values().map(lambda v: json.dumps(v).encode())
            | shaped | st.integers(1, 6000).map(lambda n: b"[" * n + b"]" * n))


@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(payload=commands(), response_topic=st.none() | st.text(max_size=30)
       | st.sampled_from(["me/response", f"{PREFIX}/response", "a/#", "+/response"]))
def test_fuzzed_commands_always_get_one_well_formed_reply(payload, response_topic):
    link = FakeLink()
    topics = Topics.from_config(MqttConfig(node="kiosk1"))
    router = CommandRouter(link, topics, max_bytes=4096)  # type: ignore[arg-type]
    router.register("recognition", "enable", lambda c: {"recognition": True})
    router.register("recognition", "disable", lambda c: {"recognition": False})
    message = mqtt.MQTTMessage(topic=f"{PREFIX}/recognition/set".encode())
    message.payload = payload
    if response_topic is not None:
        message.properties = Properties(PacketTypes.PUBLISH)
        message.properties.ResponseTopic = response_topic
    router.handle("recognition", message)
    assert len(link.sent) == 1
    topic, reply, _ = link.sent[0]
    reply = json.loads(reply)
    jsonschema.validate(reply, schema("response"))
    assert topic == f"{PREFIX}/response" or (topic == response_topic
                                             and topics.response_problem(topic) is None)
    assert reply["ok"] == (router.handled == 1)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(payload=st.binary(max_size=300) | json_values().map(lambda v: json.dumps(v).encode()),
       topic=st.sampled_from(["/cam0/faces/events", "/stats", "/person/x/state",
                              "/cam0/faces/count", "/response", "/style/state", "/other"]))
def test_listen_describes_any_payload(payload, topic):
    assert describe(PREFIX + topic, decode(payload)).startswith(f"{PREFIX}{topic}: ")

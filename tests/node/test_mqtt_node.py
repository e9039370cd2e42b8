"""The node on a real Mosquitto: topics and payloads (checked against the JSON Schemas),
commands with replies, Home Assistant discovery, face crops, stats and `jetkiosk listen`."""

from __future__ import annotations

import json
import threading

import cv2
import jinja2
import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import configure, enroll_demo_people
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import load_gallery
from jetkiosk.edge.faces.open_set import threshold_rule
from jetkiosk.edge.mqtt.listen import describe
from jetkiosk.edge.mqtt.outbox import Outbox
from jetkiosk.edge.mqtt.payloads import SCHEMAS, schema
from jetkiosk.edge.node.daemon import Runner
from mosquitto import Mosquitto, Subscriber

PREFIX = "jetkiosk/kiosk1"
SCHEMA_OF = {"/faces/events": "event", "/state": "person_state", "/faces/count": "count",
             "/stats": "stats", "/response": "response"}


@pytest.fixture
def node_config(config, analyzer, demo_clip, broker, tmp_path):
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    configure(config, {"run.source": f"file://{clip}", "run.sink": "mqtt",
                       "mqtt.broker": broker.uri, "mqtt.node": "kiosk1",
                       "mqtt.outbox": str(tmp_path / "outbox.db"), "mqtt.stats_interval": 0.5,
                       "mqtt.presence_refresh": 0.5, "mqtt.reconnect_min": 0.1})
    return config


def make_runner(config, analyzer) -> Runner:
    return Runner(config, analyzer, lambda: Matcher(
        load_gallery(config.gallery_path, analyzer.fingerprint),
        threshold_rule(config.gallery, analyzer.encoder_manifest)))


def check_schema(topic: str, payload: bytes) -> dict:
    for suffix, name in SCHEMA_OF.items():
        if topic.endswith(suffix):
            data = json.loads(payload)
            jsonschema.validate(data, schema(name))
            return data
    raise AssertionError(f"no schema for {topic}")


def send(broker: Mosquitto, topic: str, payload: bytes, properties=None, protocol=4) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_every_schema_is_valid_draft_7():
    files = sorted(SCHEMAS.glob("*.schema.json"))
    assert len(files) == 9
    for path in files:
        jsonschema.Draft7Validator.check_schema(json.loads(path.read_text()))


def test_node_publishes_events_states_counts_crops_and_stats(node_config, analyzer, broker):
    node_config.mqtt.face_crops = True
    watcher = Subscriber(broker.port, f"{PREFIX}/#", persistent=False)
    with make_runner(node_config, analyzer) as runner:
        assert runner.start().node.link.connected.is_set()
        assert runner.run() == 225
    assert watcher.wait(lambda: watcher.payloads("/availability")[-1:] == [b"offline"])
    watcher.close()
    messages = [(m.topic, m.payload, m.retain) for m in watcher.messages]
    events = [check_schema(t, p) for t, p, _ in messages if t.endswith("/faces/events")]
    assert {(e["event"], e["name"], e["decision"]) for e in events} == {
        ("new", "eileen_collins", "match"), ("end", "eileen_collins", "match"),
        ("new", "grace_hopper", "match"), ("end", "grace_hopper", "match"),
        ("new", None, "unknown"), ("end", None, "unknown")}
    assert len(events) == 8 and len({e["event_id"] for e in events}) == 8
    assert all(t == f"{PREFIX}/cam0/faces/events" for t, _, _ in messages
               if t.endswith("/faces/events"))
    grace = [check_schema(t, p) for t, p, _ in messages
             if t == f"{PREFIX}/person/grace_hopper/state"]
    assert grace[0]["present"] and not grace[-1]["present"] and grace[-1]["camera"] == "cam0"
    counts = [check_schema(t, p) for t, p, _ in messages if t.endswith("/faces/count")]
    assert {"known": 1, "unknown": 1, "people": ["eileen_collins"]}.items() <= max(
        counts, key=lambda c: c["faces"]).items()
    assert counts[-1]["faces"] == 0
    stats = [check_schema(t, p) for t, p, _ in messages if t.endswith("/stats")]
    assert stats and max(s["fps"] for s in stats) > 0 and stats[-1]["frames"] > 0
    assert set(stats[-1]["latency_ms"]) == {"detect", "embed", "live", "match", "track+publish"}
    assert stats[-1]["reencode_every"] == 5.0  # a clip read as fast as it goes: no budget
    models = stats[-1]["models"]  # what models.precision chose for each model, and why
    assert models["encoder"]["name"] == analyzer.encoder_manifest.name
    assert models["encoder"]["precision"] == stats[-1]["precision"]
    assert all(m["precision"] in ("fp32", "int8") and m["why"] for m in models.values())
    crops = [p for t, p, _ in messages if t.endswith("/faces/crop")]
    assert crops and cv2.imdecode(np.frombuffer(crops[0], np.uint8), 1).shape == (128, 128, 3)
    for topic, payload, _ in messages:
        assert b"encoding" not in payload or topic.endswith("/faces/crop")
    assert Outbox(node_config.outbox_path).depth == 0  # every event acknowledged


def test_bad_commands_get_replies_and_never_disturb_the_loop(node_config, analyzer, broker):
    watcher = Subscriber(broker.port, f"{PREFIX}/#", persistent=False)
    with make_runner(node_config, analyzer) as runner:
        runner.start()
        frames = []
        thread = threading.Thread(target=lambda: frames.append(runner.run()))
        thread.start()
        bad = [
            ("gallery", b"x" * 1_000_000, "command is 1000000 bytes; the limit is 4096"),
            ("recognition", b"{not json", "not valid UTF-8 JSON"),
            ("gallery", b'{"action": "explode"}', "invalid command: data.action must be one of"),
            ("gallery", b'{"action": "reload", "extra": 1}', "must not contain {'extra'}"),
            ("gallery", b'{"action": "enable"}', "'enable' is not allowed on gallery"),
            ("gallery", b'["reload"]', "command must be a JSON object"),
        ]
        for target, payload, _ in bad:
            send(broker, f"{PREFIX}/{target}/set", payload)
        send(broker, f"{PREFIX}/gallery/set", b'{"action": "reload", "request_id": "r1"}')
        assert watcher.wait(lambda: len(watcher.payloads("/response")) == len(bad) + 1)
        replies = [check_schema(f"{PREFIX}/response", p) for p in watcher.payloads("/response")]
        for (target, _, message), reply in zip(bad, replies):
            assert not reply["ok"] and message in reply["error"] and reply["target"] == target
        assert replies[-1]["ok"] and replies[-1]["request_id"] == "r1"
        assert replies[-1]["result"] == {"people": 2, "added": [], "removed": []}
        thread.join(120)
    assert frames == [225]  # the loop saw every frame
    events = [json.loads(p) for p in watcher.payloads("/faces/events")]
    assert len(events) == 8 and runner.node.commands.refused == len(bad)
    watcher.close()


def test_recognition_switch_and_mqtt5_response_topic(node_config, analyzer, broker):
    node_config.mqtt.protocol = "5"
    watcher = Subscriber(broker.port, "me/response", persistent=False, protocol=mqtt.MQTTv5)
    states = Subscriber(broker.port, f"{PREFIX}/recognition/state", persistent=False)
    with make_runner(node_config, analyzer) as runner:
        runner.start()
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic, props.CorrelationData = "me/response", b"\x01\x02"
        send(broker, f"{PREFIX}/recognition/set", b'{"action": "disable"}', props, mqtt.MQTTv5)
        assert watcher.wait(lambda: watcher.messages)
        reply = watcher.messages[0]
        assert json.loads(reply.payload)["result"] == {"recognition": False}
        assert reply.properties.CorrelationData == b"\x01\x02"
        assert states.wait(lambda: states.payloads()[-1:] == [b"OFF"])
        assert runner.run() == 0  # frames read, none analysed
    assert Outbox(node_config.outbox_path).peek() == []  # no event was published
    watcher.close()
    states.close()


def render(template: str, payload: dict) -> str:
    return jinja2.Environment().from_string(template).render(value_json=payload)


def test_home_assistant_discovery_follows_the_gallery(node_config, analyzer, broker, capsys):
    watcher = Subscriber(broker.port, "homeassistant/#", persistent=False)
    with make_runner(node_config, analyzer) as runner:
        runner.start()
        assert watcher.wait(lambda: watcher.payloads("/config"))
        config = json.loads(watcher.payloads("/config")[-1])
        assert watcher.messages[0].topic == "homeassistant/device/jetkiosk_kiosk1/config"
        parts = config["components"]
        person = parts["kiosk1_person_grace_hopper"]
        assert person["p"] == "binary_sensor" and person["expire_after"] == 120
        assert person["state_topic"] == f"{PREFIX}/person/grace_hopper/state"
        assert render(person["value_template"], {"present": True}) == "ON"
        faces = parts["kiosk1_cam0_faces"]
        event = {"event": "new", "decision": "match", "name": "grace_hopper", "distance": 0.4,
                 "track_id": 3, "live": {"decision": "live", "score": 0.97}}
        shown = json.loads(render(faces["value_template"], event))
        assert shown["event_type"] == "recognized" and shown["live_score"] == 0.97
        spoof = {**event, "decision": "spoof", "live": {"decision": "spoof", "score": 0.1}}
        assert json.loads(render(faces["value_template"], spoof))["event_type"] == "spoof"
        assert {"spoof", "not_verified_live"} <= set(faces["event_types"])
        assert render(faces["value_template"], {**event, "event": "end"}) == ""  # ignored by HA
        assert parts["kiosk1_fps"]["entity_category"] == "diagnostic"
        assert render(parts["kiosk1_outbox"]["value_template"], {"outbox": {"depth": 3}}) == "3"
        assert config["availability_topic"] == f"{PREFIX}/availability"

        # Grace leaves the gallery: her entity is removed and her retained state cleared.
        gallery = load_gallery(node_config.gallery_path)
        gallery.remove("grace_hopper")
        gallery.save(node_config.gallery_path)
        runner.node.link.set_state(f"{PREFIX}/person/grace_hopper/state", b'{"present": false}')
        send(broker, f"{PREFIX}/gallery/set", b'{"action": "reload"}')
        assert watcher.wait(lambda: len(watcher.payloads("/config")) == 2)
        parts = json.loads(watcher.payloads("/config")[-1])["components"]
        assert parts["kiosk1_person_grace_hopper"] == {"p": "binary_sensor"}
        assert "kiosk1_person_eileen_collins" in parts
        # Home Assistant restarts: discovery is sent again.
        send(broker, "homeassistant/status", b"online")
        assert watcher.wait(lambda: len(watcher.payloads("/config")) == 3)

        # `jetkiosk listen` sees the retained state: online, recognition ON, no Grace.
        args = ["listen", "--broker", broker.uri, "--timeout", "2", "--topic", f"{PREFIX}/#"]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert f"{PREFIX}/availability: online" in out and "grace_hopper" not in out
    watcher.close()


def test_listen_prints_events_readably_and_as_json(node_config, analyzer, broker, capsys):
    got = []
    listener = threading.Thread(target=lambda: got.append(main(
        ["listen", "--broker", broker.uri, "--json", "--count", "8", "--timeout", "120",
         "--topic", f"{PREFIX}/+/faces/events"])))
    listener.start()
    with make_runner(node_config, analyzer) as runner:
        runner.start().run()
    listener.join(130)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert got == [0] and len(records) == 8
    first = records[0]
    assert first["topic"] == f"{PREFIX}/cam0/faces/events" and not first["retained"]
    line = describe(first["topic"], first["payload"])
    assert "cam0 new" in line and "eileen_collins (match, d=" in line


def test_gallery_reject_of_a_recent_event_through_the_cli(node_config, analyzer, demo_clip,
                                                          broker, capsys):
    clip, _ = demo_clip
    node_config.run.source = f"file://{clip}?loop=1"
    watcher = Subscriber(broker.port, f"{PREFIX}/#", persistent=False)
    with make_runner(node_config, analyzer) as runner:
        thread = threading.Thread(target=runner.start().run)
        thread.start()
        try:
            assert watcher.wait(lambda: any(json.loads(p)["name"] == "eileen_collins" for p in
                                            watcher.payloads("/faces/events")), 120)
            event = next(e for e in map(json.loads, watcher.payloads("/faces/events"))
                         if e["name"] == "eileen_collins")
            common = ["--gallery", str(node_config.gallery_path), "--broker", broker.uri,
                      "--set", "mqtt.node=kiosk1", "--json"]
            assert main(["gallery", "reject", "eileen_collins", "--event", event["event_id"],
                         *common]) == 0
            reply = json.loads(capsys.readouterr().out)
            assert reply["ok"] and reply["name"] == "eileen_collins" and reply["rejections"] == 1
            assert reply["people"] == 2  # the node reloaded its gallery
            stored = load_gallery(node_config.gallery_path).rejections("eileen_collins")
            assert stored.shape == (1, analyzer.encoder.dim)  # an encoding, never a photo
            assert main(["gallery", "reject", "eileen_collins", "--event", "0" * 32, *common]) == 2
            assert "is not among this node's last 256 decisions" in capsys.readouterr().err
            assert main(["gallery", "reject", "nobody", "--event", event["event_id"], *common]) == 2
            assert "no person named 'nobody'" in capsys.readouterr().err
        finally:
            runner.loop.shutdown()
            thread.join(60)
    watcher.close()


def test_one_rule_names_the_prefix_for_nodes_and_listeners():
    from jetkiosk.edge.core.config import MqttConfig
    from jetkiosk.edge.mqtt.topics import Topics, every_node

    config = MqttConfig()
    assert every_node(config) == "jetkiosk/+/#"  # a listener hears every node
    config.node = "kiosk1"
    assert every_node(config) == f"{Topics.from_config(config).prefix}/#" == "jetkiosk/kiosk1/#"

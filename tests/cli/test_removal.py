"""`gallery remove` deletes: the person's encodings (no copy left in any file beside the
gallery), their events still queued in the outbox, their retained MQTT state on a real
broker (through the running node); it prints a receipt and writes an audit entry."""

from __future__ import annotations

import json
import threading

import pytest

from conftest import configure, enroll_demo_people, matcher_loader
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.audit import tail
from jetkiosk.edge.faces.gallery import archive_bytes, load_gallery
from jetkiosk.edge.mqtt.outbox import Outbox
from jetkiosk.edge.node.daemon import Runner
from mosquitto import Subscriber


def event(name):
    return json.dumps({"event": "new", "name": name, "decision": "match"}).encode()


@pytest.mark.parametrize("encrypt", [True, False])
def test_remove_deletes_everywhere_and_prints_a_receipt(config, analyzer, demo_clip, tmp_path,
                                                        capsys, encrypt):
    _, photos = demo_clip
    config.gallery.encrypt = encrypt
    enroll_demo_people(config, analyzer, photos)
    grace = load_gallery(config.gallery_path, limits=config.gallery).encodings("grace_hopper")
    outbox_path = tmp_path / "outbox.db"
    outbox = Outbox(outbox_path)
    for name in ("grace_hopper", "eileen_collins", "grace_hopper", None):
        outbox.put("jetkiosk/n/cam0/faces/events", event(name) if name else b"\xff not json")
    outbox.close()
    flags = ["--gallery", str(config.gallery_path), "--models", str(config.models_dir),
             "--set", f"mqtt.outbox={outbox_path}", "--set",
             f"gallery.encrypt={str(encrypt).lower()}", "--json"]
    assert main(["gallery", "remove", "grace_hopper", *flags]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["name"] == "grace_hopper" and receipt["encodings"] == 1
    assert receipt["outbox_events"] == 2 and receipt["audit_seq"] >= 1
    assert receipt["gallery"] == str(config.gallery_path) and receipt["time"]
    assert load_gallery(config.gallery_path, limits=config.gallery).names == ["eileen_collins"]
    outbox = Outbox(outbox_path)
    left = [m.payload for m in outbox.peek()]
    outbox.close()
    assert left == [event("eileen_collins"), b"\xff not json"]
    entry = tail(config.audit_path, 1)[0]
    assert entry["action"] == "remove" and entry["seq"] == receipt["audit_seq"]
    assert entry["outbox_events"] == 2
    # Not recoverable: no file beside the gallery (the gallery, its lock and key, the audit
    # trail, no temporary file) holds her encoding, sealed or not.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(p.name.startswith(".g") for p in files)
    for path in files:
        data = path.read_bytes()
        assert grace.tobytes() not in data and grace[0, :8].tobytes() not in data, path
    plain = archive_bytes(config.gallery_path, config.gallery)
    assert grace[0, :8].tobytes() not in plain
    assert main(["gallery", "remove", "grace_hopper", *flags]) == 2  # already gone
    assert "no person named 'grace_hopper'" in capsys.readouterr().err


def test_a_running_node_clears_the_removed_persons_retained_state(config, analyzer, demo_clip,
                                                                   broker, tmp_path):
    path, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    configure(config, {"run.source": f"file://{path}?loop=1&realtime=1", "run.sink": "mqtt",
                       "mqtt.broker": broker.uri, "mqtt.node": "n1",
                       "mqtt.outbox": str(tmp_path / "outbox.db")})
    subscriber = Subscriber(broker.port, "#")
    state = "jetkiosk/n1/person/grace_hopper/state"
    with Runner(config, analyzer, matcher_loader(config, analyzer)) as runner:
        thread = threading.Thread(target=lambda: runner.start().run(), daemon=True)
        thread.start()
        try:
            assert subscriber.wait(lambda: any(m.topic == state and m.payload
                                               for m in subscriber.messages), 120)
            assert main(["gallery", "remove", "grace_hopper", "--gallery",
                         str(config.gallery_path), "--set",
                         f"mqtt.outbox={tmp_path / 'outbox.db'}"]) == 0
            assert subscriber.wait(lambda: [m.payload for m in subscriber.messages
                                            if m.topic == state][-1:] == [b""], 60)
            assert subscriber.wait(lambda: {"p": "binary_sensor"} in _components(subscriber))
        finally:
            runner.loop.shutdown()
            thread.join(60)
    fresh = Subscriber(broker.port, "jetkiosk/n1/person/#", persistent=False)
    assert fresh.wait(lambda: any(m.topic.endswith("eileen_collins/state")
                                  for m in fresh.messages), 10)
    assert not any(m.topic == state for m in fresh.messages)  # nothing retained for her
    fresh.close()
    subscriber.close()


def _components(subscriber) -> list:
    """The components of the latest Home Assistant discovery message."""
    found = [json.loads(m.payload) for m in subscriber.messages
             if m.topic.startswith("homeassistant/") and m.payload]
    return list(found[-1]["components"].values()) if found else []

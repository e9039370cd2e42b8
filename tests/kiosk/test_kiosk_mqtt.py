"""The kiosk's style commands on a real Mosquitto: a style/set takes effect on the frames
shown, the retained style state follows (checked against its JSON Schema), and bad
commands are refused with a reply while the kiosk keeps running."""

from __future__ import annotations

import json
import threading

import jsonschema
import numpy as np

from conftest import BUNDLED_STYLES, configure
from jetkiosk.edge.core.config import Config
from jetkiosk.edge.kiosk.app import KioskService
from jetkiosk.edge.kiosk.catalog import BUNDLED
from jetkiosk.edge.kiosk.outputs import Output
from jetkiosk.edge.mqtt.payloads import schema
from mosquitto import Subscriber

PREFIX = "jetkiosk/kiosk1"


class Recorder(Output):
    """Keeps the last frame shown (the kiosk's real outputs are tested on real screens)."""

    uri = "recorder://"

    def __init__(self):
        self.frames = 0
        self.last = None

    def show(self, frame):
        self.last, self.frames = frame.copy(), self.frames + 1
        return -1


def kiosk_config(config, broker, still_clip, models):
    values = {"kiosk.source": f"file://{still_clip}?loop=1", "kiosk.output": "file:///dev/null",
              "kiosk.style": "halftone", "kiosk.width": 320, "kiosk.mqtt": True,
              "mqtt.broker": broker.uri, "mqtt.node": "kiosk1", "mqtt.stats_interval": 0.5,
              "models.dir": str(models)}
    return configure(config, values)


def send(subscriber, target, payload):
    subscriber.client.publish(f"{PREFIX}/{target}/set", payload, qos=1).wait_for_publish(10)


def test_style_command_switches_the_kiosk_and_bad_ones_get_replies(broker, still_clip,
                                                                   tmp_path):
    # A corrupt style in the models folder: refused on request, the kiosk goes on.
    models = tmp_path / "models"
    models.mkdir()
    manifest = json.loads((BUNDLED / "style-mosaic.json").read_text())
    manifest.update(name="style-broken", file="style-broken.onnx")
    (models / "style-broken.json").write_text(json.dumps(manifest))
    (models / "style-broken.onnx").write_bytes(b"not a model")
    service = KioskService(kiosk_config(Config(), broker, still_clip, models))
    recorder = Recorder()
    service.kiosk.outputs = [recorder]
    subscriber = Subscriber(broker.port, f"{PREFIX}/#")
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    try:
        def state():
            found = subscriber.payloads("/style/state")
            return json.loads(found[-1]) if found else None

        assert subscriber.wait(lambda: state() and state()["frames"] > 0)
        jsonschema.validate(state(), schema("style_state"))
        assert state()["style"] == "halftone" and "broken" in state()["styles"]
        before = recorder.last.astype(np.float32)

        send(subscriber, "style", b'{"action": "set", "style": "mosaic", "request_id": "r1"}')
        assert subscriber.wait(lambda: state()["style"] == "mosaic")
        frames = recorder.frames
        assert subscriber.wait(lambda: recorder.frames > frames + 2)
        assert np.abs(recorder.last.astype(np.float32) - before).mean() > 20  # it shows

        replies = lambda: [json.loads(p) for p in subscriber.payloads("/response")]
        send(subscriber, "style", b'{"action": "set", "style": "cubism", "request_id": "r2"}')
        send(subscriber, "style", b'{"action": "set", "style": "broken", "request_id": "r3"}')
        send(subscriber, "style", b'{"action": "set", "request_id": "r4"}')
        send(subscriber, "style", b'{"action": "enable", "request_id": "r5"}')
        send(subscriber, "style", b"\xff not json")
        assert subscriber.wait(lambda: len(replies()) >= 6)
        by_id = {r["request_id"]: r for r in replies()}
        for reply in replies():
            jsonschema.validate(reply, schema("response"))
        assert by_id["r1"]["ok"] and by_id["r1"]["result"] == {"style": "mosaic"}
        assert not by_id["r2"]["ok"] and "unknown style 'cubism' (available: broken, " \
            f"{', '.join(BUNDLED_STYLES)})" in by_id["r2"]["error"]
        assert not by_id["r3"]["ok"] and "style-broken.onnx: sha256" in by_id["r3"]["error"]
        assert not by_id["r4"]["ok"] and "needs \"style\"" in by_id["r4"]["error"]
        assert not by_id["r5"]["ok"] and "'enable' is not allowed on style" in by_id["r5"]["error"]
        assert any("not valid UTF-8 JSON" in (r["error"] or "") for r in replies())
        assert state()["style"] == "mosaic" and runner.is_alive()
        assert subscriber.payloads("/kiosk/availability")[-1] == b"online"
    finally:
        service.kiosk.stop.set()
        runner.join(20)
        assert not runner.is_alive()
    assert subscriber.wait(lambda: subscriber.payloads("/kiosk/availability")[-1] == b"offline")
    subscriber.close()


def test_the_kiosk_stops_and_exits_1_when_its_mqtt_link_gives_up(broker, still_clip, tmp_path,
                                                                   monkeypatch, capsys):
    """A dead link is never silent: the kiosk stops and `jetkiosk kiosk` exits 1 so that
    systemd restarts it (2 is for a configuration to fix and is not restarted)."""
    from jetkiosk.edge.cli.main import main
    from jetkiosk.edge.mqtt.link import MqttLink
    from jetkiosk.edge.mqtt.outbox import Outbox

    def peek(self, *args, **kwargs):
        raise OSError("injected: the outbox cannot be read")

    monkeypatch.setattr(MqttLink, "max_failures", 3)
    monkeypatch.setattr(Outbox, "peek", peek)
    code = main(["kiosk", "--source", f"file://{still_clip}?loop=1", "--output",
                 f"file://{tmp_path / 'out.mp4'}", "--style", "mosaic", "--broker", broker.uri,
                 "--models", str(tmp_path), "--set", "kiosk.width=160", "--set",
                 "mqtt.reconnect_min=0.05", "--set", "mqtt.reconnect_max=0.1"])
    assert code == 1
    assert "failed 3 times in a row" in capsys.readouterr().err

"""Walk-up enrollment end to end: a kiosk with its face path on a clip of a person turning
their head, a real Mosquitto, the CLI against the running kiosk, keys from the screen; the
gallery file is what is checked, and that nothing else was written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from conftest import configure, matcher_loader
from jetkiosk.edge.cli.demo import sample_photos
from jetkiosk.edge.core.audit import tail
from jetkiosk.edge.faces.gallery import Gallery, load_gallery
from jetkiosk.edge.kiosk.app import KioskService
from jetkiosk.edge.kiosk.faces import face_config
from jetkiosk.edge.kiosk.outputs import Output
from jetkiosk.edge.mqtt.payloads import schema
from mosquitto import Subscriber

PREFIX = "jetkiosk/kiosk1"
# Head turns the clip holds, as warps of a frontal photo (see ``turned``); with
# kiosk.enroll_turn = 0.2 they fill the five poses: straight, -0.1, 0.1, -0.2, 0.2.
TURNS = (0.15, -0.1, -0.45, 0.45, 0.68)


def turned(photo: np.ndarray, nose_x: float, eyes: float, amount: float) -> np.ndarray:
    """``photo`` with the middle of the face pushed sideways more than its sides: the
    landmarks move as in a head turn (yaw about -0.3 to +0.2 for amounts -0.6 to 0.7)."""
    height, width = photo.shape[:2]
    xs = np.arange(width, dtype=np.float32)
    shift = amount * eyes * np.exp(-((xs - nose_x) / (0.6 * eyes)) ** 2)
    map_x = np.tile(xs - shift, (height, 1)).astype(np.float32)
    map_y = np.tile(np.arange(height, dtype=np.float32)[:, None], (1, width))
    return cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def write_clip(path: Path, frames) -> Path:
    frames = list(frames)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def turning_clip(analyzer, tmp_path_factory) -> Path:
    """Eileen Collins (scikit-image's astronaut) holding each of ``TURNS`` for 8 frames."""
    photo = sample_photos()["eileen_collins"]
    marks = analyzer.analyze(photo)[0].detection.landmarks
    eyes = float(marks[1][0] - marks[0][0])
    frames = [turned(photo, float(marks[2][0]), eyes, amount)
              for amount in TURNS for _ in range(8)]
    return write_clip(tmp_path_factory.mktemp("turning") / "turning.avi", frames)


class Keys(Output):
    """A screen whose viewer presses ``keys`` (frame number -> key) and that keeps the last
    frame shown."""

    uri = "keys://"

    def __init__(self, keys=None):
        self.keys = dict(keys or {})
        self.frames = 0
        self.last = None

    def show(self, frame):
        self.frames += 1
        self.last = frame
        return ord(self.keys.pop(self.frames)) if self.frames in self.keys else -1


@pytest.fixture
def walk_up(config, analyzer, tmp_path):
    """A kiosk configuration with the face path and a gallery of Grace Hopper alone."""
    photos = sample_photos()
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    gallery.add("grace_hopper", analyzer.analyze(photos["grace_hopper"])[0].encoding[None])
    gallery.save(config.gallery_path)
    return configure(config, {"kiosk.output": "file:///dev/null", "kiosk.width": 320,
                              "kiosk.style": "mosaic", "kiosk.faces": True,
                              "kiosk.faces_nice": 0, "kiosk.enroll_turn": 0.2,
                              "kiosk.enroll_timeout": 120.0, "run.sink": "jsonl:/dev/null",
                              "run.camera": "cam0"})


def run_kiosk(config, analyzer, output, announced=None):
    """The kiosk on a thread of its own; ``announced``: a list that gets each enrollment
    step (instead of MQTT)."""
    service = KioskService(config, analyzer, matcher_loader(face_config(config), analyzer))
    service.kiosk.outputs = [output]
    if announced is not None:
        service.faces.enrollment.announce = announced.append
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return service, thread


def files_under(path: Path):
    return {p.relative_to(path) for p in path.rglob("*") if p.is_file()}


def cli(*args, config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jetkiosk.edge.cli.main", *args, "--config",
                             str(config_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_enrolled_from_the_cli_with_consent_over_mqtt_then_recognised(
        walk_up, analyzer, broker, turning_clip, tmp_path):
    config = configure(walk_up, {
        "kiosk.source": f"file://{turning_clip}?loop=1", "kiosk.mqtt": True,
        "mqtt.broker": broker.uri, "mqtt.node": "kiosk1",
        "mqtt.outbox": str(tmp_path / "outbox.db")})
    before = files_under(tmp_path)
    original = config.gallery_path.read_bytes()
    subscriber = Subscriber(broker.port, f"{PREFIX}/#")
    service, thread = run_kiosk(config, analyzer, Keys())
    try:
        assert subscriber.wait(lambda: subscriber.payloads("/style/state"), 60)
        # Refused, with a reply each, the gallery untouched: a bad name, a taken name,
        # an accept with nobody asked, an unknown action.
        for command, error in (({"action": "start", "name": "a/b"}, "invalid person name"),
                               ({"action": "start", "name": "grace_hopper"},
                                "'grace_hopper' is already enrolled"),
                               ({"action": "accept"}, "no enrollment is waiting for consent"),
                               ({"action": "set"}, "not allowed on enroll")):
            subscriber.client.publish(f"{PREFIX}/enroll/set", json.dumps(command), qos=1)
            assert subscriber.wait(lambda error=error: any(
                error in (json.loads(p)["error"] or "")
                for p in subscriber.payloads("/response")), 30), error
        assert config.gallery_path.read_bytes() == original

        toml = tmp_path / "cli.toml"
        toml.write_text(f'[mqtt]\nbroker = "{broker.uri}"\nnode = "kiosk1"\n'
                        '[kiosk]\nenroll_timeout = 120\n')
        enroll = cli("enroll", "ada", "--kiosk", config_path=toml)
        assert subscriber.wait(lambda: any(json.loads(p)["state"] == "consent" for p in
                                           subscriber.payloads("/enroll/state")), 60)
        assert config.gallery_path.read_bytes() == original  # nothing before consent
        subscriber.client.publish(f"{PREFIX}/enroll/set", json.dumps({"action": "accept"}),
                                  qos=1)
        out, err = enroll.communicate(timeout=300)
        assert enroll.returncode == 0, err
        steps = [line.split(":")[0] for line in out.splitlines()]
        assert steps[0] == "consent" and steps[-1] == "saved" and "capture" in steps
        assert "saved: Enrolled: ada" in out

        saved = load_gallery(config.gallery_path)
        assert saved.names == ["ada", "grace_hopper"]
        rows = saved.encodings("ada")
        assert len(rows) == 5 and len({r.tobytes() for r in rows}) == 5
        # Varied shots: their spread is well above a held pose's frame-to-frame noise.
        assert np.sum((rows[:, None] - rows[None]) ** 2, axis=2).max() > 0.1

        # Recognised afterwards, by the same running kiosk.
        assert subscriber.wait(lambda: any(
            json.loads(p)["name"] == "ada" and json.loads(p)["decision"] == "match"
            for p in subscriber.payloads("/cam0/faces/events")), 120)
    finally:
        service.kiosk.stop.set()
        thread.join(120)
        subscriber.close()
    check = jsonschema.Draft7Validator(schema("enroll_state"))
    states = [json.loads(p) for p in subscriber.payloads("/enroll/state")]
    for state in states:
        check.validate(state)
    assert [s["shots"] for s in states if s["state"] == "capture"] == [0, 1, 2, 3, 4]
    # No photo anywhere: beside the broker's own files, only the gallery's lock, the outbox,
    # the audit trail (no encodings in it) and the CLI's configuration are new.
    new = {p for p in files_under(tmp_path) - before if p.parts[0] != "broker"
           and not p.name.startswith("outbox.db")}
    assert new == {Path(name) for name in ("gallery.npz.lock", "cli.toml", "audit.jsonl",
                                           "audit.jsonl.lock")}
    enrolled = [e for e in tail(config.audit_path, 100) if e["action"] == "enroll"]
    assert [(e["name"], e["encodings"], e["source"]) for e in enrolled] == [("ada", 5, "kiosk")]


def test_keys_at_the_kiosk_two_faces_stop_it_and_the_screen_says_so(walk_up, analyzer,
                                                                    tmp_path):
    photos = sample_photos()
    pair = np.concatenate([cv2.resize(photos["eileen_collins"], (360, 360)),
                           cv2.resize(photos["grace_hopper"], (360, 360))[:, :, :]], axis=1)
    clip = write_clip(tmp_path / "two.avi", [pair] * 250)
    config = configure(walk_up, {"kiosk.source": f"file://{clip}"})
    original = config.gallery_path.read_bytes()
    messages: list = []
    _, thread = run_kiosk(config, analyzer, Keys({5: "e", 15: "y"}), messages)
    thread.join(300)
    assert [m["state"] for m in messages][:2] == ["consent", "capture"]
    assert messages[-1]["state"] == "failed"
    assert messages[-1]["message"] == "Only one person at a time, please: nothing was saved."
    assert messages[0]["name"].startswith("visitor-")
    assert config.gallery_path.read_bytes() == original


def test_a_camera_lost_mid_enrollment_stops_it_and_saves_nothing(walk_up, analyzer, tmp_path):
    empty = write_clip(tmp_path / "empty.avi", [np.full((360, 640, 3), 90, np.uint8)] * 60)
    config = configure(walk_up, {"kiosk.source": f"file://{empty}"})
    original = config.gallery_path.read_bytes()
    messages: list = []
    _, thread = run_kiosk(config, analyzer, Keys({3: "e", 6: "y"}), messages)
    thread.join(300)
    assert [m["state"] for m in messages] == ["consent", "capture", "failed"]
    assert messages[-1]["message"] == "The camera was lost: nothing was saved."
    assert config.gallery_path.read_bytes() == original

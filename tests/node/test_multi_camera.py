"""Several cameras in one node: `run` with repeated --source and with [[run.cameras]], real
clips through the real models and a real Mosquitto; one detector run per frame and one
encoder call per tick across cameras; configuration errors naming the key; the watchdog over
every reader."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import closing
from typing import Dict, List, Set, Tuple

import jsonschema
import numpy as np
import pytest

from conftest import enroll_demo_people, read_jsonl
from jetkiosk.edge.capture.sources import Source, open_source
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import CameraConfig, load_config
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.mqtt.outbox import Outbox
from jetkiosk.edge.mqtt.payloads import schema
from jetkiosk.edge.node.cameras import camera_sources, with_sources
from jetkiosk.edge.node.loop import CaptureLoop
from jetkiosk.edge.node.sinks import open_sink
from jetkiosk.edge.service.sd_notify import Notifier
from mosquitto import Subscriber

PREFIX = "jetkiosk/multi"


def names_by_camera(events: List[dict]) -> Dict[str, Set[Tuple[str, object]]]:
    found: Dict[str, Set[Tuple[str, object]]] = {}
    for e in events:
        found.setdefault(e["camera"], set()).add((e["event"], e["name"]))
    return found


# The demo clip: Eileen, Grace, then a stranger beside Eileen; the still clip: Eileen alone.
DEMO = {("new", "eileen_collins"), ("end", "eileen_collins"), ("new", "grace_hopper"),
        ("end", "grace_hopper"), ("new", None), ("end", None)}
STILL = {("new", "eileen_collins"), ("end", "eileen_collins")}


def on_topic(sub: Subscriber) -> Dict[str, List[dict]]:
    """The face events received so far, by topic, in order."""
    found: Dict[str, List[dict]] = {}
    for m in list(sub.messages):
        if m.topic.endswith("/faces/events"):
            found.setdefault(m.topic, []).append(json.loads(m.payload))
    return found


def test_two_clips_as_two_cameras_on_mqtt_from_the_command_line(
        config, analyzer, demo_clip, still_clip, broker, tmp_path):
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    outbox = tmp_path / "outbox.db"
    events_file = tmp_path / "events.jsonl"
    try:
        code = main(["run", "--source", f"a=file://{clip}", "--source", f"b=file://{still_clip}",
                     "--sink", f"mqtt,jsonl:{events_file}", "--broker", broker.uri,
                     "--models", str(config.models_dir), "--gallery", str(config.gallery_path),
                     "--set", "mqtt.node=multi", "--set", f"mqtt.outbox={outbox}",
                     "--set", "mqtt.stats_interval=0.2"])
        assert code == 0
        events = read_jsonl(events_file)
        assert names_by_camera(events) == {"a": DEMO, "b": STILL}
        assert sub.wait(lambda: sum(map(len, on_topic(sub).values())) >= len(events))
        assert set(on_topic(sub)) == {f"{PREFIX}/a/faces/events", f"{PREFIX}/b/faces/events"}
        for camera in ("a", "b"):
            got = on_topic(sub)[f"{PREFIX}/{camera}/faces/events"]
            assert list(dict.fromkeys(e["event_id"] for e in got)) == \
                [e["event_id"] for e in events if e["camera"] == camera]  # QoS 1: maybe twice
            topic = f"{PREFIX}/{camera}/availability"  # the last message may still be on its way
            assert sub.wait(lambda t=topic: sub.payloads(t) == [b"online", b"offline"]), \
                sub.payloads(topic)
        assert Outbox(outbox).depth == 0  # one outbox, drained
        stats = [json.loads(p) for p in sub.payloads(f"{PREFIX}/stats")]
        assert stats
        for payload in stats:
            jsonschema.validate(payload, schema("stats"))
        last = stats[-1]
        assert set(last["cameras"]) == {"a", "b"}
        assert last["frames"] == sum(c["frames"] for c in last["cameras"].values())
    finally:
        sub.close()
    retained = Subscriber(broker.port, "#", persistent=False)  # what a newcomer is told
    try:
        assert retained.wait(lambda: retained.payloads(f"{PREFIX}/b/availability"))
        for camera in ("a", "b"):
            assert retained.payloads(f"{PREFIX}/{camera}/availability") == [b"offline"]
        config_message = json.loads(retained.payloads("homeassistant/device/jetkiosk_multi/"
                                                      "config")[-1])
        events_topics = {c.get("state_topic") for c in config_message["components"].values()
                         if c.get("p") == "event"}
        assert events_topics == {f"{PREFIX}/a/faces/events", f"{PREFIX}/b/faces/events"}
    finally:
        retained.close()


def test_cameras_from_the_configuration_file(config, analyzer, demo_clip, still_clip, tmp_path,
                                             capsys):
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    events_file = tmp_path / "events.jsonl"
    path = tmp_path / "config.toml"
    path.write_text(f'[models]\ndir = "{config.models_dir}"\n'
                    f'[gallery]\npath = "{config.gallery_path}"\n'
                    f'[run]\nsink = "jsonl:{events_file}"\n'
                    f'[[run.cameras]]\nname = "door"\nsource = "file://{clip}"\n'
                    f'[[run.cameras]]\nname = "hall"\nsource = "file://{still_clip}"\n')
    assert main(["config", "check", "--config", str(path)]) == 0
    assert 'cameras = [{name = "door", source = "file://' in capsys.readouterr().out
    assert main(["run", "--config", str(path)]) == 0
    assert names_by_camera(read_jsonl(events_file)) == {"door": DEMO, "hall": STILL}


@pytest.mark.parametrize("cameras, why", [
    ('{name = "a", source = "file://x.mp4"}, {name = "a", source = "file://y.mp4"}',
     "run.cameras[1].name: 'a' names another camera too"),
    ('{name = "a/b", source = "file://x.mp4"}',
     "run.cameras[0].name: 'a/b' cannot be an MQTT topic level"),
    ('{name = "a"}', "run.cameras[0].source: missing"),
    ('{source = "file://x.mp4"}', "run.cameras[0].name: missing"),
    ('{name = "a", source = "usb://0"}', "run.cameras[0].source: usb://0: unknown source scheme"),
    ('{name = "a", sorce = "file://x.mp4"}', "run.cameras[0].sorce: unknown key"),
    ('{name = "a", source = 3}', "run.cameras[0].source: expected str, got 3"),
])
def test_bad_cameras_are_refused_naming_the_key_with_exit_2(cameras, why, tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(f"[run]\ncameras = [{cameras}]\n")
    assert main(["run", "--config", str(path)]) == 2
    assert why in capsys.readouterr().err
    assert main(["config", "check", "--config", str(path)]) == 2
    assert why in capsys.readouterr().err


def test_source_flags_and_their_names(tmp_path, capsys):
    run = load_config().run
    assert camera_sources(run) == []
    plain = with_sources(load_config(), ["file://a.mp4?loop=1"])
    assert camera_sources(plain.run) == [("cam0", "file://a.mp4?loop=1")]  # as before
    several = with_sources(load_config(overrides=["run.camera=door"]),
                           ["file://a.mp4", "hall=rtsp://h/s?x=1", "file:///b/"])
    assert camera_sources(several.run) == [("door", "file://a.mp4"),
                                           ("hall", "rtsp://h/s?x=1"), ("cam2", "file:///b/")]
    both = load_config(overrides=["run.source=file://a.mp4"])
    both.run.cameras = (CameraConfig("b", "file://b.mp4"),)
    with pytest.raises(Exception, match="give either run.source"):
        camera_sources(both.run)
    assert main(["run", "--source", "a=file://x.mp4", "--source", "a=file://y.mp4"]) == 2
    assert "run.cameras[1].name: 'a' names another camera too" in capsys.readouterr().err
    assert main(["run", "--source", "a+=file://x.mp4"]) == 2
    assert "run.cameras[0].name: 'a+' cannot be an MQTT topic level" in \
        capsys.readouterr().err


class Recorder:
    """Wraps a real backend's ``run``: the tick it ran in and its batch size, per call."""

    def __init__(self, backend, loop: CaptureLoop):
        self.real, self.loop = backend.run, loop
        self.calls: List[Tuple[int, int]] = []

    def __call__(self, feeds):
        (batch,) = {array.shape[0] for array in feeds.values()}
        self.calls.append((self.loop.ticks, batch))
        return self.real(feeds)


def test_one_encoder_call_per_tick_across_cameras(
        config, analyzer, demo_clip, still_clip, tmp_path, monkeypatch):
    clip, photos = demo_clip
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    gallery.add("eileen_collins", analyzer.analyze(photos["eileen_collins"])[0].encoding[None])
    config.tracker.reembed_every = 1  # every face every frame: the most encoder work per tick
    loop = CaptureLoop(config, analyzer, Matcher(gallery, 1.0),
                       open_sink(f"jsonl:{tmp_path / 'events.jsonl'}"), cameras=["a", "b"])
    detector, encoder = (Recorder(m.backend, loop) for m in (analyzer.detector, analyzer.encoder))
    monkeypatch.setattr(analyzer.detector.backend, "run", detector)
    monkeypatch.setattr(analyzer.encoder.backend, "run", encoder)
    due: Dict[int, Dict[str, int]] = {}  # tick -> camera -> faces picked for encoding
    for camera in loop.cameras:
        def pick(tracks, pick=camera.schedule.pick, name=camera.name):
            chosen = pick(tracks)
            due.setdefault(loop.ticks, {})[name] = len(chosen)
            return chosen
        monkeypatch.setattr(camera.schedule, "pick", pick)
    with closing(open_source(f"file://{clip}")) as a, \
            closing(open_source(f"file://{still_clip}")) as b:
        assert loop.run(a, b) == 225 + 60  # every frame of both clips
    loop.sink.close()
    assert [c.frames for c in loop.cameras] == [225, 60]
    both = [tick for tick, cams in due.items() if len(cams) == 2]
    assert both  # ticks with a frame of each camera
    for tick, cams in due.items():  # the detector: one run per frame (faster on the CPU)
        assert [batch for t, batch in detector.calls if t == tick] == [1] * len(cams)
        encoded = [batch for t, batch in encoder.calls if t == tick]
        assert len(encoded) <= 1 and sum(encoded) <= sum(cams.values())
    mixed = [tick for tick in both if all(due[tick].values())
             and [batch for t, batch in encoder.calls if t == tick] == [sum(due[tick].values())]]
    assert mixed  # faces of both cameras, encoded together in one call
    events = read_jsonl(tmp_path / "events.jsonl")
    assert {e["camera"] for e in events} == {"a", "b"}
    assert ("new", "eileen_collins") in names_by_camera(events)["b"]


class HangingSource(Source):
    """Blank frames until ``hang`` is set, then a read that blocks without a sign of life
    until ``release``, then a few more frames."""

    uri = "test://hanging"

    def __init__(self) -> None:
        self.hang, self.release, self.hung = (threading.Event() for _ in range(3))

    def frames(self):
        frame = np.zeros((240, 320, 3), np.uint8)
        while not self.hang.is_set():
            time.sleep(0.05)
            yield frame, time.monotonic()
        self.hung.set()
        self.release.wait()
        for _ in range(3):
            yield frame, time.monotonic()


def messages_until_silent(sock: socket.socket, silence: float, most: int = 200) -> List[bytes]:
    """What arrives until nothing has for ``silence`` seconds (AssertionError after ``most``
    messages: the pings never stopped)."""
    sock.settimeout(silence)
    got = []
    for _ in range(most):
        try:
            got.append(sock.recv(4096))
        except socket.timeout:
            return got
    raise AssertionError(f"still {got[-1]!r} after {most} messages")


def test_a_hung_camera_stops_the_watchdog_while_the_other_goes_on(
        config, analyzer, still_clip, tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        gallery = Gallery("e", "f", analyzer.encoder.dim)
        loop = CaptureLoop(config, analyzer, Matcher(gallery, 1.0),
                           open_sink("jsonl:" + str(tmp_path / "events.jsonl")), notifier,
                           cameras=["stuck", "live"])
        hanging = HangingSource()
        clip = open_source(f"file://{still_clip}?loop=1")  # endless until stopped
        thread = threading.Thread(target=loop.run, args=(hanging, clip))
        thread.start()
        try:
            sock.settimeout(120)
            assert sock.recv(4096).startswith(b"READY=1")
            assert sock.recv(4096) == b"WATCHDOG=1"
            hanging.hang.set()
            assert hanging.hung.wait(30)
            frames = loop.cameras[1].frames
            # the reader counts as alive for a watchdog period (at least 1 s) after its last
            # frame: the pings stop after that and stay stopped
            assert set(messages_until_silent(sock, 2.0)) <= {b"WATCHDOG=1"}
            assert set(messages_until_silent(sock, 2.0)) == set()
            assert loop.cameras[1].frames > frames  # the other camera went on all along
            hanging.release.set()  # the read returns: the pings resume
            sock.settimeout(30)
            assert sock.recv(4096) == b"WATCHDOG=1"
        finally:
            hanging.release.set()
            loop.shutdown()
            thread.join(60)
            clip.close()
        assert b"STOPPING=1" in messages_until_silent(sock, 1.0)

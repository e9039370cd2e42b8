"""Snapshots (kiosk.snapshots) on a real kiosk over a looping clip: a tap on the page's
button in headless Chromium, the S key and the MQTT command each take the frame as shown
(stylized, not the camera's frame), kept in memory and served at an unguessable URL whose
QR code the screen shows, until kiosk.snapshot_ttl ends it (404); a guessed URL is a 404;
with snapshots off nothing of it exists."""

from __future__ import annotations

import json
import logging
import secrets
import urllib.error
from urllib.parse import urlsplit

import cv2
import jsonschema
import numpy as np
import pytest
from kiosk_web import Running, eventually, open_page, tap
from skimage import data

from conftest import configure, enroll_demo_people, matcher_loader
from jetkiosk.edge.core.config import Config
from jetkiosk.edge.core.errors import ConfigError
from jetkiosk.edge.kiosk.app import KioskService
from jetkiosk.edge.kiosk.faces import face_config
from jetkiosk.edge.kiosk.outputs import Output
from jetkiosk.edge.kiosk.overlay import pixelate, scale_box
from jetkiosk.edge.kiosk.snapshots import SnapshotStore, reachable_host
from jetkiosk.edge.mqtt.payloads import schema
from mosquitto import Subscriber

SOURCE = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (320, 180))
TTL = 4.0  # seconds: long enough to fetch it at once, short enough to wait out


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def local_path(url: str) -> str:
    """The snapshot URL's path, fetched over loopback (its host is the LAN address)."""
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.path.startswith("/snapshots/")
    return parts.path


def expired(kiosk: Running, path: str) -> bool:
    try:
        kiosk.get(path)
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


def shown_qr(kiosk: Running) -> str:
    """What the QR code on the frame shown now says ('' when none is read)."""
    return cv2.QRCodeDetector().detectAndDecode(decode(kiosk.get("/snapshot.jpg").read()))[0]


@pytest.fixture
def kiosk(still_clip):
    running = Running(still_clip, {"kiosk.snapshots": True, "kiosk.snapshot_ttl": TTL,
                                   "kiosk.display_width": 640})
    yield running
    running.stop()


def test_a_tap_takes_the_stylized_frame_served_until_its_ttl_and_shown_as_a_qr_code(
        kiosk, tmp_path):
    browser = open_page(kiosk, tmp_path)
    try:
        tap(browser, "#stream")
        assert eventually(lambda: browser.evaluate(
            "document.getElementById('picker').classList.contains('open')"))
        before = len(kiosk.service.kiosk.snapshots)
        tap(browser, "#snap")
        assert eventually(lambda: len(kiosk.service.kiosk.snapshots) == before + 1)
        assert eventually(lambda: "Scan the code" in browser.evaluate(
            "document.getElementById('status').textContent"))
    finally:
        browser.close()
    url = eventually(lambda: shown_qr(kiosk))  # the screen shows the URL as a QR code
    assert url, "no QR code on the screen"
    jpeg = kiosk.get(local_path(url)).read()
    image = decode(jpeg)
    assert image.shape == (360, 640, 3)  # the frame as shown (kiosk.display_width)
    # Stylized: far from the camera's frame, and no QR code in it.
    assert np.abs(image.astype(np.float32) - cv2.resize(SOURCE, (640, 360))).mean() > 25
    assert cv2.QRCodeDetector().detectAndDecode(image)[0] == ""
    host = urlsplit(url).hostname
    assert host == reachable_host("127.0.0.1") and host != "127.0.0.1"  # reachable on the LAN
    assert eventually(lambda: expired(kiosk, local_path(url)))  # gone after the TTL
    assert eventually(lambda: shown_qr(kiosk) == "")  # and its QR code with it


def test_posted_snapshots_and_guessed_urls(kiosk, caplog):
    caplog.set_level(logging.DEBUG)
    result = json.loads(kiosk.post("/snapshot", b"").read())
    jsonschema.validate(result, schema("snapshot_result"))
    assert result["expires_in"] == TTL
    path = local_path(result["url"])
    token = path[len("/snapshots/"):-len(".jpg")]
    assert len(token) >= 32  # 192 random bits, URL-safe base64
    image = decode(kiosk.get(path).read())
    assert np.abs(image.astype(np.float32) - cv2.resize(SOURCE, (640, 360))).mean() > 25
    for guess in (f"/snapshots/{secrets.token_urlsafe(24)}.jpg", f"/snapshots/{token[:-1]}.jpg",
                  f"/snapshots/{token}", f"/snapshots/{token}.jpg.jpg", "/snapshots/",
                  f"/snapshots/../snapshots/{token}.jpg", f"/snapshots/{token.upper()}.jpg"):
        assert expired(kiosk, guess), guess
    assert "GET /snapshots/..." in caplog.text and token not in caplog.text  # never logged
    second = json.loads(kiosk.post("/snapshot", b"").read())
    assert second["url"] != result["url"]
    assert eventually(lambda: expired(kiosk, path) and expired(kiosk, local_path(second["url"])))


def test_the_s_key_takes_one_and_nothing_is_written_to_disk(kiosk, tmp_path, monkeypatch):
    written = []
    real_open = open

    def watch(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            written.append(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watch)
    monkeypatch.setattr(cv2, "imwrite", lambda *a, **k: written.append(a[0]))
    kiosk.service.kiosk.on_key(ord("s"))
    assert len(kiosk.service.kiosk.snapshots) == 1
    assert eventually(lambda: shown_qr(kiosk))
    assert written == []


def test_the_store_ends_each_one_at_its_ttl_and_keeps_few():
    now = [100.0]
    store = SnapshotStore(10.0, limit=3, clock=lambda: now[0])
    first = store.add(b"1")
    assert store.lookup(first.path) == b"1" and store.lookup("/snapshots/x.jpg") is None
    now[0] = 109.9
    assert store.get(first.token) == b"1"
    now[0] = 110.0
    assert store.get(first.token) is None and len(store) == 0
    kept = [store.add(bytes([i])) for i in range(5)]
    assert len(store) == 3 and store.get(kept[0].token) is None and store.get(kept[4].token)
    with pytest.raises(ValueError):
        SnapshotStore(0)


def test_snapshots_need_an_http_output(still_clip, tmp_path):
    config = configure(Config(), {"kiosk.source": f"file://{still_clip}",
                                  "kiosk.output": f"file://{tmp_path / 'out.avi'}",
                                  "kiosk.snapshots": True})
    with pytest.raises(ConfigError, match="kiosk.snapshots: needs an http:// output"):
        KioskService(config)


def test_off_by_default_the_s_key_does_nothing(still_clip):
    running = Running(still_clip, {})
    try:
        assert running.service.kiosk.snapshots is None
        running.service.kiosk.on_key(ord("s"))
        assert 'id="snap"' not in running.get("/").read().decode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            running.post("/snapshot", b"")
        assert caught.value.code == 404
        assert "snapshots are off" in json.loads(caught.value.read())["error"]
    finally:
        running.stop()


def test_the_mqtt_command_takes_one(broker, still_clip):
    running = Running(still_clip, {
        "kiosk.snapshots": True, "kiosk.snapshot_ttl": TTL, "kiosk.mqtt": True,
        "mqtt.broker": broker.uri, "mqtt.node": "kiosk1"})
    subscriber = Subscriber(broker.port, "jetkiosk/kiosk1/#")
    try:
        assert subscriber.wait(lambda: subscriber.payloads("/kiosk/availability")
                               and subscriber.payloads("/kiosk/availability")[-1] == b"online")
        publish = subscriber.client.publish
        publish("jetkiosk/kiosk1/snapshot/set", b'{"action": "take", "request_id": "s1"}',
                qos=1).wait_for_publish(10)
        publish("jetkiosk/kiosk1/snapshot/set", b'{"action": "set", "request_id": "s2"}',
                qos=1).wait_for_publish(10)
        replies = lambda: {r["request_id"]: r for r in
                           (json.loads(p) for p in subscriber.payloads("/response"))}
        assert subscriber.wait(lambda: {"s1", "s2"} <= set(replies()))
        for reply in replies().values():
            jsonschema.validate(reply, schema("response"))
        taken = replies()["s1"]
        assert taken["ok"] and taken["target"] == "snapshot", taken
        jsonschema.validate(taken["result"], schema("snapshot_result"))
        decode(running.get(local_path(taken["result"]["url"])).read())
        assert not replies()["s2"]["ok"] and "'set' is not allowed on snapshot" in \
            replies()["s2"]["error"]
    finally:
        subscriber.close()
        running.stop()



def test_with_blur_unknown_a_strangers_face_is_pixelated_in_the_snapshot_and_thumbnails(
        config, analyzer, demo_clip):
    """The demo clip's stranger (unknown) on a kiosk with kiosk.blur_unknown: the snapshot is
    the frame as shown, the face pixelated in it, and so is it in a style's thumbnail."""
    path, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    config = configure(config, {
        "kiosk.source": f"file://{path}", "run.source": f"file://{path}",
        "kiosk.output": "http://127.0.0.1:0/", "kiosk.width": 640, "kiosk.style": "mosaic",
        "kiosk.faces": True, "kiosk.faces_nice": 0, "tracker.iou": 0.05,
        "kiosk.blur_unknown": True, "kiosk.snapshots": True, "kiosk.jpeg_quality": 95,
        "run.sink": "jsonl:/dev/null"})
    service = KioskService(config, analyzer, matcher_loader(face_config(config), analyzer))
    faces, kiosk = service.faces, service.kiosk
    assert faces is not None
    draw, labels = faces.draw, faces.board.labels
    seen: dict = {}

    def drawn_labels():
        found, size = labels()
        seen.update(labels=found, size=size)
        return found, size

    def keep_original(shown):
        seen["original"] = shown.copy()
        draw(shown)

    faces.board.labels, faces.draw = drawn_labels, keep_original
    found = []

    class Probe(Output):
        uri = "probe://"

        def show(self, frame):
            unknown = [lb for lb in seen["labels"] if lb.decision == "unknown"]
            if unknown and not found:
                result = kiosk.take_snapshot("127.0.0.1")
                jpeg = kiosk.snapshots.lookup(local_path(result["url"]))
                thumb = cv2.resize(seen["original"], (160, 90))
                snapshot = (decode(jpeg), seen["original"], kiosk.final.copy(), unknown[0],
                            seen["size"])
                hidden = thumb.copy()
                kiosk.hide_unknown(hidden)  # with the labels it hid (kept in seen)
                hid = [lb for lb in seen["labels"] if lb.decision != "match"]
                found.append((*snapshot, thumb, hidden, hid, seen["size"]))
                kiosk.stop.set()
            return -1

    kiosk.outputs.append(Probe())
    service.run()
    assert found, "the stranger was never shown as unknown"
    snap, original, final, label, size, thumb, hidden, hid, hid_size = found[0]
    x1, y1, x2, y2 = scale_box(label.box, size, (snap.shape[1], snap.shape[0]))
    inner = (slice(y1 + 3, y2 - 2), slice(x1 + 3, x2 - 2))
    flat = original.copy()
    pixelate(flat, (x1, y1, x2, y2))
    grey = [cv2.cvtColor(i, cv2.COLOR_BGR2GRAY).astype(float) for i in (snap, original, flat,
                                                                        final)]
    snap_g, original_g, flat_g, final_g = grey
    assert np.abs(snap_g - final_g).mean() < 6  # the frame as shown, up to JPEG noise
    lost = np.abs(original_g[inner] - flat_g[inner]).mean()  # the face's detail
    assert lost > 10 and np.abs(snap_g[inner] - flat_g[inner]).mean() < lost / 3
    # A thumbnail hides the same faces: each box not recognised (scaled) is the blocks.
    assert hid
    expected = thumb.copy()
    for each in hid:
        pixelate(expected, scale_box(each.box, hid_size, (160, 90)))
    assert (hidden == expected).all() and not (hidden == thumb).all()

"""``liveness.mode`` end to end: off, report and require through the capture loop, MQTT,
``verify`` and ``identify``, and a liveness model that is missing or corrupt."""

from __future__ import annotations

import json
import shutil

import cv2
import jsonschema
import numpy as np
import pytest

from conftest import configure, noisy_frames, read_jsonl
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.faces.analyzer import FaceAnalyzer
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, load_gallery
from jetkiosk.edge.faces.liveness import LIVENESS_MODELS
from jetkiosk.edge.mqtt.payloads import schema
from jetkiosk.edge.node.daemon import Runner
from mosquitto import Subscriber

# Upstream's sample photos: a live face, and a photo of a face shown to the camera.
LIVE, PHOTO = "image_T1", "image_F1"
PEOPLE = {LIVE: "live_person", PHOTO: "photo_person"}


@pytest.fixture(scope="module")
def samples(shared):
    return {name: cv2.imread(str(shared / "models/antispoof/samples" / f"{name}.jpg"))
            for name in PEOPLE}


@pytest.fixture(scope="module")
def clip(samples, tmp_path_factory):
    """The live sample for a second, nothing, then the spoof sample (640x480 MJPG, noise)."""
    path = tmp_path_factory.mktemp("liveness") / "samples.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (480, 640))
    blank = np.full((640, 480, 3), 90, np.uint8)
    for frames in (noisy_frames(samples[LIVE], 24, seed=1), noisy_frames(blank, 15),
                   noisy_frames(samples[PHOTO], 24, seed=2)):
        for frame in frames:
            writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def enrolled(config, analyzer, samples):
    """Each sample's person enrolled from that sample, at a fixed threshold."""
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    for photo, name in PEOPLE.items():
        gallery.add(name, analyzer.analyze(samples[photo])[0].encoding[None])
    gallery.save(config.gallery_path)
    return config


def run_events(config, analyzer, clip, mode: str, sink: str, need_3d: bool = True):
    configure(config, {"liveness.mode": mode, "liveness.need_3d": need_3d,
                       "run.source": f"file://{clip}", "run.sink": sink})
    with Runner(config, analyzer, lambda: Matcher(load_gallery(config.gallery_path), 1.0)) \
            as runner:
        assert runner.start().run() == 63


def by_name(events):
    return {(e["name"], e["event"]): e for e in events}


def test_require_publishes_a_spoof_over_mqtt_and_keeps_it_on_record(enrolled, analyzer, clip,
                                                                    broker, tmp_path):
    watcher = Subscriber(broker.port, "#", persistent=False)
    configure(enrolled, {"mqtt.broker": broker.uri, "mqtt.node": "door",
                         "mqtt.outbox": str(tmp_path / "outbox.db")})
    # The clip is two photos held still: no head moves, so the passive check alone decides.
    run_events(enrolled, analyzer, clip, "require", "mqtt", need_3d=False)
    assert watcher.wait(lambda: watcher.payloads("jetkiosk/door/availability")[-1:]
                        == [b"offline"])
    watcher.close()
    events = [json.loads(m.payload) for m in watcher.messages
              if m.topic == "jetkiosk/door/cam0/faces/events"]
    for event in events:
        jsonschema.validate(event, schema("event"))
    seen = by_name(events)
    live, photo = seen["live_person", "new"], seen["photo_person", "new"]
    assert live["decision"] == "match" and live["live"]["decision"] == "live"
    assert live["live"]["score"] > 0.9 and live["live"]["checks"] == ["passive", "geometry"]
    assert photo["decision"] == "spoof" and photo["live"]["score"] < 0.5
    assert "live score" in photo["live"]["reason"]
    # Nobody is present who was only shown as a photo.
    present = {m.topic.split("/")[3] for m in watcher.messages
               if m.topic.startswith("jetkiosk/door/person/") and m.payload
               and json.loads(m.payload)["present"]}
    assert present == {"live_person"}
    discovery = json.loads(watcher.payloads("homeassistant/device/jetkiosk_door/config")[-1])
    assert "spoof" in discovery["components"]["door_cam0_faces"]["event_types"]
    audit = read_jsonl(enrolled.audit_path)
    assert [e["name"] for e in audit if e["action"] == "spoof"] == ["photo_person"]
    assert [e["name"] for e in audit if e["action"] == "match"] == ["live_person"]


def test_require_needs_a_head_that_moved(enrolled, analyzer, clip, tmp_path):
    out = tmp_path / "still.jsonl"
    run_events(enrolled, analyzer, clip, "require", f"jsonl:{out}")
    seen = by_name(read_jsonl(out))
    live = seen["live_person", "new"]
    assert live["decision"] == "not_verified_live" and live["live"]["score"] > 0.9
    assert "no 3-D head movement seen" in live["live"]["reason"]
    assert live["live"]["geometry"]["verdict"] == "still"
    assert seen["photo_person", "new"]["decision"] == "spoof"


def test_report_and_off_leave_decisions_alone(enrolled, analyzer, clip, tmp_path):
    out = tmp_path / "report.jsonl"
    run_events(enrolled, analyzer, clip, "report", f"jsonl:{out}", need_3d=False)
    seen = by_name(read_jsonl(out))
    assert seen["photo_person", "new"]["decision"] == "match"
    assert seen["photo_person", "new"]["live"]["decision"] == "spoof"
    assert seen["live_person", "end"]["live"]["decision"] == "live"

    out = tmp_path / "off.jsonl"
    run_events(enrolled, analyzer, clip, "off", f"jsonl:{out}")
    events = read_jsonl(out)
    assert {e["decision"] for e in events} == {"match"}
    assert all(e["live"]["checks"] == [] and e["live"]["score"] is None for e in events)


def cli(capsys, *argv):
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_verify_and_identify_say_what_liveness_found(enrolled, shared, capsys):
    samples = shared / "models/antispoof/samples"
    common = ["--models", str(enrolled.models_dir), "--gallery", str(enrolled.gallery_path),
              "--json", "--set", "gallery.threshold=1.0"]
    require = [*common, "--set", "liveness.mode=require"]
    code, out = cli(capsys, "verify", str(samples / f"{LIVE}.jpg"), "--as", "live_person",
                    *require)  # one photo shows no head movement: not enough by default
    assert code == 1 and out[0]["decision"] == "not_verified_live"
    require.extend(["--set", "liveness.need_3d=false"])  # the passive check alone
    code, out = cli(capsys, "verify", str(samples / f"{LIVE}.jpg"), "--as", "live_person",
                    *require)
    assert code == 0 and out[0]["decision"] == "match" and out[0]["live"]["decision"] == "live"
    code, out = cli(capsys, "verify", str(samples / f"{PHOTO}.jpg"), "--as", "photo_person",
                    *require)
    assert code == 1 and out[0]["decision"] == "spoof" and not out[0]["match"]
    assert out[0]["distance"] < out[0]["threshold"]  # the right person, but a photo
    code, out = cli(capsys, "verify", str(samples / f"{PHOTO}.jpg"), "--as", "photo_person",
                    *common)
    assert code == 0 and out[0]["match"] and out[0]["live"]["decision"] == "spoof"
    code, out = cli(capsys, "identify", str(samples / f"{PHOTO}.jpg"), *common)
    assert out[0]["name"] == "photo_person" and out[0]["live"]["checks"] == ["passive"]
    code, out = cli(capsys, "verify", str(samples / f"{PHOTO}.jpg"), "--as", "photo_person",
                    *common, "--set", "liveness.mode=off")
    assert code == 0 and out[0]["live"]["decision"] is None and out[0]["live"]["checks"] == []


def broken_models(models_dir, tmp_path, damage: str):
    """A copy of the models with the first liveness model missing or corrupt."""
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    target = copy / f"{LIVENESS_MODELS[0]}.onnx"
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:4000])
    return copy


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_require_fails_closed_on_a_bad_liveness_model(config, models_dir, tmp_path, damage,
                                                      capsys):
    config.models.dir = str(broken_models(models_dir, tmp_path, damage))
    config.liveness.mode = "require"
    with pytest.raises(ModelError, match=r"liveness.mode is require .*minifasnet-v2.onnx"):
        FaceAnalyzer(config)
    code = main(["run", "--models", config.models.dir, "--source", "file:///nonexistent.mp4",
                 "--set", "liveness.mode=require"])
    assert code != 0 and "minifasnet-v2.onnx" in capsys.readouterr().err
    config.liveness.mode = "report"  # logged, and every event says the check did not run
    assert FaceAnalyzer(config).liveness is None


def test_report_without_the_passive_check_says_so(enrolled, models_dir, clip, tmp_path):
    enrolled.models.dir = str(broken_models(models_dir, tmp_path, "missing"))
    enrolled.liveness.mode = "report"
    analyzer = FaceAnalyzer(enrolled)
    out = tmp_path / "events.jsonl"
    run_events(enrolled, analyzer, clip, "report", f"jsonl:{out}")
    events = read_jsonl(out)
    assert events and all(e["live"]["checks"] == ["geometry"] for e in events)
    assert {e["live"]["decision"] for e in events} <= {"not_verified_live", "spoof"}

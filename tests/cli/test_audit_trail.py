"""What goes into the audit trail: every change to who is recognised, each 1:1 verification,
each match the loop announces, key changes and reloads; never an encoding."""

from __future__ import annotations

import json

import cv2

from conftest import enroll_demo_people, matcher_loader
from jetkiosk.edge.cli.demo import sample_photos
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.audit import tail, verify
from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.node.daemon import Runner


def entries(path):
    return [{k: v for k, v in e.items() if k not in ("seq", "time", "prev", "hash")}
            for e in tail(path, 1000)]


def test_gallery_commands_and_verify_are_recorded_in_order(models_dir, tmp_path, capsys):
    photos = sample_photos()
    for name in ("grace_hopper", "stranger"):
        cv2.imwrite(str(tmp_path / f"{name}.jpg"), photos[name])
    base = ["--models", str(models_dir), "--gallery", str(tmp_path / "g.npz")]
    assert main(["enroll", "grace", str(tmp_path / "grace_hopper.jpg"), *base]) == 0
    assert main(["gallery", "rename", "grace", "Grace Hopper", *base]) == 0
    assert main(["gallery", "threshold", "0.9", "--person", "Grace Hopper", *base]) == 0
    assert main(["gallery", "style", "Grace Hopper", "mosaic", *base]) == 0
    assert main(["verify", str(tmp_path / "grace_hopper.jpg"), "--as", "Grace Hopper",
                 *base]) == 0
    assert main(["verify", str(tmp_path / "stranger.jpg"), "--as", "Grace Hopper", *base]) == 1
    assert main(["gallery", "rekey", *base]) == 0
    assert main(["gallery", "remove", "Grace Hopper", *base]) == 0
    capsys.readouterr()
    log = tmp_path / "audit.jsonl"
    found = entries(log)
    assert [e["action"] for e in found] == [
        "enroll", "rename", "threshold", "style", "verify", "verify", "key.rotate", "remove"]
    assert found[0] == {"action": "enroll", "name": "grace", "encodings": 1, "total": 1,
                        "source": "photos"}
    assert found[1] == {"action": "rename", "old": "grace", "new": "Grace Hopper"}
    assert found[2] == {"action": "threshold", "value": 0.9, "person": "Grace Hopper"}
    assert found[3] == {"action": "style", "name": "Grace Hopper", "style": "mosaic"}
    verifies = [e for e in found if e["action"] == "verify"]
    assert verifies[0]["match"] is True and verifies[0]["claimed"] == "Grace Hopper"
    assert verifies[1]["match"] is False
    assert found[-2]["action"] == "key.rotate" and len(found[-2]["key_id"]) == 16
    assert found[-1] == {"action": "remove", "name": "Grace Hopper", "encodings": 1,
                         "rejections": 0, "outbox_events": 0, "reason": "removed by command"}
    assert verify(log).ok
    assert all(len(line) < 600 for line in log.read_text().splitlines())  # no encodings
    assert main(["audit", "verify", *base, "--set", f"gallery.audit_log={log}"]) == 0
    assert "audit log OK" in capsys.readouterr().out


def test_the_loops_matches_and_a_reload_are_recorded(config, analyzer, demo_clip, tmp_path):
    path, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    config.run.source = f"file://{path}"
    config.run.sink = f"jsonl:{tmp_path / 'events.jsonl'}"
    load = load_config(overrides=[f"models.dir={config.models.dir}",
                                  f"gallery.path={config.gallery_path}"])
    with Runner(config, analyzer, matcher_loader(config, analyzer), lambda: load) as runner:
        runner.start().run()
        runner.reloader()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    matches = [e for e in events if e["decision"] == "match" and e["event"] != "end"]
    recorded = [e for e in entries(config.audit_path) if e["action"] == "match"]
    assert [r["event_id"] for r in recorded] == [m["event_id"] for m in matches]
    assert {r["name"] for r in recorded} == {"eileen_collins", "grace_hopper"}
    assert entries(config.audit_path)[-1]["action"] == "config.reload"
    assert verify(config.audit_path).ok

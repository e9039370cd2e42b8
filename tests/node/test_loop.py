"""The capture loop on real video files through OpenCV, image folders, and live dropping."""

from __future__ import annotations

import json
import time
from contextlib import closing

import cv2
import numpy as np
import pytest

from jetkiosk.edge.capture.sources import LatestFrame, _Capture, open_source
from jetkiosk.edge.core.errors import SourceError
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.node.loop import CaptureLoop
from jetkiosk.edge.node.sinks import open_sink


def test_loop_emits_one_event_per_decision_on_the_demo_clip(config, analyzer, demo_clip,
                                                            tmp_path):
    path, photos = demo_clip
    gallery = Gallery("facenet-casia", analyzer.fingerprint, analyzer.encoder.dim)
    for name in ("eileen_collins", "grace_hopper"):
        gallery.add(name, analyzer.analyze(photos[name])[0].encoding[None])
    out = tmp_path / "events.jsonl"
    config.run.sink = f"jsonl:{out}"
    loop = CaptureLoop(config, analyzer, Matcher(gallery, 1.0), open_sink(config.run.sink))
    with closing(open_source(f"file://{path}")) as source:
        frames = loop.run(source)
    loop.sink.close()
    assert frames == 225
    events = [json.loads(line) for line in out.read_text().splitlines()]
    summary = [(e["event"], e["name"] or "-", e["decision"]) for e in events]
    # Scene by scene: Eileen, Grace (lighting change), then a stranger beside Eileen.
    assert summary[:4] == [("new", "eileen_collins", "match"), ("end", "eileen_collins", "match"),
                           ("new", "grace_hopper", "match"), ("end", "grace_hopper", "match")]
    assert sorted(summary[4:]) == sorted([("new", "eileen_collins", "match"),
                                          ("end", "eileen_collins", "match"),
                                          ("new", "-", "unknown"), ("end", "-", "unknown")])
    assert len({e["event_id"] for e in events}) == len(events)
    for e in events:
        assert "encoding" not in e and e["schema"] == 1 and e["camera"] == "cam0"


def test_image_folder_source_and_missing_sources(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((64, 64, 3), i * 40, np.uint8))
    (tmp_path / "notes.txt").write_text("skip me")
    frames = [f for f, _ in open_source(f"file://{tmp_path}").frames()]
    assert [int(f[0, 0, 0]) for f in frames] == [0, 40, 80]
    with pytest.raises(SourceError, match="no such file"):
        open_source(f"file://{tmp_path}/missing.mp4")
    with pytest.raises(SourceError, match="unknown source scheme 'http'"):
        open_source("http://example.invalid/x")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"file://{tmp_path}/bad.mp4")


def test_csi_needs_gstreamer_with_a_clear_error():
    from jetkiosk.edge.capture.sources import has_gstreamer

    if has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="built without GStreamer"):
        open_source("csi://0")


def test_live_source_drops_frames_instead_of_lagging(demo_clip):
    path, _ = demo_clip
    live = LatestFrame(_Capture("file://demo", str(path), cv2.CAP_ANY), pace=True)
    got = []
    started = time.monotonic()
    for frame, stamp in live.frames():
        got.append(stamp)
        time.sleep(0.12)  # a consumer three times slower than the 25 fps clip
    live.close()
    assert live.dropped > 100 and len(got) < 100
    # Each frame handed out is fresh: never older than one slow step.
    assert time.monotonic() - started < 225 / 25 + 1.0


def test_enroll_from_camera_frames_and_run_from_the_command_line(config, demo_clip, capsys):
    from jetkiosk.edge.cli.main import main

    path, _ = demo_clip
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    assert main(["enroll", "eileen", "--source", f"file://{path}", "--frames", "4", "--json",
                 *common]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-2])["photos"] == 4
    assert main(["run", "--source", f"file://{path}", *common]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(e["event"], e["name"]) for e in events} >= {("new", "eileen"), ("end", "eileen")}
    assert ("new", None) in {(e["event"], e["name"]) for e in events}  # Grace is unknown here


def test_quality_gate_logs_each_rejection_with_its_reason(analyzer, demo_clip, caplog):
    _, photos = demo_clip
    small = cv2.resize(photos["grace_hopper"], None, fx=0.2, fy=0.2)
    small = cv2.copyMakeBorder(small, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(90,) * 3)
    blurred = cv2.GaussianBlur(photos["grace_hopper"], (0, 0), 6)
    with caplog.at_level("INFO", logger="jetkiosk.edge.faces.analyzer"):
        (tiny,) = analyzer.analyze(small)
        (soft,) = analyzer.analyze(blurred)
    assert tiny.encoding is None and tiny.rejected.startswith("too small")
    assert soft.encoding is None and soft.rejected.startswith("too blurred")
    assert "too small" in caplog.text and "too blurred" in caplog.text

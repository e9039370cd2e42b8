"""One owner closes what a run opens, once each and in order (source, metrics, sinks, MQTT
link, outbox), however the run ends: the source's end, SIGTERM or SIGINT, an exception from
the source mid-run, the broker refusing at start, something that cannot be opened, a second
signal while closing. Real classes throughout (Mosquitto, the SQLite outbox, files, the
metrics server, `serve`); only their ``close`` methods are wrapped to count the calls."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from conftest import configure
from jetkiosk.edge.capture.sources import ImageFolder, _Capture
from jetkiosk.edge.core.errors import ConfigError, SourceError
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.mqtt.client import MqttError
from jetkiosk.edge.mqtt.link import MqttLink
from jetkiosk.edge.mqtt.outbox import Outbox
from jetkiosk.edge.node.daemon import serve
from jetkiosk.edge.node.metrics import MetricsServer
from jetkiosk.edge.node.sinks import JsonLinesSink
from mosquitto import Mosquitto, Subscriber, free_port

NODE = "jetkiosk/door"
EVERYTHING = ["source", "metrics", "jsonl", "link", "outbox"]  # the order of closing
LABELS = {ImageFolder: "source", _Capture: "source", MetricsServer: "metrics",
          JsonLinesSink: "jsonl", MqttLink: "link", Outbox: "outbox"}


@pytest.fixture
def closed(monkeypatch) -> List[str]:
    """What was closed, in order: each resource class's ``close`` wrapped to record it."""
    calls: List[str] = []
    for cls, label in LABELS.items():
        def close(self, *args, _close=cls.close, _label=label, **kwargs):
            calls.append(_label)
            return _close(self, *args, **kwargs)
        monkeypatch.setattr(cls, "close", close)
    return calls


def frames_folder(path: Path, count: int, corrupt_at: int = -1) -> str:
    """A folder of blank frames (one of them corrupt when asked): a file:// source URI."""
    path.mkdir()
    for i in range(count):
        if i == corrupt_at:
            (path / f"{i:02d}.png").write_bytes(b"not an image")
        else:
            cv2.imwrite(str(path / f"{i:02d}.png"), np.full((240, 320, 3), 60, np.uint8))
    return f"file://{path}"


@pytest.fixture
def run_config(config, broker, tmp_path):
    """MQTT, a JSON lines file and the metrics endpoint, over a folder of 3 blank frames."""
    configure(config, {"run.source": frames_folder(tmp_path / "frames", 3),
                       "run.sink": f"mqtt,jsonl:{tmp_path / 'events.jsonl'}",
                       "metrics.listen": f"127.0.0.1:{free_port()}", "mqtt.broker": broker.uri,
                       "mqtt.node": "door", "mqtt.outbox": str(tmp_path / "outbox.db"),
                       "mqtt.reconnect_min": 0.1})
    return config


def run(config, analyzer) -> int:
    """`jetkiosk run` in this process, with an empty gallery."""
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    return serve(config, analyzer, lambda: Matcher(gallery, 1.0), lambda: config)


def went_offline(watcher: Subscriber) -> bool:
    """The node and its camera were last published offline."""
    return watcher.wait(lambda: watcher.payloads(f"{NODE}/availability")[-1:] == [b"offline"]
                        and watcher.payloads(f"{NODE}/cam0/availability")[-1:] == [b"offline"],
                        10)


def test_normal_end_closes_everything_once_in_order(run_config, analyzer, broker,
                                                    closed):
    watcher = Subscriber(broker.port, f"{NODE}/#", persistent=False)
    assert run(run_config, analyzer) == 0
    assert closed == EVERYTHING
    assert went_offline(watcher)
    assert Outbox(run_config.outbox_path).depth == 0  # flushed before the outbox was closed
    watcher.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_closes_everything_once(run_config, analyzer, broker, closed,
                                                 still_clip, sig):
    run_config.run.source = f"file://{still_clip}?loop=1"  # endless until stopped
    watcher = Subscriber(broker.port, f"{NODE}/#", persistent=False)

    def stop_when_running() -> None:
        if watcher.wait(lambda: watcher.payloads(f"{NODE}/cam0/availability") == [b"online"]):
            os.kill(os.getpid(), sig)  # handled by serve's handler on the main thread

    threading.Thread(target=stop_when_running, daemon=True).start()
    assert run(run_config, analyzer) == 0
    assert closed == EVERYTHING
    assert went_offline(watcher)
    watcher.close()


def test_a_second_signal_while_closing_does_not_cut_the_flush_short(run_config, analyzer,
                                                                   broker, closed, monkeypatch):
    outside: List[int] = []  # signals that reached the handler installed before serve
    counted_close = MqttLink.close

    def close_under_a_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled on this thread before the next line
        return counted_close(self, *args, **kwargs)

    monkeypatch.setattr(MqttLink, "close", close_under_a_signal)
    previous = signal.signal(signal.SIGTERM, lambda number, frame: outside.append(number))
    watcher = Subscriber(broker.port, f"{NODE}/#", persistent=False)
    try:
        assert run(run_config, analyzer) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert outside == []  # serve's handler still had it: the flush went on
    assert closed == EVERYTHING
    assert went_offline(watcher)
    watcher.close()


def test_an_exception_from_the_source_mid_run_closes_everything_once(run_config, analyzer,
                                                                     broker, closed, tmp_path):
    run_config.run.source = frames_folder(tmp_path / "bad", 4, corrupt_at=2)
    watcher = Subscriber(broker.port, f"{NODE}/#", persistent=False)
    with pytest.raises(SourceError, match="not a readable image"):
        run(run_config, analyzer)
    assert closed == EVERYTHING
    assert went_offline(watcher)
    watcher.close()


def test_the_broker_refusing_at_start_closes_everything_once(run_config, analyzer, closed,
                                                             tmp_path):
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "kiosk", "s3cret"],
                   check=True, capture_output=True)
    passwords.chmod(0o600)
    strict = Mosquitto(tmp_path / "strict", password_file=passwords).start()
    run_config.mqtt.broker = strict.uri  # anonymous: refused, which retrying cannot fix
    try:
        with pytest.raises(MqttError, match="[Nn]ot authorized"):
            run(run_config, analyzer)
    finally:
        strict.stop()
    assert closed == EVERYTHING


@pytest.fixture
def busy_port():
    """``host:port`` that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("what, error, expected", [
    # a second file that cannot be created: the first one and MQTT are closed, nothing else
    ("sink", FileNotFoundError, ["jsonl", "link", "outbox"]),
    ("metrics", ConfigError, ["jsonl", "link", "outbox"]),
    ("source", SourceError, ["metrics", "jsonl", "link", "outbox"]),
])
def test_what_cannot_be_opened_closes_what_was_opened_once_without_connecting(
        run_config, analyzer, broker, closed, busy_port, tmp_path, what, error, expected):
    if what == "sink":
        run_config.run.sink += f",jsonl:{tmp_path / 'missing' / 'events.jsonl'}"
    elif what == "metrics":
        run_config.metrics.listen = busy_port
    else:
        run_config.run.source = f"file://{tmp_path / 'missing.mp4'}"
    with pytest.raises(error):
        run(run_config, analyzer)
    assert closed == expected
    assert "New client connected" not in broker.log()  # failed before any MQTT traffic

"""`jetkiosk run` as systemd runs it, as a real process: sd_notify to a fake manager's socket,
a stalled loop, a real RTSP stream lost and restored, SIGHUP, SIGTERM with a real Mosquitto,
the Prometheus endpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, read_jsonl
from jetkiosk.edge.mqtt.outbox import Outbox
from mosquitto import Mosquitto, Subscriber, free_port

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")
RTSP_SERVER = ROOT / "tests" / "rtsp_server.py"


class Manager:
    """The manager's end of NOTIFY_SOCKET: records each datagram with its arrival time."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                continue

    def times(self, text: str) -> List[float]:
        return [t for t, m in list(self.messages) if m.startswith(text)]

    def wait(self, predicate, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Daemon:
    """`jetkiosk run --config FILE` with systemd's environment."""

    def __init__(self, tmp_path: Path, config: str, watchdog_s: float, *extra: str):
        self.config = tmp_path / "config.toml"
        self.config.write_text(config)
        self.manager = Manager(tmp_path / "notify")
        self.log = tmp_path / "daemon.log"
        env = dict(os.environ, NOTIFY_SOCKET=self.manager.path,
                   WATCHDOG_USEC=str(int(watchdog_s * 1e6)), JOURNAL_STREAM="8:1234")
        self.proc = subprocess.Popen([JETKIOSK, "run", "--config", str(self.config), *extra],
                                     env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.manager.close()
        return code


def settings(models_dir: Path, gallery: Path, source: str, sink: str = "jsonl:-",
             **sections: str) -> str:
    text = (f'[models]\ndir = "{models_dir}"\n[gallery]\npath = "{gallery}"\n'
            f'[run]\nsource = "{source}"\nsink = "{sink}"\n'
            'reconnect_min = 0.2\nreconnect_max = 1.0\nframe_timeout = 2.0\n'
            '[log]\nlevel = "info"\n')
    return text + "".join(f"[{name}]\n{body}\n" for name, body in sections.items())


@pytest.fixture
def gallery_file(people_gallery, tmp_path) -> Path:
    path = tmp_path / "gallery.npz"
    people_gallery.save(path)
    return path


def test_ready_after_the_first_frame_then_watchdog_from_the_loop_which_stops_while_it_hangs(
        models_dir, gallery_file, shared, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    photos = sorted((shared / "faces/people/gallery").rglob("*.jpg"))[:6]
    for i, photo in enumerate(photos):
        shutil.copy(photo, frames / f"{i:02d}.jpg")
    os.mkfifo(frames / "06.jpg")  # reading this frame blocks the loop's own thread
    shutil.copy(photos[0], frames / "07.jpg")
    daemon = Daemon(tmp_path, settings(models_dir, gallery_file, f"file://{frames}"), 1.0)
    manager = daemon.manager
    try:
        assert manager.wait(lambda: manager.times("READY=1")), daemon.text()
        ready = manager.times("READY=1")[0]
        assert manager.wait(lambda: any(t > ready for t in manager.times("WATCHDOG=1")))
        # the loop hangs on the FIFO: the pings stop (every 0.25 s while frames flowed)
        assert manager.wait(lambda: time.monotonic() - max(manager.times("WATCHDOG=1")) > 3.0)
        assert daemon.proc.poll() is None  # alive, its other threads running: only the loop hangs
        hung_since = max(manager.times("WATCHDOG=1"))
        with open(frames / "06.jpg", "wb") as fifo:  # the frame arrives: the loop goes on
            fifo.write(photos[1].read_bytes())
        assert manager.wait(lambda: any(t > hung_since for t in manager.times("WATCHDOG=1")))
        assert daemon.proc.wait(60) == 0
        assert manager.wait(lambda: manager.times("STOPPING=1"), 5)
    finally:
        daemon.stop()


def rtsp_server(port: int) -> subprocess.Popen:
    python = "/usr/bin/python3"
    proc = subprocess.Popen([python, str(RTSP_SERVER), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def needs_rtsp_server() -> None:
    check = "import gi; gi.require_version('GstRtspServer', '1.0')"
    probe = subprocess.run(["/usr/bin/python3", "-c", check], capture_output=True, check=False)
    if probe.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("gst-rtsp-server (gir1.2-gst-rtsp-server-1.0, python3-gi) is missing")
        pytest.skip("gst-rtsp-server not installed")


def scrape(port: int) -> dict:
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels or "stage" not in sample.labels}


def test_a_lost_rtsp_stream_is_reopened_without_a_restart_and_sighup_reloads(
        models_dir, gallery_file, tmp_path):
    needs_rtsp_server()
    broker = Mosquitto(tmp_path / "broker").start()
    port, metrics_port = free_port(), free_port()
    server = rtsp_server(port)
    sub = Subscriber(broker.port, "jetkiosk/door/#")
    mqtt = (f'broker = "{broker.uri}"\nnode = "door"\nstats_interval = 0.5\n'
            f'client_id = "door-node"\noutbox = "{tmp_path / "outbox.db"}"')
    config = settings(models_dir, gallery_file, f"rtsp://127.0.0.1:{port}/live", "mqtt",
                      mqtt=mqtt, metrics=f'listen = "127.0.0.1:{metrics_port}"')
    daemon = Daemon(tmp_path, config, 2.0)
    manager = daemon.manager
    camera = "jetkiosk/door/cam0/availability"

    def states() -> List[bytes]:
        return [m.payload for m in list(sub.messages) if m.topic == camera]

    def last_stats() -> dict:
        stats = sub.payloads("/stats")
        return json.loads(stats[-1]) if stats else {}

    try:
        assert sub.wait(lambda: states()[-1:] == [b"online"], 60), daemon.text()
        assert manager.wait(lambda: manager.times("READY=1"))
        assert sub.wait(lambda: last_stats().get("frames", 0) > 5)
        assert scrape(metrics_port)["jetkiosk_source_online"] == 1.0

        server.kill()  # the stream is lost
        server.wait()
        assert sub.wait(lambda: states()[-1:] == [b"offline"], 30), daemon.text()
        lost = time.monotonic()
        assert sub.wait(lambda: last_stats().get("source", {}).get("online") is False)
        time.sleep(3.0)  # still lost: reopening with backoff, the watchdog still fed
        assert len([t for t in manager.times("WATCHDOG=1") if t > lost]) >= 3
        assert daemon.proc.poll() is None
        frames_while_lost = last_stats()["frames"]

        server = rtsp_server(port)  # it comes back
        assert sub.wait(lambda: states()[-1:] == [b"online"], 30), daemon.text()
        assert sub.wait(lambda: last_stats().get("frames", 0) > frames_while_lost + 5)
        stats = last_stats()
        assert stats["source"]["online"] is True and stats["source"]["reconnects"] >= 1
        metrics = scrape(metrics_port)
        assert metrics["jetkiosk_source_online"] == 1.0
        assert 5.0 <= metrics["jetkiosk_reencode_every"] <= 40.0
        assert metrics["jetkiosk_source_reconnects_total"] >= 1
        assert metrics["jetkiosk_frames_total"] >= stats["frames"]
        assert "rtsp://" in daemon.text() and "reopening in" in daemon.text()
        assert daemon.text().startswith("<") or "\n<4>" in daemon.text()  # journal priorities

        # SIGHUP: a new threshold applies, a new keepalive needs a restart, the session stays
        daemon.config.write_text(config.replace("[gallery]\n", "[gallery]\nthreshold = 0.8\n")
                                 .replace('client_id = ', 'keepalive = 45\nclient_id = '))
        daemon.proc.send_signal(signal.SIGHUP)
        assert manager.wait(lambda: "reloaded: gallery.threshold applied" in daemon.text(), 30)
        assert "mqtt.keepalive changed; restart the service to apply" in daemon.text()
        assert scrape(metrics_port)["jetkiosk_reloads_total"] == 1.0
        daemon.config.write_text("[run\n")  # a broken file: logged, nothing changes
        daemon.proc.send_signal(signal.SIGHUP)
        assert manager.wait(lambda: "the running configuration stays" in daemon.text(), 30)
        assert daemon.proc.poll() is None
        assert broker.log().count("New client connected") and \
            broker.log().count("as door-node") == 1  # never reconnected

        assert daemon.stop() == 0
        assert sub.wait(lambda: states()[-1:] == [b"offline"], 10)
        assert sub.wait(lambda: sub.payloads("jetkiosk/door/availability")[-1:] == [b"offline"])
        assert manager.times("STOPPING=1")
    finally:
        daemon.stop()
        server.kill()
        sub.close()
        broker.stop()


def test_sigterm_mid_run_flushes_the_outbox_publishes_offline_and_exits_0(
        models_dir, gallery_file, demo_clip, tmp_path):
    clip, _ = demo_clip
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "jetkiosk/door/#")
    events_file = tmp_path / "events.jsonl"
    outbox = tmp_path / "outbox.db"
    mqtt = (f'broker = "{broker.uri}"\nnode = "door"\noutbox = "{outbox}"\n'
            'flush_timeout = 10.0\nreconnect_min = 0.1\nreconnect_max = 0.2\nkeepalive = 5')
    config = settings(models_dir, gallery_file, f"file://{clip}?realtime=1",
                      f"mqtt,jsonl:{events_file}", mqtt=mqtt)
    daemon = Daemon(tmp_path, config, 10.0)
    try:
        def published() -> List[dict]:
            return read_jsonl(events_file)

        assert sub.wait(lambda: len(published()) >= 1, 120), daemon.text()
        broker.pause()  # the broker stops answering: events wait in the outbox
        count = len(published())
        assert sub.wait(lambda: len(published()) > count, 120), daemon.text()
        broker.resume()
        daemon.proc.send_signal(signal.SIGTERM)  # mid-run, with events not yet delivered
        assert daemon.proc.wait(60) == 0, daemon.text()
        sent = {e["event_id"] for e in published()}
        assert sub.wait(lambda: {json.loads(p)["event_id"] for p in
                                 sub.payloads("/faces/events")} >= sent, 10)
        assert Outbox(outbox).depth == 0  # everything acknowledged before exit
        assert sub.payloads("jetkiosk/door/availability")[-1] == b"offline"
        assert sub.payloads("jetkiosk/door/cam0/availability")[-1] == b"offline"
    finally:
        daemon.stop()
        sub.close()
        broker.stop()

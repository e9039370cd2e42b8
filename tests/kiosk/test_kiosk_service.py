"""`jetkiosk kiosk` as systemd runs it, as a real process: sd_notify to a fake manager's
socket (READY, WATCHDOG from the display loop and only while the face path keeps up,
STOPPING), SIGTERM and SIGINT with a real Mosquitto, SIGHUP reloading the face path's
gallery, a real RTSP camera lost and restored, a live source given up."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import cv2
import pytest
from node.test_service_daemon import Manager, needs_rtsp_server, rtsp_server, settings

from conftest import enroll_demo_people, read_jsonl
from jetkiosk.edge.mqtt.outbox import Outbox
from mosquitto import Subscriber, free_port

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")


class KioskProcess:
    """`jetkiosk kiosk --config FILE` with systemd's environment."""

    def __init__(self, tmp_path: Path, config: str, watchdog_s: float):
        self.config = tmp_path / "config.toml"
        self.config.write_text(config)
        self.manager = Manager(tmp_path / "notify")
        self.log = tmp_path / "kiosk.log"
        env = dict(os.environ, NOTIFY_SOCKET=self.manager.path,
                   WATCHDOG_USEC=str(int(watchdog_s * 1e6)))
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([JETKIOSK, "kiosk", "--config", str(self.config)],
                                         env=env, stdout=subprocess.DEVNULL, stderr=log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pings_after(self, moment: float) -> List[float]:
        return [t for t in self.manager.times("WATCHDOG=1") if t > moment]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        finally:
            self.manager.close()


def kiosk_settings(models_dir: Path, gallery: Path, source: str, output: Path,
                   sink: str = "jsonl:/dev/null", faces: bool = True, **sections: str) -> str:
    """The kiosk on ``source``, shown into a video file; with the face path unless not
    ``faces`` (it takes the newest frame; a looser IoU keeps a fast face one track)."""
    kiosk = (f'source = "{source}"\noutput = "file://{output}"\nstyle = "mosaic"\n'
             f'width = 320\nfaces = {str(faces).lower()}\nfaces_nice = 0')
    return settings(models_dir, gallery, source, sink, kiosk=kiosk, tracker="iou = 0.05",
                    **sections)


@pytest.fixture
def gallery(config, analyzer, demo_clip) -> Path:
    """The demo's two people, enrolled."""
    enroll_demo_people(config, analyzer, demo_clip[1])
    return config.gallery_path


def readable_video(path: Path) -> bool:
    capture = cv2.VideoCapture(str(path))
    try:
        return capture.read()[0]
    finally:
        capture.release()


def release(fifo: Path) -> None:
    """Open the FIFO's writing end, once its reader waits in ``open``, and close it."""
    deadline = time.monotonic() + 60
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:  # ENXIO: nobody reading yet
            assert time.monotonic() < deadline, "the face path never opened the FIFO"
            time.sleep(0.1)


def test_sigterm_ends_the_face_path_flushes_publishes_offline_and_a_second_one_waits(
        models_dir, gallery, demo_clip, broker, tmp_path):
    clip, _ = demo_clip
    events_file, outbox, video = tmp_path / "events.jsonl", tmp_path / "outbox.db", \
        tmp_path / "shown.avi"
    sub = Subscriber(broker.port, "jetkiosk/kiosk1/#")
    mqtt = (f'broker = "{broker.uri}"\nnode = "kiosk1"\noutbox = "{outbox}"\n'
            'flush_timeout = 30.0\nreconnect_min = 0.1\nreconnect_max = 0.2\nkeepalive = 5')
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, gallery, f"file://{clip}?loop=1", video, f"mqtt,jsonl:{events_file}",
        mqtt=mqtt), 4.0)
    manager = kiosk.manager
    try:
        def published() -> List[dict]:
            return read_jsonl(events_file)

        assert manager.wait(lambda: manager.times("READY=1"), 300), kiosk.text()
        ready = manager.times("READY=1")[0]
        assert manager.wait(lambda: kiosk.pings_after(ready), 60), kiosk.text()
        assert sub.wait(lambda: len(published()) >= 1, 120), kiosk.text()
        broker.pause()  # the broker stops answering: events wait in the outbox
        count = len(published())
        assert sub.wait(lambda: len(published()) > count, 120), kiosk.text()

        kiosk.proc.send_signal(signal.SIGTERM)  # mid-run, with events not yet delivered
        # the face path has taken its last frame and ended its tracks; the flush waits
        assert manager.wait(lambda: " frames in " in kiosk.text(), 120), kiosk.text()
        kiosk.proc.send_signal(signal.SIGTERM)  # a second one does not cut the flush short
        broker.resume()
        assert kiosk.proc.wait(120) == 0, kiosk.text()

        events = published()
        tracks = {e["track_id"] for e in events}
        assert tracks and tracks == {e["track_id"] for e in events if e["event"] == "end"}
        sent = {e["event_id"] for e in events}
        assert sub.wait(lambda: {json.loads(p)["event_id"] for p in
                                 sub.payloads("/faces/events")} >= sent, 30)
        assert Outbox(outbox).depth == 0  # everything acknowledged before exit
        assert sub.payloads("jetkiosk/kiosk1/availability")[-1] == b"offline"
        assert sub.payloads("jetkiosk/kiosk1/cam0/availability")[-1] == b"offline"
        assert readable_video(video)  # the output was finalised
        # one READY and one STOPPING: the face path's own loop tells systemd nothing
        assert len(manager.times("READY=1")) == 1
        assert manager.wait(lambda: len(manager.times("STOPPING=1")) == 1, 10)
        assert len(manager.times("STOPPING=1")) == 1
    finally:
        kiosk.stop()
        sub.close()


def test_sigint_stops_the_kiosk_without_faces_and_finalises_its_video(
        models_dir, still_clip, tmp_path):
    video = tmp_path / "shown.avi"
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, tmp_path / "no-gallery.npz", f"file://{still_clip}?loop=1", video,
        faces=False), 2.0)
    manager = kiosk.manager
    try:
        assert manager.wait(lambda: manager.times("READY=1"), 300), kiosk.text()
        ready = manager.times("READY=1")[0]
        assert manager.wait(lambda: len(kiosk.pings_after(ready)) >= 2, 60), kiosk.text()
        kiosk.proc.send_signal(signal.SIGINT)
        assert kiosk.proc.wait(120) == 0, kiosk.text()
        assert readable_video(video)
        assert manager.wait(lambda: manager.times("STOPPING=1"), 10)
    finally:
        kiosk.stop()


def test_sighup_reloads_the_face_paths_gallery_and_a_hung_face_path_stops_the_watchdog(
        models_dir, gallery, still_clip, tmp_path):
    kept = tmp_path / "gallery-copy.npz"
    shutil.copy(gallery, kept)
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, gallery, f"file://{still_clip}?loop=1", tmp_path / "shown.avi"), 1.0)
    manager = kiosk.manager
    try:
        assert manager.wait(lambda: manager.times("READY=1"), 300), kiosk.text()
        ready = manager.times("READY=1")[0]
        assert manager.wait(lambda: kiosk.pings_after(ready), 60), kiosk.text()

        kiosk.proc.send_signal(signal.SIGHUP)  # the gallery again, the display goes on
        assert manager.wait(lambda: "reloaded: no setting applied; gallery {'people': 2}"
                            in kiosk.text(), 60), kiosk.text()
        assert kiosk.proc.poll() is None and len(manager.times("READY=1")) == 1

        # The gallery becomes a FIFO: the face path's next reload blocks opening it, on the
        # face path's thread, while the display loop goes on showing frames.
        fifo = tmp_path / "hang"
        os.mkfifo(fifo)
        os.link(fifo, tmp_path / "hang-link")
        os.replace(tmp_path / "hang-link", gallery)
        kiosk.proc.send_signal(signal.SIGHUP)
        assert manager.wait(lambda: time.monotonic() - max(manager.times("WATCHDOG=1")) > 3.0,
                            60), kiosk.text()
        assert kiosk.proc.poll() is None  # alive: only the face path hangs
        hung_since = max(manager.times("WATCHDOG=1"))

        os.replace(kept, gallery)  # a regular file again for the reloads that follow
        release(fifo)  # the hung reload reads nothing: it logs why and the face path goes on
        assert manager.wait(lambda: kiosk.pings_after(hung_since), 60), kiosk.text()
        assert f"reload: {gallery}: " in kiosk.text() or "not reloaded" in kiosk.text()
        assert kiosk.stop() == 0, kiosk.text()
        assert len(manager.times("READY=1")) == 1
    finally:
        kiosk.stop()


def test_a_lost_rtsp_camera_is_reopened_and_its_state_published_by_the_face_path(
        models_dir, gallery, broker, tmp_path):
    needs_rtsp_server()
    port = free_port()
    server = rtsp_server(port)
    sub = Subscriber(broker.port, "jetkiosk/kiosk1/#")
    mqtt = (f'broker = "{broker.uri}"\nnode = "kiosk1"\noutbox = "{tmp_path / "outbox.db"}"')
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, gallery, f"rtsp://127.0.0.1:{port}/live", tmp_path / "shown.avi", "mqtt",
        mqtt=mqtt), 2.0)
    manager = kiosk.manager
    camera = "jetkiosk/kiosk1/cam0/availability"

    def states() -> List[bytes]:
        return [m.payload for m in list(sub.messages) if m.topic == camera]

    try:
        assert manager.wait(lambda: manager.times("READY=1"), 300), kiosk.text()
        assert sub.wait(lambda: states()[-1:] == [b"online"], 60), kiosk.text()

        server.kill()  # the camera is lost
        server.wait()
        assert sub.wait(lambda: states()[-1:] == [b"offline"], 60), kiosk.text()
        lost = time.monotonic()
        # still lost: reopening with backoff, the watchdog still fed from the display loop
        assert manager.wait(lambda: len(kiosk.pings_after(lost)) >= 3, 60), kiosk.text()
        assert states()[-1:] == [b"offline"] and kiosk.proc.poll() is None

        server = rtsp_server(port)  # it comes back, to the same process
        assert sub.wait(lambda: states()[-1:] == [b"online"], 60), kiosk.text()
        assert "reopening in" in kiosk.text()
        assert kiosk.stop() == 0, kiosk.text()
        assert sub.wait(lambda: states()[-1:] == [b"offline"], 30)
        assert len(manager.times("READY=1")) == 1
    finally:
        kiosk.stop()
        server.kill()
        sub.close()


def test_a_live_source_given_up_exits_1_for_systemd_to_restart(models_dir, tmp_path):
    source = f"rtsp://127.0.0.1:{free_port()}/live"  # nobody serves it
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, tmp_path / "no-gallery.npz", source, tmp_path / "shown.avi", faces=False)
        .replace("[run]\n", "[run]\nretries = 1\n"), 2.0)
    try:
        assert kiosk.proc.wait(300) == 1, kiosk.text()
        assert "gave up after 1 reopenings" in kiosk.text()
        assert not kiosk.manager.times("READY=1")
    finally:
        kiosk.stop()


def test_sigterm_while_a_lost_camera_is_being_reopened_exits_0(models_dir, tmp_path):
    source = f"rtsp://127.0.0.1:{free_port()}/live"  # nobody serves it: reopened forever
    kiosk = KioskProcess(tmp_path, kiosk_settings(
        models_dir, tmp_path / "no-gallery.npz", source, tmp_path / "shown.avi", faces=False),
        2.0)
    try:
        assert kiosk.manager.wait(lambda: "reopening in" in kiosk.text(), 300), kiosk.text()
        assert kiosk.proc.poll() is None
        kiosk.proc.send_signal(signal.SIGTERM)
        assert kiosk.proc.wait(120) == 0, kiosk.text()
        assert kiosk.manager.wait(lambda: kiosk.manager.times("STOPPING=1"), 10)
    finally:
        kiosk.stop()

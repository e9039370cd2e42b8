"""`jetkiosk run` with a real RTSP camera beside a clip, as a process under a fake systemd
manager: the RTSP camera lost and restored while the clip's camera keeps sending events, each
camera's availability on its own topic; a camera given up ends the run with status 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from node.test_service_daemon import Daemon, needs_rtsp_server, rtsp_server

from conftest import enroll_demo_people
from mosquitto import Subscriber, free_port

PREFIX = "jetkiosk/multi"


def two_cameras(config, door: str, lobby: str, broker_uri: str, outbox: Path,
                retries: int = 0) -> str:
    return (f'[models]\ndir = "{config.models_dir}"\n[gallery]\npath = "{config.gallery_path}"\n'
            f'[run]\nsink = "mqtt"\nreconnect_min = 0.2\nreconnect_max = 1.0\n'
            f'frame_timeout = 2.0\nretries = {retries}\n'
            f'[[run.cameras]]\nname = "door"\nsource = "{door}"\n'
            f'[[run.cameras]]\nname = "lobby"\nsource = "{lobby}"\n'
            f'[mqtt]\nbroker = "{broker_uri}"\nnode = "multi"\nstats_interval = 0.5\n'
            f'outbox = "{outbox}"\n[log]\nlevel = "info"\n')


def test_a_lost_rtsp_camera_comes_back_while_the_clip_camera_goes_on(
        config, analyzer, demo_clip, broker, tmp_path):
    needs_rtsp_server()
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    port = free_port()
    server = rtsp_server(port)
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    daemon = Daemon(tmp_path, two_cameras(config, f"rtsp://127.0.0.1:{port}/live",
                                          f"file://{clip}?loop=1", broker.uri,
                                          tmp_path / "outbox.db"), 2.0)

    def states(camera: str) -> List[bytes]:
        return sub.payloads(f"{PREFIX}/{camera}/availability")

    def lobby_events() -> int:
        return len(sub.payloads(f"{PREFIX}/lobby/faces/events"))

    def stats() -> dict:
        found = sub.payloads(f"{PREFIX}/stats")
        return json.loads(found[-1]) if found else {}

    try:
        assert sub.wait(lambda: states("door")[-1:] == [b"online"], 120), daemon.text()
        assert sub.wait(lambda: lobby_events() > 0, 120), daemon.text()
        assert states("lobby") == [b"online"]

        server.kill()  # the door camera is lost
        server.wait()
        assert sub.wait(lambda: states("door")[-1:] == [b"offline"], 30), daemon.text()
        assert sub.wait(lambda: stats().get("cameras", {}).get("door", {}).get("source", {})
                        .get("online") is False)
        lost = stats()
        seen = lobby_events()
        assert sub.wait(lambda: lobby_events() > seen + 2, 60)  # the lobby goes on meanwhile
        before = lost["cameras"]["lobby"]["frames"]  # and stats say so, once they come
        assert sub.wait(lambda: stats()["cameras"]["lobby"]["frames"] > before, 30)
        now = stats()
        assert now["cameras"]["lobby"]["source"]["online"] is True
        assert now["source"]["online"] is False and now["source"]["reason"].startswith("door: ")
        assert states("lobby") == [b"online"]  # its availability never changed
        assert daemon.proc.poll() is None

        server = rtsp_server(port)  # it comes back, to the same process
        assert sub.wait(lambda: states("door")[-1:] == [b"online"], 60), daemon.text()
        assert sub.wait(lambda: stats()["cameras"]["door"]["source"]["online"] is True)
        assert stats()["cameras"]["door"]["source"]["reconnects"] >= 1
        assert stats()["cameras"]["lobby"]["source"]["reconnects"] == 0
        assert states("lobby") == [b"online"]

        assert daemon.stop() == 0, daemon.text()
        assert sub.wait(lambda: states("door")[-1:] == states("lobby")[-1:] == [b"offline"])
    finally:
        daemon.stop()
        server.kill()
        sub.close()


def test_a_camera_given_up_ends_the_run_with_status_1(config, analyzer, demo_clip, broker,
                                                      tmp_path):
    clip, photos = demo_clip
    enroll_demo_people(config, analyzer, photos)
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    nobody = f"rtsp://127.0.0.1:{free_port()}/live"  # nobody serves it
    daemon = Daemon(tmp_path, two_cameras(config, nobody, f"file://{clip}?loop=1", broker.uri,
                                          tmp_path / "outbox.db", retries=1), 2.0)
    try:
        assert daemon.proc.wait(300) == 1, daemon.text()
        assert "gave up after 1 reopenings" in daemon.text()
        assert "exiting with status 1" in daemon.text()
        for topic in (f"{PREFIX}/door/availability", f"{PREFIX}/lobby/availability"):
            assert sub.wait(lambda topic=topic: sub.payloads(topic)[-1:] == [b"offline"], 30)
        assert sub.wait(lambda: sub.payloads(f"{PREFIX}/availability")[-1:] == [b"offline"])
    finally:
        daemon.stop()
        sub.close()

"""sd_notify over real AF_UNIX datagram sockets: path and abstract addresses, no-op outside
systemd, the watchdog interval as sd_watchdog_enabled(3) reads it."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import List

import numpy as np
import pytest

from jetkiosk.edge.capture.sources import Source
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery
from jetkiosk.edge.node.loop import CaptureLoop
from jetkiosk.edge.node.sinks import open_sink
from jetkiosk.edge.service.sd_notify import Notifier


def listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    return sock


def test_path_socket_receives_ready_status_watchdog_stopping(tmp_path):
    path = str(tmp_path / "notify")
    with listener(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready("models loaded")
        assert sock.recv(4096) == b"READY=1\nSTATUS=models loaded"
        assert notifier.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.status("camera offline") and sock.recv(4096) == b"STATUS=camera offline"
        assert notifier.stopping() and sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket():
    name = f"jetkiosk-test-{uuid.uuid4().hex}"
    with listener("\0" + name) as sock:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_outside_systemd_and_unreachable_managers_are_quiet(tmp_path, caplog):
    assert not Notifier({}).enabled and not Notifier({}).ready()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.enabled and not gone.watchdog()  # logged, never raised
    assert "cannot notify systemd" in caplog.text
    assert not Notifier({"NOTIFY_SOCKET": "relative"}).enabled


@pytest.mark.parametrize("env, seconds", [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(env, seconds):
    assert Notifier(env).watchdog_seconds == seconds


class StallingSource(Source):
    """Blank frames, then a stall inside its reader's read, then one more frame. The stall
    lasts until the manager has heard nothing for two watchdog periods (at most 100 pings):
    a hung reader stops the loop's pings, although the loop itself still runs."""

    def __init__(self, sock: socket.socket, watchdog: float):
        self.sock, self.watchdog = sock, watchdog
        self.before: List[bytes] = []
        self.during: List[bytes] = []
        self.silenced = False

    def frames(self):
        frame = np.zeros((240, 320, 3), np.uint8)
        for _ in range(8):
            time.sleep(self.watchdog / 4)
            yield frame, time.monotonic()
        self.sock.setblocking(False)
        while True:
            try:
                self.before.append(self.sock.recv(4096))
            except BlockingIOError:
                break
        self.sock.settimeout(self.watchdog * 2)
        for _ in range(100):
            try:
                self.during.append(self.sock.recv(4096))
            except socket.timeout:
                self.silenced = True
                break
        yield frame, time.monotonic()

    def close(self) -> None:
        pass


def test_capture_loop_is_ready_after_the_first_frame_and_pings_only_while_frames_flow(
        config, analyzer, tmp_path):
    path = str(tmp_path / "notify")
    with listener(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        loop = CaptureLoop(config, analyzer, Matcher(Gallery("e", "f", 512), 1.0),
                           open_sink("jsonl:" + str(tmp_path / "events.jsonl")), notifier)
        source = StallingSource(sock, 0.2)
        assert loop.run(source) == 9
        after = []
        sock.settimeout(0.5)
        while True:
            try:
                after.append(sock.recv(4096))
            except socket.timeout:
                break
    assert source.before[0].startswith(b"READY=1\nSTATUS=")
    assert source.before.count(b"WATCHDOG=1") >= 2
    assert source.silenced  # a hung reader stops the pings: systemd restarts the service
    assert set(source.during) <= {b"WATCHDOG=1"}
    assert after[-1] == b"STOPPING=1"  # pings resume with frames; then stop
    assert b"WATCHDOG=1" in after[:-1] and set(after[:-1]) == {b"WATCHDOG=1"}

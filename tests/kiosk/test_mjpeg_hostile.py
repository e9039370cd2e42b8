"""The kiosk's MJPEG server under hostile clients: slowloris requests, more clients than
allowed, and stream clients that never read. The first three run against a real
`jetkiosk kiosk` process on a looping clip (the kiosk.http_* defaults); the last two against
the server class with short limits, fed real frames."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List

import cv2
import numpy as np
import pytest

from conftest import noisy_frames
from jetkiosk.edge.core.config import KioskConfig
from jetkiosk.edge.kiosk.mjpeg import BOUNDARY, HttpLimits, MjpegServer
from mosquitto import free_port

DEFAULTS = KioskConfig()
HALF_REQUEST = b"GET /stream.mjpg HTTP/1.1\r\nHost: kiosk\r\n"
PATIENCE = 60.0  # seconds beyond a limit before a test gives up (never a pass criterion)


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def connect(port: int, request: bytes = b"", rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes (an orderly close or a reset)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return data


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0


def get(port: int, path: str) -> bytes:
    return read_all(connect(port, f"GET {path} HTTP/1.1\r\nHost: kiosk\r\n\r\n".encode()), 30)


class Viewer:
    """A normal client of /stream.mjpg: a thread reads the parts and notes when each came."""

    def __init__(self, port: int):
        self.sock = connect(port, b"GET /stream.mjpg HTTP/1.1\r\nHost: kiosk\r\n\r\n")
        self.sock.settimeout(PATIENCE)
        self.stream = self.sock.makefile("rb")
        assert b" 200 " in self.stream.readline()
        headers = b""
        while not headers.endswith(b"\r\n\r\n"):
            headers += self.stream.readline()
        assert f"multipart/x-mixed-replace; boundary={BOUNDARY}".encode() in headers
        self.times: List[float] = []
        self.not_jpeg = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                assert self.stream.readline().strip() == f"--{BOUNDARY}".encode()
                length = 0
                while True:
                    line = self.stream.readline().strip()
                    if not line:
                        break
                    key, _, value = line.partition(b":")
                    if key.lower() == b"content-length":
                        length = int(value)
                jpeg = self.stream.read(length)
                self.stream.readline()
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                self.not_jpeg += image is None
                self.times.append(time.monotonic())
        except (OSError, ValueError, AssertionError):
            pass  # closed

    def settled(self, seconds: float) -> bool:
        """Whether frames have been coming for ``seconds``."""
        return bool(self.times) and time.monotonic() - self.times[0] > seconds

    def rate(self, start: float, end: float) -> float:
        return sum(start <= t < end for t in self.times) / (end - start)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # ends the reading thread
        self.thread.join(10)
        self.stream.close()
        self.sock.close()


class KioskProcess:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log

    def threads(self) -> int:
        status_text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status_text.split("Threads:")[1].split()[0])

    def sockets(self) -> int:
        fds = Path(f"/proc/{self.process.pid}/fd")
        count = 0
        for fd in fds.iterdir():
            try:
                count += os.readlink(fd).startswith("socket:")
            except OSError:
                pass  # closed meanwhile
        return count


KIOSK_CLIENTS = 6  # the kiosk's limit, set from the command line (the default is 8)


@pytest.fixture(scope="module")
def kiosk(still_clip, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("kiosk") / "stderr.txt"
    with open(log, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "jetkiosk.edge.cli.main", "kiosk", "--source",
             f"file://{still_clip}?loop=1", "--output", f"http://127.0.0.1:{port}/",
             "--style", "mosaic", "--set", "kiosk.width=320", "--set",
             f"kiosk.http_max_clients={KIOSK_CLIENTS}", "-v"],
            stdout=subprocess.DEVNULL, stderr=err)
    running = KioskProcess(process, port, log)

    def serving() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return status(get(port, "/snapshot.jpg")) == 200
        except OSError:
            return False

    try:
        assert eventually(serving, 120), log.read_text()
        yield running
    finally:
        process.terminate()
        process.wait(30)
    assert "Traceback" not in log.read_text(), log.read_text()


def attack_window(viewer: Viewer, attack: Callable[[], object], offset: float,
                  seconds: float) -> tuple:
    """The viewer's frames per second over ``seconds`` before the attack and over
    ``seconds`` from ``offset`` after it starts, and what ``attack`` returned."""
    assert eventually(lambda: viewer.settled(seconds + 0.5), PATIENCE)
    start = time.monotonic()
    result = attack()
    time.sleep(offset + seconds)
    return viewer.rate(start - seconds, start), viewer.rate(start + offset,
                                                             start + offset + seconds), result


def test_slowloris_is_closed_after_the_header_timeout_while_a_viewer_keeps_its_frames(kiosk):
    viewer = Viewer(kiosk.port)
    sockets, threads = kiosk.sockets(), kiosk.threads()
    stop = threading.Event()
    stalled: List[socket.socket] = []

    def trickle() -> None:  # a byte at a time, never the end of the headers
        while not stop.wait(0.3):
            for sock in stalled:
                try:
                    sock.send(b"X")
                except OSError:
                    pass

    def attack() -> float:
        began = time.monotonic()
        stalled.extend(connect(kiosk.port, HALF_REQUEST) for _ in range(50))
        threading.Thread(target=trickle, daemon=True).start()
        assert status(get(kiosk.port, "/snapshot.jpg")) == 200  # a newcomer is served
        return began

    timeout = DEFAULTS.http_header_timeout
    before, during, began = attack_window(viewer, attack, 0.0, min(3.0, 0.6 * timeout))
    threads_during = kiosk.threads()
    replies, closed_after = [], []
    for sock in stalled:
        replies.append(read_all(sock, timeout + PATIENCE))
        closed_after.append(time.monotonic() - began)
    stop.set()
    codes = [status(r) for r in replies]
    held = [t for t, code in zip(closed_after, codes) if code == 408]
    print(f"\nslowloris: viewer {before:.1f} -> {during:.1f} frames/s; threads {threads} -> "
          f"{threads_during}; {len(held)} held closed after {min(held):.1f}-{max(held):.1f} s, "
          f"{codes.count(503)} answered 503")
    assert during >= 0.5 * before, (before, during)
    assert threads_during <= threads + 2
    # Each newcomer took the place of the oldest stalled one; the viewer keeps its place.
    assert len(held) == KIOSK_CLIENTS - 2
    assert codes.count(503) == 50 - len(held), codes
    assert min(held) >= 0.9 * timeout  # not before its time
    assert eventually(lambda: kiosk.sockets() <= sockets, PATIENCE)
    count = len(viewer.times)
    assert eventually(lambda: len(viewer.times) > count + 5, PATIENCE)
    assert viewer.not_jpeg == 0
    viewer.close()


def test_clients_beyond_the_limit_get_503_and_a_freed_place_is_taken_again(kiosk):
    sockets, threads = kiosk.sockets(), kiosk.threads()
    viewers = [Viewer(kiosk.port) for _ in range(KIOSK_CLIENTS)]
    refused = get(kiosk.port, "/snapshot.jpg")
    assert status(refused) == 503, refused
    retry = [line for line in refused.split(b"\r\n") if line.lower().startswith(b"retry-after:")]
    assert retry and int(retry[0].split(b":")[1]) >= 1, refused
    assert status(get(kiosk.port, "/")) == 503
    assert kiosk.threads() <= threads + 2
    viewers.pop().close()
    assert eventually(lambda: status(get(kiosk.port, "/")) == 200, PATIENCE)
    assert eventually(lambda: all(len(v.times) > 3 for v in viewers), PATIENCE)
    for viewer in viewers:
        viewer.close()
    assert eventually(lambda: kiosk.sockets() <= sockets, PATIENCE)


def test_clients_that_never_read_are_dropped_and_the_viewers_frame_rate_holds(kiosk):
    viewer = Viewer(kiosk.port)
    sockets, threads = kiosk.sockets(), kiosk.threads()
    request = b"GET /stream.mjpg HTTP/1.1\r\nHost: kiosk\r\n\r\n"
    timeout = DEFAULTS.http_send_timeout

    def attack() -> float:
        began = time.monotonic()
        readers.extend(connect(kiosk.port, request, rcvbuf=4096) for _ in range(KIOSK_CLIENTS))
        return began

    readers: List[socket.socket] = []
    before, during, began = attack_window(viewer, attack, 1.0, min(4.0, 0.4 * timeout))
    threads_during = kiosk.threads()
    assert eventually(lambda: kiosk.sockets() <= sockets, timeout + PATIENCE)
    dropped_after = time.monotonic() - began
    codes = [status(read_all(sock, PATIENCE)) for sock in readers]
    print(f"\nnever-readers: viewer {before:.1f} -> {during:.1f} frames/s; threads {threads} -> "
          f"{threads_during}; dropped after {dropped_after:.1f} s; {codes}")
    assert during >= 0.5 * before, (before, during)
    assert threads_during <= threads + 2
    assert sorted(codes) == [200] * (KIOSK_CLIENTS - 1) + [503]
    assert dropped_after >= 0.9 * timeout
    count = len(viewer.times)
    assert eventually(lambda: len(viewer.times) > count + 5, PATIENCE)
    assert viewer.not_jpeg == 0
    viewer.close()
    assert eventually(lambda: "(stream): what was sent did not reach it" in
                      kiosk.log.read_text(), PATIENCE)


@pytest.fixture
def server():
    """The server class with short limits, fed the astronaut with camera noise at ~30 fps."""
    frames = list(noisy_frames(cv2.resize(_astronaut(), (640, 360)), 10))
    served = MjpegServer("127.0.0.1", 0, 80, HttpLimits(3, 0.5, 1.0))
    stop = threading.Event()

    def feed() -> None:
        for i in itertools.count():
            served.post(frames[i % len(frames)])
            if stop.wait(1 / 30):
                return

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield served
    stop.set()
    feeder.join(10)
    served.close()


def _astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def test_short_limits_byte_by_byte_headers_newcomers_refusals_and_never_readers(server):
    threads = threading.active_count()
    viewer = Viewer(server.port)
    trickled = [connect(server.port, b"G") for _ in range(2)]
    stop = threading.Event()

    def trickle() -> None:
        for byte in HALF_REQUEST[1:] * 100:
            for sock in trickled:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    pass
            if stop.wait(0.05):
                return

    threading.Thread(target=trickle, daemon=True).start()
    assert status(get(server.port, "/")) == 200  # in the place of the first trickler
    assert threading.active_count() <= threads + 2  # the viewer's and the trickler's
    assert [status(read_all(s, PATIENCE)) for s in trickled] == [503, 408]
    stop.set()
    never = [connect(server.port, b"GET /stream.mjpg HTTP/1.0\r\n\r\n", rcvbuf=4096)
             for _ in range(2)]
    refused = get(server.port, "/")  # their requests are read first: every place is served
    assert status(refused) == 503 and b"\r\nRetry-After: 1\r\n" in refused, refused
    assert eventually(lambda: status(get(server.port, "/")) == 200, PATIENCE)  # dropped
    assert [status(read_all(s, PATIENCE)) for s in never] == [200, 200]
    count = len(viewer.times)
    assert eventually(lambda: len(viewer.times) > count + 5, PATIENCE)
    viewer.close()


@pytest.mark.parametrize("request_bytes, code", [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"hello\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000, 431),
    (b"GET /index.html?x=1 HTTP/1.1\n\n", 200),
])
def test_bad_requests_get_their_status_and_are_closed(server, request_bytes, code):
    reply = read_all(connect(server.port, request_bytes), PATIENCE)
    assert status(reply) == code, reply
    if code == 431:
        assert b"Connection: close" in reply
    assert status(get(server.port, "/snapshot.jpg")) == 200

"""The kiosk's MJPEG server under hostile clients: a normal viewer's frames per second with
no attack, with 50 slowloris sockets and with 8 clients that never read, in one run.

The real server class (edge/kiosk/mjpeg.py) is fed 640x360 camera-like frames at 30 fps
by a producer thread, as the kiosk loop does; a viewer reads /stream.mjpg as a browser
does. Each attacker the server closes connects again at once, so the attack lasts the
whole phase. Per phase: the viewer's frames/s and its ratio to the unattacked phase, the
producer's frames/s and its median and slowest post() (a producer that waited on a client would
show it here), attacker connections opened, and the process's threads.

Usage: python bench/mjpeg_clients.py [--seconds 10] [--max-clients 64] [--quick]
(--max-clients 64 lets every attacker in; the kiosk's default 8 turns most away with 503)
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import socket
import struct
import threading
import time
from typing import Dict, List

import cv2
import numpy as np

from common import machine, parse

SIZE, FPS = (640, 360), 30.0
HALF_REQUEST = b"GET /stream.mjpg HTTP/1.1\r\nHost: kiosk\r\n"
STREAM_REQUEST = b"GET /stream.mjpg HTTP/1.1\r\nHost: kiosk\r\n\r\n"
TCP_ESTABLISHED = 1


def frames() -> List[np.ndarray]:
    """The astronaut at 640x360 with fresh sensor noise in each of 10 frames."""
    from skimage import data

    image = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), SIZE)
    rng = np.random.default_rng(0)
    return [np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
            for _ in range(10)]


class Producer(threading.Thread):
    """Posts frames at FPS, as the kiosk loop does, timing each post()."""

    def __init__(self, server) -> None:
        super().__init__(daemon=True)
        self.server, self.pictures = server, frames()
        self.stop, self.posts = threading.Event(), []  # (when, seconds the post took)

    def run(self) -> None:
        start = time.monotonic()
        for i in itertools.count():
            began = time.monotonic()
            self.server.post(self.pictures[i % len(self.pictures)])
            self.posts.append((began, time.monotonic() - began))
            if self.stop.wait(max(0.0, start + (i + 1) / FPS - time.monotonic())):
                return


class Viewer(threading.Thread):
    """Reads /stream.mjpg and notes when each part has come."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(STREAM_REQUEST)
        self.times: List[float] = []

    def run(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            while True:
                line = stream.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    stream.readline()
                    stream.read(int(line.split(b":")[1]))
                    self.times.append(time.monotonic())
        except OSError:
            return


def attack(port: int, kind: str, count: int, stop, opened) -> None:
    """``count`` hostile connections, each opened again as soon as the server closes it (run
    in a process of its own, as an attacker would be): ``slowloris`` sends half a request
    and then a byte every 0.3 s, ``never-read`` asks for the stream with a 4 KiB receive
    buffer and reads nothing. ``opened`` counts the connections."""

    def connect() -> socket.socket:
        sock = socket.socket()
        if kind == "never-read":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(HALF_REQUEST if kind == "slowloris" else STREAM_REQUEST)
        opened.value += 1
        return sock

    socks = [connect() for _ in range(count)]
    while not stop.wait(0.3):
        for i, sock in enumerate(socks):
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            if struct.unpack("B", info[:1])[0] != TCP_ESTABLISHED:  # closed by the server
                sock.close()
                socks[i] = sock = connect()
            if kind == "slowloris":
                try:
                    sock.send(b"X")
                except OSError:
                    pass
    for sock in socks:
        sock.close()


def phase(port: int, producer: Producer, viewer: Viewer, kind: str, count: int,
          seconds: float) -> Dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    stop, opened = spawn.Event(), spawn.Value("i", 0)
    attacker = spawn.Process(target=attack, args=(port, kind, count, stop, opened))
    if count:
        attacker.start()
        while opened.value < count:  # the attack is on
            time.sleep(0.01)
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    threads = threading.active_count()
    if count:
        stop.set()
        attacker.join()
    posts = [took for when, took in producer.posts if start <= when < end]
    return {"viewer": sum(start <= t < end for t in viewer.times) / (end - start),
            "producer": len(posts) / (end - start), "post_p50": 1000 * float(np.median(posts)),
            "post_max": 1000 * max(posts), "opened": opened.value, "threads": threads}


def main() -> None:
    from jetkiosk.edge.core.config import KioskConfig
    from jetkiosk.edge.kiosk.mjpeg import HttpLimits, MjpegServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--max-clients", type=int, default=64,
                        help="kiosk.http_max_clients for the run (the kiosk's default is 8)")
    args = parse(parser, "2 s per phase")
    seconds = 2.0 if args.quick else args.seconds
    k = KioskConfig()
    limits = HttpLimits(args.max_clients, k.http_header_timeout, k.http_send_timeout)
    print(f"# MJPEG viewer under attack, {SIZE[0]}x{SIZE[1]} at {FPS:.0f} fps, {seconds:.0f} s "
          f"per phase, max_clients={limits.max_clients} header_timeout="
          f"{limits.header_timeout:g} s send_timeout={limits.send_timeout:g} s; {machine()}")
    server = MjpegServer("127.0.0.1", 0, k.jpeg_quality, limits)
    producer = Producer(server)
    producer.start()
    viewer = Viewer(server.port)
    viewer.start()
    time.sleep(1.0)  # the viewer is streaming
    rows = [("no attack", "", 0), ("50 slowloris", "slowloris", 50),
            ("8 never-reading", "never-read", 8)]
    print(f"{'phase':<16} {'viewer fps':>10} {'ratio':>6} {'producer fps':>12} "
          f"{'post p50/max ms':>16} {'attacks':>8} {'threads':>8}")
    base = 0.0
    for label, kind, count in rows:
        row = phase(server.port, producer, viewer, kind, count, seconds)
        base = base or row["viewer"]
        print(f"{label:<16} {row['viewer']:>10.1f} {row['viewer'] / base:>6.2f} "
              f"{row['producer']:>12.1f} {row['post_p50']:>9.3f}/{row['post_max']:<6.2f} "
              f"{row['opened']:>8.0f} "
              f"{row['threads']:>8.0f}")
    producer.stop.set()
    producer.join()
    server.close()


if __name__ == "__main__":
    main()

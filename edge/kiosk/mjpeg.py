"""MJPEG over HTTP: the kiosk display as a web page, for a browser in kiosk mode.

``/`` is a minimal full-screen page, ``/stream.mjpg`` the multipart JPEG stream,
``/snapshot.jpg`` the latest frame. Each client gets the newest frame when it is ready
for one (a slow client skips frames); a frame is JPEG-encoded once, however many clients
watch. A ``Routes`` object (the kiosk's page, edge/kiosk/page.py) can serve ``/`` and more
paths itself: GETs it answers at once on the serving thread, from memory; POSTs (at most
``MAX_BODY`` bytes) it runs on one worker thread of their own, started at the first, while
their client waits (``send_timeout``, then 503), so a slow action never holds up a viewer.

One thread serves every client from a selector over non-blocking sockets, so a client
costs a socket, never a thread, and the kiosk posting a frame only wakes that thread: no
client can hold up the kiosk or another client. Hostile clients are bounded by
``HttpLimits``: at most ``max_clients`` connections are open. One still sending its request
counts, but a new connection takes the place of the oldest of those; when every place is
served, a new connection is answered 503 with a Retry-After and closed at once (either way
the one closed gets that 503). A request's headers must arrive within ``header_timeout``
seconds (408, closed); a response or stream part that has not reached its client within
``send_timeout`` (it does not read) drops the client.
"""

from __future__ import annotations

import errno
import logging
import math
import re
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Dict, Optional, Set, Tuple

import cv2
import numpy as np

from ..core.config import KioskConfig

log = logging.getLogger(__name__)

BOUNDARY = "jetkioskframe"
PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jetkiosk</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>html,body{margin:0;height:100%;background:#000;overflow:hidden}
img{width:100vw;height:100vh;object-fit:contain;display:block}</style></head>
<body><img id="stream" src="stream.mjpg" alt="jetkiosk"></body></html>
"""
MAX_HEAD = 8192  # bytes of request line and headers
HEAD_END = re.compile(rb"\r?\n\r?\n")
MAX_BODY = 1024  # bytes of a POST's body
SNAPSHOT_WAIT = 5.0  # seconds /snapshot.jpg waits for a first frame
ACCEPT_PAUSE = 1.0  # seconds without accepting after the process runs out of sockets
REFUSALS_LOG_EVERY = 60.0  # seconds between warnings about clients turned away
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(frozen=True)
class HttpLimits:
    """The kiosk.http_* settings: connections at once, and seconds for a request's headers
    to arrive and for a response or stream part to reach its client."""

    max_clients: int
    header_timeout: float
    send_timeout: float

    @classmethod
    def from_config(cls, kiosk: KioskConfig) -> HttpLimits:
        return cls(kiosk.http_max_clients, kiosk.http_header_timeout, kiosk.http_send_timeout)


def response(status: HTTPStatus, body: bytes, kind: str,
             extra: Optional[Dict[str, str]] = None) -> bytes:
    """A whole HTTP/1.0 response; the connection closes after it."""
    headers = {"Content-Type": kind, "Content-Length": str(len(body)),
               "Cache-Control": "no-store", "Connection": "close", **(extra or {})}
    return head(status, headers) + body


def head(status: HTTPStatus, headers: Dict[str, str]) -> bytes:
    lines = [f"HTTP/1.0 {status.value} {status.phrase}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error(status: HTTPStatus, extra: Optional[Dict[str, str]] = None) -> bytes:
    return response(status, f"{status.value} {status.phrase}\n".encode(),
                    "text/plain; charset=utf-8", extra)


Reply = Tuple[HTTPStatus, bytes, str]  # status, body, content type


class Routes:
    """Paths a server answers beside its own (``/`` included, when ``get`` answers it)."""

    post_paths: Tuple[str, ...] = ()  # paths ``post`` takes
    secret_paths: Tuple[str, ...] = ()  # prefixes of paths never logged whole (tokens)

    def get(self, path: str) -> Optional[Reply]:
        """The reply to a GET of ``path`` (None: not one of these paths). Runs on the serving
        thread: from memory, never waiting."""
        return None

    def post(self, path: str, body: bytes, local: str) -> Reply:
        """The reply to a POST of ``body`` to one of ``post_paths`` (on the worker thread;
        ``local``: the server's address the request came in on)."""
        raise NotImplementedError


STREAM_HEAD = head(HTTPStatus.OK, {
    "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
    "Cache-Control": "no-store", "Connection": "close"})


class _Client:
    """One connection: its state, its request so far, what is left to send, its deadline."""

    HEAD, WAIT, REPLY, STREAM = "reading its request", "waiting for a frame", "reply", "stream"
    ACT = "waiting for an action"

    def __init__(self, sock: socket.socket, peer: str, deadline: float):
        self.sock = sock
        self.peer = peer
        self.state = self.HEAD
        self.request = bytearray()
        self.out = memoryview(b"")
        self.deadline = deadline  # math.inf: none
        self.events = READ
        self.seq = 0  # the newest frame queued to a stream
        self.head: Optional[bytes] = None  # request line and headers, once all arrived
        self.body_at = 0  # where the body starts in ``request``
        self.length = 0  # the body's length (Content-Length)
        self.refusal = HTTPStatus.BAD_REQUEST  # why a POST's length is refused
        self.action: Optional[Future] = None  # a POST being run (ACT)


class MjpegServer:
    """Serves posted frames on ``host:port`` (port 0: any free port, see ``.port``)."""

    def __init__(self, host: str, port: int, quality: int = 80,
                 limits: Optional[HttpLimits] = None, routes: Optional[Routes] = None):
        self.quality = quality
        self.routes = routes  # may be set later, before frames are posted
        self._actions: Optional[ThreadPoolExecutor] = None
        self.limits = limits or HttpLimits.from_config(KioskConfig())
        self._listener = socket.create_server((host, port), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, READ)
        self._selector.register(self._wake_r, READ)
        self._clients: Set[_Client] = set()
        self._lock = threading.Lock()  # the posted frame, its sequence number, the wake flag
        self._frame: Optional[np.ndarray] = None
        self._seq = 0
        self._woken = False
        self._jpeg_seq, self._jpeg = 0, b""
        self._closing = False
        self._accept_at = 0.0  # accepting again from then, after running out of sockets
        self._refused, self._refusals_logged = 0, -math.inf
        self._thread = threading.Thread(target=self._serve, name="mjpeg", daemon=True)
        self._thread.start()

    def post(self, frame: np.ndarray) -> None:
        """The newest frame; never waits on a client (it only wakes the serving thread)."""
        with self._lock:
            self._frame = frame
            self._seq += 1
            wake, self._woken = not self._woken, True
        if wake:
            self._wake()

    def close(self) -> None:
        self._closing = True
        self._wake()
        self._thread.join(timeout=10)
        self._wake_w.close()
        if self._actions is not None:
            self._actions.shutdown(wait=False)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake is pending anyway) or closed
            pass

    def _serve(self) -> None:
        try:
            while not self._closing:
                now = time.monotonic()
                self._expire(now)
                if self._accept_at and now >= self._accept_at:
                    self._accept_at = 0.0
                    self._selector.register(self._listener, READ)
                due = min([c.deadline for c in self._clients] + [self._accept_at or math.inf])
                timeout = None if due == math.inf else max(0.0, due - now)
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._on_wake()
                    elif mask & READ and key.data in self._clients:
                        self._read(key.data)
                    if mask & WRITE and key.data in self._clients:
                        self._pump(key.data)
        finally:
            for client in list(self._clients):
                self._drop(client)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                log.warning("http: cannot accept a client (%s); pausing %.0f s", exc,
                            ACCEPT_PAUSE)
                self._selector.unregister(self._listener)
                self._accept_at = time.monotonic() + ACCEPT_PAUSE
                return
            sock.setblocking(False)
            if not self._room():
                self._refuse(sock)
                continue
            client = _Client(sock, address[0], time.monotonic() + self.limits.header_timeout)
            self._clients.add(client)
            self._selector.register(sock, READ, client)

    def _room(self) -> bool:
        """Whether a new connection fits, once the oldest connection still sending its request
        (what it sent is read first) has made room with a 503: requests that never finish
        cannot lock new viewers out. False when every place is served."""
        while len(self._clients) >= self.limits.max_clients:
            waiting = [c for c in self._clients if c.state == c.HEAD]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c.deadline)
            self._read(oldest)
            if oldest.state == oldest.HEAD and oldest in self._clients:
                self._clients.discard(oldest)
                self._selector.unregister(oldest.sock)
                self._refuse(oldest.sock)
        return True

    def _refuse(self, sock: socket.socket) -> None:
        """503 with a Retry-After, and closed at once (what came of its request is read and
        dropped first, so that the close is an orderly one)."""
        retry = str(max(1, math.ceil(self.limits.header_timeout)))
        try:
            sock.recv(MAX_HEAD)
        except OSError:
            pass
        try:
            sock.send(error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": retry}))
        except OSError:
            pass
        sock.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refusals_logged >= REFUSALS_LOG_EVERY:
            log.warning("http: %d client(s) turned away with 503: %d connections open "
                        "(kiosk.http_max_clients)", self._refused, self.limits.max_clients)
            self._refused, self._refusals_logged = 0, now

    def _expire(self, now: float) -> None:
        for client in [c for c in self._clients if c.deadline <= now]:
            if client.state == client.HEAD:
                log.debug("http %s: no whole request in %.1f s: closed", client.peer,
                          self.limits.header_timeout)
                try:
                    client.sock.send(error(HTTPStatus.REQUEST_TIMEOUT))
                except OSError:
                    pass
                self._drop(client)
            elif client.state in (client.WAIT, client.ACT):
                self._reply(client, error(HTTPStatus.SERVICE_UNAVAILABLE))
            else:
                log.info("http %s: dropped (%s): what was sent did not reach it in %.1f s "
                         "(kiosk.http_send_timeout)", client.peer, client.state,
                         self.limits.send_timeout)
                self._drop(client, abort=True)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)  # it went away
            return
        if client.state != client.HEAD:
            return  # nothing more is read from a client once its request is in
        client.request += data
        if client.head is None:
            end = HEAD_END.search(client.request, max(0, len(client.request) - len(data) - 3))
            if end is None:
                if len(client.request) > MAX_HEAD:
                    self._reply(client, error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
                return
            if end.start() > MAX_HEAD:
                self._reply(client, error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
                return
            client.head, client.body_at = bytes(client.request[:end.start()]), end.end()
            if not self._body_expected(client):
                self._route(client, client.head, b"")
                return
        if len(client.request) - client.body_at >= client.length:
            body = bytes(client.request[client.body_at:client.body_at + client.length])
            self._route(client, client.head, body)

    def _body_expected(self, client: _Client) -> bool:
        """Whether a body is to be read before routing: a POST to a path ``routes`` takes,
        of a valid length (else it is routed at once, to its error)."""
        assert client.head is not None
        words = client.head.split(b"\n", 1)[0].split()
        if self.routes is None or len(words) != 3 or words[0] != b"POST" or \
                words[1].split(b"?", 1)[0].decode("latin-1") not in self.routes.post_paths:
            return False
        lengths = re.findall(rb"\ncontent-length:[ \t]*(\S*)", client.head.lower())
        if len(lengths) == 1 and lengths[0].isdigit() and int(lengths[0]) <= MAX_BODY:
            client.length = int(lengths[0])
            return True
        client.length = -1  # refused in _route
        client.refusal = HTTPStatus.LENGTH_REQUIRED if not lengths else \
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE if len(lengths) == 1 and lengths[0].isdigit() \
            else HTTPStatus.BAD_REQUEST
        return False

    def _route(self, client: _Client, request: bytes, body: bytes) -> None:
        words = request.split(b"\n", 1)[0].split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/"):
            self._reply(client, error(HTTPStatus.BAD_REQUEST))
            return
        path = words[1].split(b"?", 1)[0]
        secret = self.routes is not None and any(
            path.startswith(p.encode()) for p in self.routes.secret_paths)
        log.debug("http %s: %r", client.peer, b" ".join(
            [words[0], path[:path.rindex(b"/") + 1] + b"..." if secret else words[1]]))
        posted = self.routes.post_paths if self.routes is not None else ()
        if words[0] == b"POST" and path.decode("latin-1") in posted:
            if client.length < 0:
                self._reply(client, error(client.refusal))
            else:
                self._act(client, path.decode("latin-1"), body)
            return
        if words[0] != b"GET" or path.decode("latin-1") in posted:
            allow = "POST" if path.decode("latin-1") in posted else "GET"
            self._reply(client, error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": allow}))
            return
        answer = self.routes.get(path.decode("latin-1")) if self.routes is not None else None
        if answer is not None:
            status, content, kind = answer
            self._reply(client, response(status, content, kind))
        elif path in (b"/", b"/index.html"):
            self._reply(client, response(HTTPStatus.OK, PAGE, "text/html; charset=utf-8"))
        elif path == b"/snapshot.jpg":
            client.state, client.deadline = client.WAIT, time.monotonic() + SNAPSHOT_WAIT
            self._snapshot(client)
        elif path == b"/stream.mjpg":
            client.state = client.STREAM
            self._queue(client, STREAM_HEAD)
            self._pump(client)
        else:
            self._reply(client, error(HTTPStatus.NOT_FOUND))

    def _act(self, client: _Client, path: str, body: bytes) -> None:
        """Runs the POST on the worker thread; the client waits (ACT) for its reply."""
        assert self.routes is not None
        if self._actions is None:
            self._actions = ThreadPoolExecutor(1, thread_name_prefix="http-actions")
        try:
            local = str(client.sock.getsockname()[0])
        except OSError:
            local = ""
        client.state, client.deadline = client.ACT, time.monotonic() + self.limits.send_timeout
        client.action = self._actions.submit(self.routes.post, path, body, local)
        client.action.add_done_callback(lambda _: self._wake())

    def _acted(self, client: _Client) -> None:
        """Replies to a client whose action is done."""
        assert client.action is not None
        try:
            status, content, kind = client.action.result()
        except Exception:
            log.exception("http %s: the action failed", client.peer)
            status, content, kind = (HTTPStatus.INTERNAL_SERVER_ERROR, b"the action failed\n",
                                     "text/plain; charset=utf-8")
        self._reply(client, response(status, content, kind))

    def _on_wake(self) -> None:
        """A new frame, or an action done."""
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            self._woken = False
        for client in list(self._clients):
            if client.state == client.ACT and client.action is not None and \
                    client.action.done():
                self._acted(client)
            elif client.state == client.WAIT:
                self._snapshot(client)
            elif client.state == client.STREAM and not client.out:
                self._pump(client)

    def _latest(self) -> Tuple[int, bytes]:
        """The newest frame's sequence number and JPEG (encoded once, b"" before any)."""
        with self._lock:
            frame, seq = self._frame, self._seq
        if frame is not None and seq != self._jpeg_seq:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            self._jpeg_seq, self._jpeg = seq, buf.tobytes() if ok else b""
        return self._jpeg_seq, self._jpeg

    def _snapshot(self, client: _Client) -> None:
        _, jpeg = self._latest()
        if jpeg:
            self._reply(client, response(HTTPStatus.OK, jpeg, "image/jpeg"))

    def _reply(self, client: _Client, data: bytes) -> None:
        """Sends ``data`` and closes the connection."""
        client.state = client.REPLY
        self._queue(client, data)
        self._pump(client)

    def _queue(self, client: _Client, data: bytes) -> None:
        """``data`` to send next (nothing is left to send), due within the send timeout."""
        client.out = memoryview(data)
        client.deadline = time.monotonic() + self.limits.send_timeout

    def _pump(self, client: _Client) -> None:
        """Sends what the client takes now; a stream then gets the newest frame it lacks."""
        while True:
            if not client.out and client.state == client.STREAM:
                seq, jpeg = self._latest()
                if seq <= client.seq or not jpeg:
                    break
                client.seq = seq
                self._queue(client, f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg + b"\r\n")
            if not client.out:
                break
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                break
            except OSError:
                self._drop(client)
                return
            client.out = client.out[sent:]
        if client.out:
            self._watch(client, WRITE if client.state == client.REPLY else READ | WRITE)
        elif client.state == client.REPLY:
            self._drop(client)
        else:
            client.deadline = math.inf
            self._watch(client, READ)

    def _watch(self, client: _Client, events: int) -> None:
        if events != client.events:
            self._selector.modify(client.sock, events, client)
            client.events = events

    def _drop(self, client: _Client, abort: bool = False) -> None:
        """Closes the connection; ``abort``: at once, unsent data and all (a reset)."""
        self._clients.discard(client)
        self._selector.unregister(client.sock)
        if abort:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()

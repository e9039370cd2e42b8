"""The kiosk's page in headless Chromium on a touch screen: a tap on the stream opens the
style picker, its thumbnails are each style rendered from the live frame, and a tap on one
switches the kiosk's style (the same ``Kiosk.set_style`` as the MQTT ``style/set``). A
real kiosk (KioskService) on a looping clip, served by its http:// output."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error

import cv2
import numpy as np
import pytest
from kiosk_web import PATIENCE, Running, eventually, open_page, swipe_to, tap

from conftest import BUNDLED_STYLES


@pytest.fixture
def kiosk(still_clip):
    running = Running(still_clip, {})
    yield running
    running.stop()


def test_the_page_is_self_contained_and_keeps_the_stream_where_it_was(kiosk):
    page = kiosk.get("/").read().decode()
    assert '<img id="stream" src="stream.mjpg"' in page
    for url in re.findall(r'(?:src|href)="([^"]*)"', page) + re.findall(r"fetch\('([^']*)'",
                                                                       page):
        assert "//" not in url and not url.startswith("/"), url  # nothing from elsewhere
    assert "@import" not in page and "<link" not in page and ":hover" not in page
    for style in BUNDLED_STYLES:
        assert f'data-style="{style}"' in page
    assert 'id="snap"' not in page  # kiosk.snapshots is off
    stream = kiosk.get("/stream.mjpg")
    assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
    stream.close()
    assert json.loads(kiosk.get("/state").read()) == {
        "style": "mosaic", "styles": BUNDLED_STYLES, "snapshots": False}


def test_unknown_styles_and_bad_forms_get_400_with_a_clear_message(kiosk):
    unknown = f"unknown style 'cubism' (available: {', '.join(BUNDLED_STYLES)})"
    for body, expected in ((b"style=cubism", unknown),
                           (b"", "needs one form field style"),
                           (b"style=a&style=b", "needs one form field style"),
                           (b"\xff\xfe", "needs one form field style")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            kiosk.post("/style", body)
        assert caught.value.code == 400
        assert expected in json.loads(caught.value.read())["error"], body
    with pytest.raises(urllib.error.HTTPError) as caught:
        kiosk.get("/style")
    assert caught.value.code == 405 and caught.value.headers["Allow"] == "POST"
    with pytest.raises(urllib.error.HTTPError) as caught:
        kiosk.post("/snapshot", b"")
    assert caught.value.code == 404  # snapshots are off
    with pytest.raises(urllib.error.HTTPError) as caught:
        kiosk.get("/thumbs/cubism.jpg")
    assert caught.value.code == 404
    assert kiosk.service.kiosk.stylizer.style == "mosaic"
    assert json.loads(kiosk.post("/style", b"style=halftone").read()) == {"style": "halftone"}
    assert kiosk.service.kiosk.stylizer.style == "halftone"


def test_tapping_a_thumbnail_switches_the_kiosks_style(kiosk, tmp_path):
    seen = []
    kiosk.service.kiosk.listeners.append(seen.append)
    browser = open_page(kiosk, tmp_path)
    try:
        assert not browser.evaluate(
            "document.getElementById('picker').classList.contains('open')")
        tap(browser, "#stream")
        assert eventually(lambda: browser.evaluate(
            "document.getElementById('picker').classList.contains('open')"))
        # Every thumbnail comes: 160 px wide, each a different style of the same live frame.
        sizes = """Array.from(document.querySelectorAll('button.style img')).map(
            i => [i.closest('button').dataset.style, i.naturalWidth, i.naturalHeight])"""
        assert eventually(lambda: all(w == 160 for _, w, _ in browser.evaluate(sizes))), \
            browser.evaluate(sizes)
        thumbs = {name: _decode(kiosk.get(f"/thumbs/{name}.jpg").read())
                  for name in BUNDLED_STYLES}
        assert all(t.shape[1] == 160 for t in thumbs.values())
        for a, b in (("halftone", "mosaic"), ("mosaic", "starry_night"),
                     ("halftone", "starry_night")):
            assert np.abs(thumbs[a] - thumbs[b]).mean() > 10, (a, b)
        # The current style is marked; a tap on another switches the kiosk to it.
        current = ("Array.from(document.querySelectorAll('button.current'))"
                   ".map(b => b.dataset.style)")
        assert eventually(lambda: browser.evaluate(current) == ["mosaic"])
        # Eight styles do not fit across 800 px: the row scrolls sideways under a finger.
        assert browser.evaluate("""document.querySelector('button.style[data-style='
            + '"starry_night"]').getBoundingClientRect().right""") > 800
        swipe_to(browser, 'button.style[data-style="starry_night"]')
        tap(browser, 'button.style[data-style="starry_night"]')
        assert eventually(lambda: kiosk.service.kiosk.stylizer.style == "starry_night")
        assert seen == ["starry_night"]  # through Kiosk.set_style, as style/set
        assert eventually(lambda: browser.evaluate(current) == ["starry_night"])
        assert eventually(lambda: "starry_night" in browser.evaluate(
            "document.getElementById('status').textContent"))
        frames = kiosk.service.kiosk.frames
        assert eventually(lambda: kiosk.service.kiosk.frames > frames + 2)
        shown = _decode(kiosk.get("/snapshot.jpg").read())
        assert np.abs(shown - cv2.resize(thumbs["starry_night"], shown.shape[1::-1])).mean() < \
            np.abs(shown - cv2.resize(thumbs["halftone"], shown.shape[1::-1])).mean()
        swipe_to(browser, 'button.style[data-style="halftone"]')
        tap(browser, 'button.style[data-style="halftone"]')
        assert eventually(lambda: kiosk.service.kiosk.stylizer.style == "halftone")
        tap(browser, "#stream")  # closes the picker
        assert eventually(lambda: not browser.evaluate(
            "document.getElementById('picker').classList.contains('open')"))
    finally:
        browser.close()


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.float32)


def _exchange(port: int, data: bytes, pause: float = 0.0, pieces: int = 1) -> bytes:
    """Sends ``data`` in ``pieces`` with ``pause`` seconds between them; what comes back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    step = max(1, -(-len(data) // pieces))
    try:
        for i in range(0, len(data), step):
            try:
                sock.sendall(data[i:i + step])
            except OSError:  # closed meanwhile: its reply is read below
                break
            time.sleep(pause)
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
        return reply
    finally:
        sock.close()


def test_posts_keep_the_servers_limits(kiosk):
    port, form = kiosk.port, b"style=starry_night"
    head = b"POST /style HTTP/1.1\r\nHost: kiosk\r\nContent-Length: %d\r\n\r\n"
    assert _exchange(port, head % len(form) + form, pause=0.2, pieces=4) \
        .startswith(b"HTTP/1.0 200")  # a body in pieces, within the header timeout
    assert kiosk.service.kiosk.stylizer.style == "starry_night"
    # a body that never comes whole: closed at kiosk.http_header_timeout
    assert _exchange(port, head % 100 + b"style=").startswith(b"HTTP/1.0 408")
    assert _exchange(port, head % 5000 + b"x" * 5000).startswith(b"HTTP/1.0 413")
    assert _exchange(port, b"POST /style HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 411")
    assert _exchange(port, b"POST /style HTTP/1.1\r\nContent-Length: x\r\n\r\n") \
        .startswith(b"HTTP/1.0 400")
    assert _exchange(port, b"PUT /style HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405")
    assert kiosk.service.kiosk.stylizer.style == "starry_night"
    assert kiosk.get("/snapshot.jpg").status == 200  # the server goes on

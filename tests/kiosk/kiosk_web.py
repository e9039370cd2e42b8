"""Helpers of the kiosk's web page tests: a real kiosk (KioskService) on a thread serving
its http:// output, and headless Chromium on its page, tapped like a touch screen."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

from conftest import configure
from jetkiosk.edge.core.config import Config
from jetkiosk.edge.kiosk.app import KioskService
from mosquitto import free_port
from screens import Chromium

PATIENCE = 60.0  # seconds before a wait gives up (never a pass criterion)


def eventually(check, timeout: float = PATIENCE):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(0.2)


class Running:
    """A KioskService on a thread, serving http://127.0.0.1:<port>/."""

    def __init__(self, clip, values: dict):
        self.port = free_port()
        config = configure(Config(), {
            "kiosk.source": f"file://{clip}?loop=1", "kiosk.output": f"http://127.0.0.1:{self.port}/",
            "kiosk.style": "mosaic", "kiosk.width": 320, **values})
        self.service = KioskService(config)
        self.thread = threading.Thread(target=self.service.run, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.port}"
        assert eventually(lambda: self.service.kiosk.frames > 0), "no frame shown"

    def get(self, path: str):
        return urllib.request.urlopen(self.base + path, timeout=10)

    def post(self, path: str, body: bytes):
        return urllib.request.urlopen(urllib.request.Request(self.base + path, data=body),
                                      timeout=10)

    def stop(self) -> None:
        self.service.shutdown()
        self.thread.join(30)
        assert not self.thread.is_alive()


def tap(browser: Chromium, selector: str) -> None:
    """A finger's tap at the middle of the element (touch events, as a touch screen sends)."""
    box = browser.evaluate(f"""(() => {{
        const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
        return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; }})()""")
    x, y, width, height = box
    assert width >= 88 and height >= 88 or selector == "#stream", (selector, box)  # a finger's
    for kind in ("touchStart", "touchEnd"):
        points = [{"x": x, "y": y}] if kind == "touchStart" else []
        browser.call("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})


def swipe_to(browser: Chromium, selector: str) -> None:
    """Drag the picker's row sideways with a finger (touch events) until the element is
    wholly on screen."""
    def overhang() -> float:
        return browser.evaluate(f"""(() => {{
            const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
            return r.right > innerWidth ? r.right - innerWidth : Math.min(0, r.left); }})()""")
    x, y = browser.evaluate("""(() => { const r = document.getElementById('row')
        .getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()""")
    for _ in range(4):
        distance = overhang()
        if distance == 0:
            return
        step = -max(-300.0, min(300.0, distance + (24 if distance > 0 else -24))) / 10
        browser.call("Input.dispatchTouchEvent", {"type": "touchStart",
                                                  "touchPoints": [{"x": x, "y": y}]})
        for i in range(1, 11):
            browser.call("Input.dispatchTouchEvent", {"type": "touchMove",
                                                      "touchPoints": [{"x": x + step * i, "y": y}]})
            time.sleep(0.02)
        browser.call("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        time.sleep(0.3)
    assert overhang() == 0, f"{selector} stays off screen"


def open_page(kiosk: Running, tmp_path) -> Chromium:
    browser = Chromium(kiosk.base + "/", tmp_path / "profile")
    browser.call("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    browser.viewport(800, 480)
    browser.call("Page.reload")
    assert eventually(lambda: _ready(browser)), "the page's stream never showed a frame"
    return browser


def _ready(browser: Chromium) -> bool:
    try:
        return bool(browser.evaluate(
            "document.readyState === 'complete' && "
            "document.getElementById('stream').naturalWidth > 0"))
    except RuntimeError:  # the page's JavaScript context is not up yet
        return False

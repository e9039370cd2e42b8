"""Real screens for the kiosk tests: an Xvfb display and headless Chromium driven over the
DevTools protocol (Debian's packages, installed by `make install`)."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import numpy as np
import websocket
from PIL import Image, ImageGrab


class Xvfb:
    """An X server in memory on a free display number, picked at random from a high range:
    test sessions run side by side, and a server started on the number another one is just
    leaving can lose its socket to that one's exit (clients then cannot connect to it)."""

    def __init__(self, width: int = 640, height: int = 360, tries: int = 20):
        binary = shutil.which("Xvfb")
        if binary is None:
            raise RuntimeError("Xvfb is not installed (apt-get install xvfb; `make install`)")
        for _ in range(tries):
            number = random.randint(100, 30000)
            read, write = os.pipe()
            self.process = subprocess.Popen(
                [binary, f":{number}", "-displayfd", str(write), "-screen", "0",
                 f"{width}x{height}x24", "-nolisten", "tcp"], pass_fds=(write,),
                stderr=subprocess.DEVNULL)
            os.close(write)
            with os.fdopen(read) as pipe:  # the number once it serves; nothing if it exits
                ready = pipe.readline().strip()
            if ready:
                self.display = f":{ready}"
                return
            self.process.wait(10)  # that number is taken: another
        raise RuntimeError("Xvfb did not start")

    def screenshot(self) -> np.ndarray:
        return np.asarray(ImageGrab.grab(xdisplay=self.display).convert("RGB"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


class Chromium:
    """Headless Chromium on one page; ``evaluate`` runs JavaScript in it."""

    def __init__(self, url: str, profile: Path):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "--window-size=640,360", url],
            # Its singleton socket goes in $TMPDIR, and a socket path over 107 bytes kills it.
            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": "/tmp"})
        port = self._devtools_port()
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json",
                                                    timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=20)
        self._id = 0

    def _devtools_port(self) -> int:
        deadline = time.monotonic() + 30
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                # keep reading its log, or a long run fills the pipe and Chromium blocks on it
                threading.Thread(target=self.process.stderr.read, daemon=True).start()
                return int(match.group(1))
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError("Chromium did not start its DevTools server")

    def call(self, method: str, params: Optional[dict] = None) -> Any:
        """One DevTools command on the page; its result (events in between are skipped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools refused: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Optional[Any]:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def viewport(self, width: int, height: int) -> None:
        """Make the page's viewport ``width`` x ``height`` CSS pixels, one device pixel each
        (headless Chromium's --window-size leaves the page less than the size given)."""
        self.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def screenshot(self) -> np.ndarray:
        """What the page shows now, as the browser renders it (RGB, the viewport's size)."""
        png = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(10)

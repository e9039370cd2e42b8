"""Real screens for the kiosk tests: an Xvfb display and headless Chromium driven over the
DevTools protocol (Debian's packages, installed by `make install`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import numpy as np
import websocket
from PIL import ImageGrab


class Xvfb:
    """An X server in memory on the first free display number."""

    def __init__(self, width: int = 640, height: int = 360):
        binary = shutil.which("Xvfb")
        if binary is None:
            raise RuntimeError("Xvfb is not installed (apt-get install xvfb; `make install`)")
        read, write = os.pipe()
        self.process = subprocess.Popen(
            [binary, "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24",
             "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"

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
            stderr=subprocess.PIPE, text=True)
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
                return int(match.group(1))
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError("Chromium did not start its DevTools server")

    def evaluate(self, expression: str) -> Optional[Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "returnByValue": True,
                                            "awaitPromise": True}}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools refused: {reply['error']}")
                result = reply["result"]
                if "exceptionDetails" in result:
                    raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
                return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(10)

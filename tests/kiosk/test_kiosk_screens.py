"""The kiosk on real screens: a full-screen OpenCV window under Xvfb, and the MJPEG page
in headless Chromium. Both show a static scene while the style rotates, so a change in
what is on screen is the style changing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mosquitto import free_port
from screens import Chromium, Xvfb

# Mean absolute difference (0..255) between two views: the same style on the static scene
# stays below SAME, a new style is above CHANGED.
SAME, CHANGED = 6.0, 20.0


def start_kiosk(clip, output, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jetkiosk.edge.cli.main", "kiosk", "--source", f"file://{clip}?loop=1",
         "--output", output, "--style", "starry_night", "--set", "kiosk.rotate_every=2.5",
         "--set", "kiosk.width=320"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


def views(grab, seconds: float, every: float = 0.25):
    """Every view that is not None for ``seconds``."""
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = grab()
        if view is not None:
            seen.append(np.asarray(view, np.float32))
        time.sleep(every)
    return seen


def check_views(seen):
    while seen and seen[0].std() < 1.0:  # before the first frame is up
        seen = seen[1:]
    assert len(seen) >= 10, len(seen)
    assert all(v.std() > 8 for v in seen), [round(float(v.std())) for v in seen]  # not blank
    steps = [float(np.abs(a - b).mean()) for a, b in zip(seen, seen[1:])]
    assert min(steps) < SAME, steps  # steady while the style stays
    assert max(steps) > CHANGED, steps  # changed with the style
    assert sum(s > CHANGED for s in steps) >= 2, steps  # and again at the next rotation


@pytest.fixture
def xvfb():
    server = Xvfb(640, 360)
    yield server
    server.stop()


def test_window_under_xvfb_shows_the_stylized_feed_and_changes_with_the_style(xvfb, still_clip):
    blank = xvfb.screenshot()
    assert blank.std() < 1.0
    kiosk = start_kiosk(still_clip, "display://0", dict(os.environ, DISPLAY=xvfb.display))
    try:
        seen = views(lambda: xvfb.screenshot() if kiosk.poll() is None else None, 9.0)
    finally:
        err = stop(kiosk)
    assert kiosk.returncode in (0, -15), err
    check_views(seen)


def test_mjpeg_page_in_headless_chromium_shows_frames_that_change(still_clip, tmp_path):
    port = free_port()
    kiosk = start_kiosk(still_clip, f"http://127.0.0.1:{port}/")
    browser = None
    try:
        deadline = time.monotonic() + 30
        while browser is None:
            try:
                browser = Chromium(f"http://127.0.0.1:{port}/", tmp_path / "profile")
            except (ConnectionError, OSError):
                if time.monotonic() > deadline or kiosk.poll() is not None:
                    raise
                time.sleep(0.5)
        sample = """(() => {
          const img = document.getElementById('stream');
          if (!img || !img.naturalWidth) return null;
          const c = document.createElement('canvas'); c.width = 80; c.height = 45;
          const g = c.getContext('2d'); g.drawImage(img, 0, 0, 80, 45);
          return {w: img.naturalWidth, h: img.naturalHeight,
                  px: Array.from(g.getImageData(0, 0, 80, 45).data)};
        })()"""
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            try:
                first = browser.evaluate(sample)
            except RuntimeError:  # the page's JavaScript context is not up yet
                pass
            time.sleep(0.2)
        assert first is not None, "the page's image never loaded"
        assert (first["w"], first["h"]) == (320, 180)
        seen = views(lambda: _pixels(browser.evaluate(sample)), 9.0)
        check_views(seen)
    finally:
        if browser is not None:
            browser.close()
        err = stop(kiosk)
    assert kiosk.returncode in (0, -15), err


def _pixels(value):
    if value is None:
        return None
    return np.array(value["px"], np.float32).reshape(45, 80, 4)[..., :3]

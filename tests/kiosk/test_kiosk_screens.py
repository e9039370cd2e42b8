"""The kiosk on real screens: a full-screen OpenCV window under Xvfb, and the MJPEG page
in headless Chromium. Both show a static scene while the style rotates, so a change in
what is on screen is the style changing.

With ``--faces`` on the demo clip, the screens show each track's box in its decision's
colour around the face, and the greeting band while a known person is in view; the same
checks on a kiosk without ``--faces`` find neither (so they can fail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import cv2
import numpy as np
import pytest

from conftest import configure, enroll_demo_people
from jetkiosk.edge.kiosk.overlay import COLOURS
from mosquitto import free_port
from screens import Chromium, Xvfb

# Mean absolute difference (0..255) between two views: the same style on the static scene
# stays below SAME, a new style is above CHANGED.
SAME, CHANGED = 6.0, 20.0


def start_kiosk(clip, output, env=None, extra=("--set", "kiosk.rotate_every=2.5")
                ) -> subprocess.Popen:
    """The kiosk on ``clip`` played in a loop at its own rate; its output and log go to
    temporary files (a pipe nobody reads fills up on a long run and stalls it)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        [sys.executable, "-m", "jetkiosk.edge.cli.main", "kiosk", "--source", f"file://{clip}?loop=1",
         "--output", output, "--style", "starry_night", "--set", "kiosk.width=320", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    process.log = log  # type: ignore[attr-defined]
    return process


def stop(process: subprocess.Popen) -> str:
    """Stop the kiosk; its log."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log = process.log  # type: ignore[attr-defined]
    log.seek(0)
    text = log.read().decode(errors="replace")
    log.close()
    return text


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
    # Full screen with no window manager (a kiosk started with bare xinit): the window
    # covers the whole screen, not OpenCV's default 400x300 in a corner.
    lit = seen[-1].max(axis=-1) > 0
    rows, cols = np.nonzero(lit.any(axis=1))[0], np.nonzero(lit.any(axis=0))[0]
    assert (cols[0], rows[0]) == (0, 0) and cols[-1] + 1 == lit.shape[1] \
        and rows[-1] + 1 == lit.shape[0], (cols[[0, -1]], rows[[0, -1]])


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


# --- The face path on the screen ------------------------------------------------------------
# What a screenshot shows is found by its shape, never by exact pixels: a box is a rectangle
# outline of pixels near its decision's colour (COLOURS) with the face inside it left as it
# was; the greeting is a dark neutral band centred near the bottom with white text in it.

# The size of the frames the kiosk draws on (kiosk.display_width), of the Xvfb screen and of
# the page's viewport. Where the frame is on a screenshot is found (frame_shown): on an X
# server without a window manager the "full screen" OpenCV window stays 400 x 300 at the
# top left corner, the frame scaled into it.
SHOWN = (640, 360)
KNOWN, STRANGER = ("eileen_collins", "grace_hopper"), "stranger"


def near_colour(image: np.ndarray, colour, tolerance: int) -> np.ndarray:
    return np.abs(image.astype(np.int16) - np.array(colour, np.int16)).max(axis=-1) <= tolerance


def _outline(part: np.ndarray):
    """The rectangle ``part`` (one connected blob of a colour mask) outlines, as x1, y1, x2,
    y2 inside it, or None: two straight sides with little of the colour between them, joined
    by a full top and bottom edge (the label's tag may sit on either, filled)."""
    rows = part.mean(axis=1)
    sparse = rows <= 0.35
    best, start = (0, 0), None
    for y, is_sparse in enumerate(list(sparse) + [False]):
        if is_sparse and start is None:
            start = y
        elif not is_sparse and start is not None:
            best = max(best, (y - start, start))
            start = None
    height, top = best
    if height < 8 or top == 0 or top + height >= part.shape[0]:
        return None
    side = part[top:top + height]
    filled = side.any(axis=1)
    if filled.mean() < 0.9:
        return None
    lefts = np.argmax(side, axis=1)[filled]
    rights = side.shape[1] - 1 - np.argmax(side[:, ::-1], axis=1)[filled]
    x1, x2 = int(np.median(lefts)), int(np.median(rights))
    if x2 - x1 < 12:
        return None
    if (np.abs(lefts - x1) <= 2).mean() < 0.8 or (np.abs(rights - x2) <= 2).mean() < 0.8:
        return None  # not straight sides
    if side[:, x1 + 4:x2 - 3].mean() > 0.1:
        return None  # a blob, not an outline: the face inside stays visible
    above = part[max(0, top - 4):top, x1:x2 + 1].mean(axis=1)
    below = part[top + height:top + height + 4, x1:x2 + 1].mean(axis=1)
    if above.max(initial=0) < 0.8 or below.max(initial=0) < 0.8:
        return None
    return x1, top - 1, x2, top + height


def outlined_boxes(image: np.ndarray, colour, tolerance: int, min_side: int = 16):
    """Every rectangle outlined in ``colour`` on ``image`` (BGR): (x1, y1, x2, y2)."""
    mask = near_colour(image, colour, tolerance)
    joined = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))  # antialiased gaps
    count, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    boxes = []
    for i in range(1, count):
        x, y, w, h, _ = stats[i]
        if w < min_side or h < min_side:
            continue
        box = _outline((labels[y:y + h, x:x + w] == i) & mask[y:y + h, x:x + w])
        if box is not None:
            boxes.append((x + box[0], y + box[1], x + box[2], y + box[3]))
    return boxes


def greeting_band(image: np.ndarray, spread: int):
    """The greeting's band on ``image`` (BGR, the frame shown) as x1, y1, x2, y2, or None:
    rows in the lower half whose neutral run through the centre is long, centred, clear of
    the sides and the same from row to row, dark for the most part, with white text pixels
    in it. ``spread``: how far from grey a neutral pixel's channels may be (JPEG noise)."""
    height, width = image.shape[:2]
    pixels = image.astype(np.int16)
    neutral = pixels.max(axis=-1) - pixels.min(axis=-1) <= spread
    centre = width // 2
    runs = {}
    for y in range(height // 2, height):
        row = neutral[y]
        if not row[centre] or row[0] or row[-1]:
            continue
        left = centre - int(np.argmin(row[centre::-1]))
        right = centre + int(np.argmin(row[centre:]))
        if right - left >= 0.15 * width and abs((left + right) / 2 - centre) <= 0.03 * width:
            runs[y] = (left + 1, right - 1)
    blocks, block = [], []
    for y in range(height // 2, height + 1):
        if y in runs:
            block.append(y)
        elif block:
            blocks.append(block)
            block = []
    for block in blocks:
        if not 0.04 * height <= len(block) <= 0.25 * height:
            continue
        lefts = np.array([runs[y][0] for y in block])
        rights = np.array([runs[y][1] for y in block])
        x1, x2 = int(np.median(lefts)), int(np.median(rights))
        slack = max(3, 0.015 * width)  # a neutral background may touch an end in places
        if (np.abs(lefts - x1) <= slack).mean() < 0.7 or \
                (np.abs(rights - x2) <= slack).mean() < 0.7:
            continue  # a band has straight ends
        y1, y2 = block[0], block[-1]
        inside = pixels[y1:y2 + 1, x1:x2 + 1]
        dark = (inside.max(axis=-1) <= 60).mean()
        white = inside.min(axis=-1) >= 190
        if dark >= 0.5 and 30 <= white.sum() <= 0.4 * white.size and y2 >= 0.75 * height:
            return x1, y1, x2, y2
    return None


def frame_shown(screenshot: np.ndarray, whole: bool):
    """The part of a screenshot the kiosk's frame fills, or None before a frame is up: the
    frame at its aspect ratio, centred in its container (OpenCV's keep-ratio window, the
    page's ``object-fit: contain``). ``whole``: the container is the whole screenshot (the
    page), else it is the window, all that is not the X server's black root window."""
    height, width = screenshot.shape[:2]
    x0, y0, x1, y1 = 0, 0, width, height
    if not whole:
        lit = screenshot.max(axis=-1) > 0
        rows, cols = np.nonzero(lit.any(axis=1))[0], np.nonzero(lit.any(axis=0))[0]
        if len(rows) < 20 or len(cols) < 20:
            return None
        x0, y0, x1, y1 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
    scale = min((x1 - x0) / SHOWN[0], (y1 - y0) / SHOWN[1])
    w, h = round(SHOWN[0] * scale), round(SHOWN[1] * scale)
    x, y = x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2
    frame = screenshot[y:y + h, x:x + w]
    return frame if frame.std() >= 8 else None


def iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


@pytest.fixture(scope="session")
def demo_faces(analyzer, demo_clip):
    return faces_in_clip(analyzer, *demo_clip)


def faces_in_clip(analyzer, path, photos):
    """Where each face is in the clip, found by the face models on every other frame and
    named by the nearest of ``photos``: {name: [box in SHOWN pixels]}."""
    named = {name: analyzer.analyze(photo)[0].encoding for name, photo in photos.items()}
    found = {name: [] for name in named}
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        index += 1
        if index % 2:
            continue
        sx, sy = SHOWN[0] / frame.shape[1], SHOWN[1] / frame.shape[0]
        for face in analyzer.analyze(frame):
            if face.encoding is None:
                continue
            name = max(named, key=lambda n: float(np.dot(named[n], face.encoding)))
            x1, y1, x2, y2 = (float(v) for v in face.detection.box[:4])
            found[name].append((x1 * sx, y1 * sy, x2 * sx, y2 * sy))
    capture.release()
    assert all(found.values()), {name: len(boxes) for name, boxes in found.items()}
    return found


def clip_seconds(path) -> float:
    capture = cv2.VideoCapture(str(path))
    seconds = capture.get(cv2.CAP_PROP_FRAME_COUNT) / (capture.get(cv2.CAP_PROP_FPS) or 25)
    capture.release()
    return seconds


class Screen:
    """Where the kiosk shows its frames: ``window`` (a full-screen window on Xvfb) or
    ``mjpeg`` (its MJPEG page in headless Chromium); ``grab`` is what is on it (BGR)."""

    def __init__(self, kind: str, tmp_path):
        self.kind, self.tmp_path = kind, tmp_path
        self.xvfb = self.browser = None
        self.env = None
        if kind == "window":
            self.xvfb = Xvfb(*SHOWN)
            self.output, self.env = "display://0", dict(os.environ, DISPLAY=self.xvfb.display)
            self.tolerance, self.spread = 40, 25
        else:
            self.port = free_port()
            self.output = f"http://127.0.0.1:{self.port}/"
            self.tolerance, self.spread = 60, 30  # JPEG: 4:2:0 colours blur on thin lines

    def attach(self, kiosk: subprocess.Popen, seconds: float = 300) -> None:
        """Open the page once the kiosk serves it (after its models have loaded)."""
        if self.kind != "mjpeg":
            return
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(self.output, timeout=10) as page:
                    if page.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or kiosk.poll() is not None:
                    raise
                time.sleep(1.0)
        self.browser = Chromium(self.output, self.tmp_path / "profile")
        self.browser.viewport(*SHOWN)

    def describe(self) -> str:
        """The X server's windows (for a failure's message)."""
        if self.xvfb is None or shutil.which("xwininfo") is None:
            return ""
        tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", self.xvfb.display],
                              capture_output=True, text=True, check=False)
        return tree.stdout + tree.stderr

    def grab(self) -> np.ndarray:
        if self.xvfb is not None:
            return self.xvfb.screenshot()[..., ::-1]
        return self.browser.screenshot()[..., ::-1]

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.xvfb is not None:
            self.xvfb.stop()


@pytest.fixture(params=["window", "mjpeg"])
def screen(request, tmp_path):
    screen = Screen(request.param, tmp_path)
    yield screen
    screen.close()


class Seen:
    """What the screenshots of one run showed: per screenshot, the boxes of each colour and
    the greeting band; a few of them are kept as PNG files beside the test."""

    def __init__(self, screen: Screen, folder):
        self.screen, self.folder = screen, folder
        self.shots = []  # (green boxes, red boxes, band)
        self.blank = 0
        self.kept = {}  # screenshots kept, by what was found in them
        self.sizes = set()  # of the frame on the screen
        self.stuck = ""  # the screen's windows when no frame ever showed

    def look(self, screenshot: np.ndarray) -> None:
        frame = frame_shown(screenshot, whole=self.screen.xvfb is None)
        if frame is None:  # nothing shown yet
            self.blank += 1
            return
        tol, scale = self.screen.tolerance, frame.shape[1] / SHOWN[0]
        green, red = (outlined_boxes(frame, COLOURS[decision], tol, round(16 * scale))
                      for decision in ("match", "unknown"))
        band = greeting_band(frame, self.screen.spread)
        # in the kiosk's frame coordinates (SHOWN), whatever size the screen shows it at
        shot = ([tuple(v / scale for v in box) for box in green],
                [tuple(v / scale for v in box) for box in red],
                None if band is None else tuple(v / scale for v in band))
        found = tuple(bool(part) for part in shot)
        if len(self.shots) % 10 == 0 or any(found) and self.kept.get(found, 0) < 3:
            self.kept[found] = self.kept.get(found, 0) + 1
            cv2.imwrite(str(self.folder / f"shot{len(self.shots):03d}.png"), screenshot)
        self.shots.append(shot)
        self.sizes.add(frame.shape[:2])

    def count(self, test) -> int:
        return sum(1 for shot in self.shots if test(*shot))


def watch(kiosk: subprocess.Popen, screen: Screen, seen: Seen, done, seconds: float,
          at_least: int = 0, every: float = 0.3) -> None:
    """Screenshots until ``done()``, the kiosk exits or ``seconds`` (from the first frame
    shown) pass, and ``at_least`` frames were seen: on a busy machine the models load and
    the face path runs slowly, so the limit only bounds a failing run."""
    deadline = None
    while kiosk.poll() is None:
        seen.look(screen.grab())
        if seen.shots and deadline is None:
            deadline = time.monotonic() + seconds
        if deadline is not None and len(seen.shots) >= at_least and (
                time.monotonic() > deadline or done()):
            return
        if deadline is None and seen.blank * every > 300:
            seen.stuck = screen.describe()  # never shown anything: what the screen has
            return
        time.sleep(every)


def start_faces_kiosk(screen: Screen, clip, config, faces: bool, tmp_path):
    greeting = ["--set", "kiosk.greeting=" + config.kiosk.greeting,
                "--set", f"kiosk.greeting_seconds={config.kiosk.greeting_seconds}"]
    extra = ["--set", f"kiosk.display_width={SHOWN[0]}", "--models", str(config.models.dir),
             "--gallery", str(config.gallery_path), *greeting]
    if faces:
        # as tests/kiosk/test_kiosk_faces.py's demo_config: a looser IoU keeps Eileen one track
        # when the face path skips frames, and the face path at the display's priority keeps
        # its rate on a machine shared with other tests
        extra += ["--faces", "--set", "tracker.iou=0.05", "--set", "kiosk.faces_nice=0",
                  "--set", f"run.sink=jsonl:{tmp_path / 'events.jsonl'}"]
    kiosk = start_kiosk(clip, screen.output, screen.env, extra)
    screen.attach(kiosk)
    return kiosk


@pytest.fixture
def greeted_config(config, analyzer, demo_clip):
    """The demo's two people enrolled; a greeting of the test's own, up long enough to be
    seen between two screenshots on a slow machine."""
    enroll_demo_people(config, analyzer, demo_clip[1])
    return configure(config, {"kiosk.greeting": "Hello {name}!", "kiosk.greeting_seconds": 5.0})


def on_a_face(box, faces) -> bool:
    return any(iou(box, face) >= 0.3 for face in faces)


def test_faces_kiosk_screens_show_boxes_on_the_faces_and_the_greeting(
        screen, greeted_config, demo_clip, demo_faces, tmp_path):
    """`jetkiosk kiosk --faces` on the looping demo clip, on each screen: a green (match)
    box on Eileen or Grace, a red (unknown) box on the stranger, each around where the face
    models find that face in the clip, and the configured greeting's band while a known
    person's box is up. The face path takes the newest frame and skips the rest: each must
    show in a few of the screenshots taken throughout the run, not in any one."""
    known = [box for name in KNOWN for box in demo_faces[name]]
    stranger = demo_faces[STRANGER]

    def green_on_known(green, red, band):
        return any(on_a_face(box, known) for box in green)

    def red_on_stranger(green, red, band):
        return any(on_a_face(box, stranger) for box in red)

    def greeted(green, red, band):  # while a known person is in view
        return band is not None and green_on_known(green, red, band)

    seen = Seen(screen, tmp_path)
    kiosk = start_faces_kiosk(screen, demo_clip[0], greeted_config, True, tmp_path)
    try:
        # the clip loops: a few rounds of it give a slow face path its chances
        watch(kiosk, screen, seen, lambda: seen.count(green_on_known) >= 2
              and seen.count(red_on_stranger) >= 2 and seen.count(greeted) >= 1,
              seconds=10 * clip_seconds(demo_clip[0]))
    finally:
        err = stop(kiosk)
    assert kiosk.returncode in (0, -15), err
    report = (f"{len(seen.shots)} screenshots of frames {seen.sizes} in {tmp_path}: "
              f"{[(len(g), len(r), b is not None) for g, r, b in seen.shots]}\n{seen.stuck}"
              f"{err[-3000:]}")
    assert seen.count(green_on_known) >= 2, report
    assert seen.count(red_on_stranger) >= 2, report
    assert seen.count(greeted) >= 1, report
    # and no box of either colour anywhere but around a face of the clip
    for green, red, _ in seen.shots:
        assert all(on_a_face(box, known + stranger) for box in green + red), (green, red, report)


def test_kiosk_screens_without_faces_show_no_box_and_no_greeting(screen, greeted_config,
                                                                  demo_clip, tmp_path):
    """The control: the same kiosk, clip and screenshot checks without ``--faces`` find no
    box and no greeting band over a whole round of the clip (so the checks above can fail)."""
    seen = Seen(screen, tmp_path)
    kiosk = start_faces_kiosk(screen, demo_clip[0], greeted_config, False, tmp_path)
    try:  # one round of the clip and more: every scene, the same checks as with --faces
        watch(kiosk, screen, seen, lambda: False, seconds=clip_seconds(demo_clip[0]) + 3,
              at_least=20)
    finally:
        err = stop(kiosk)
    assert kiosk.returncode in (0, -15), err
    assert len(seen.shots) >= 20, (len(seen.shots), seen.blank, seen.stuck, err[-3000:])
    found = [(i, shot) for i, shot in enumerate(seen.shots) if any(shot)]
    assert not found, (found, tmp_path)

"""The kiosk's web page as a browser shows it: `jetkiosk kiosk` on the demo clip (style
starry_night, FPS overlay on, kiosk.width 640) served over http, a screenshot of its page
in headless Chromium (Debian's /usr/bin/chromium, a 1280x720 viewport) after a few seconds
of its stream, and two figures read off the kiosk's /snapshot.jpg (the frame the page
shows, 640x360), the medians of 5 fetched 1 s apart from the screenshot on (2 in --quick,
which waits 2 s instead of --settle):

* wall streakiness: on the clip's flat wall (a smooth horizontal grey gradient), mean
  |d/dx| / mean |d/dy| of the grey frame downscaled by 4 (INTER_AREA); about 1 for
  texture, far above 1 for vertical streaks. The wall measured is the bands above and
  below the photos (centred vertically, at most 470/720 of the height in every scene),
  10 px clear of them, less 8 px borders and the FPS text;
* the FPS text's smeared copy: of the dark pixels (grey < 25) within 8 px of the FPS text's
  white letter pixels (grey > 150), the percentage more than 2 px from them: near 0 for an
  outline under its letters, large for a dark second copy beside the text ("yes" above 15%).

``--python`` and ``--pythonpath`` pick the code the kiosk runs (the clip is made by this
process's jetkiosk): an older commit checked out as a git worktree in DIR runs with
``--pythonpath P``, P a folder holding a symlink ``jetkiosk`` -> DIR (the line
``# kiosk code:`` names the package the kiosk imported). The screenshot is saved to
``--out`` as a JPEG of ``--quality``, lowered in steps of 2 while larger than ``--max-kb``.

Usage: python bench/kiosk_page.py [--out page.jpg] [--snapshot frame.jpg] [--python PY]
       [--pythonpath P] [--settle 8] [--quality 80] [--max-kb 150] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from common import ROOT, machine, parse

sys.path.insert(0, str(ROOT / "tests"))  # the tests' free port and headless Chromium
from mosquitto import free_port
from screens import Chromium

STYLE = "starry_night"
VIEWPORT = (1280, 720)
BORDER = 8  # px of the snapshot left out at its edges
PHOTO_BAND = 470 / 720  # the clip's tallest photo, as a fraction of its height (centred)
MARGIN = 10  # px between the photos' band and the wall measured (the network's reach)
NEAR = 2  # px: an outline pixel this close to a white letter pixel is under the text
REACH = 8  # px: a drifted copy sits this close to the letters (the copy seen was 1-4 px off)


def get(url: str, timeout: float = 10) -> Optional[bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.read()
    except OSError:
        return None


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise RuntimeError(f"gave up waiting for {what}")


def streakiness(grey: np.ndarray) -> float:
    """Mean |d/dx| / mean |d/dy| on the wall, after downscaling by 4 (INTER_AREA)."""
    h, w = grey.shape
    band = (1 - PHOTO_BAND) / 2 * h - MARGIN * h / 360
    wall = np.zeros_like(grey, bool)
    wall[BORDER:int(band)] = True
    wall[h - int(band):h - BORDER] = True
    wall[:, :BORDER] = wall[:, w - BORDER:] = False
    x1, y1 = overlay_box(h)[2:]
    wall[:y1 + BORDER, :x1 + BORDER] = False  # the FPS text
    small = cv2.resize(grey, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    inside = cv2.resize(wall.astype(np.uint8), (w // 4, h // 4),
                        interpolation=cv2.INTER_AREA) == 1
    dx = np.abs(np.diff(small, axis=1))[inside[:, 1:] & inside[:, :-1]]
    dy = np.abs(np.diff(small, axis=0))[inside[1:] & inside[:-1]]
    return float(dx.mean() / max(float(dy.mean()), 1e-6))


def overlay_box(height: int) -> Tuple[int, int, int, int]:
    """x0, y0, x1, y1 around the FPS text as the kiosk draws it (room for a drifted copy)."""
    scale = max(0.5, height / 720)
    (width, tall), base = cv2.getTextSize(f"00.0 fps  {STYLE}", cv2.FONT_HERSHEY_SIMPLEX,
                                          scale, 1)
    y, pad = int(30 * scale), round(6 * scale)
    return 10 - pad, max(0, y - tall - pad), int(10 + width + 60 * scale), y + base + pad


def smear(grey: np.ndarray) -> Tuple[float, int]:
    """Of the dark pixels (grey < 25) within REACH px of the FPS text's white letter pixels
    (grey > 150), the fraction farther than NEAR px from them; and how many there are."""
    x0, y0, x1, y1 = overlay_box(grey.shape[0])
    region = grey[y0:y1, x0:x1]
    white = (region > 150).astype(np.uint8)
    near, reach = (cv2.dilate(white, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,
                                                                                2 * r + 1)))
                   for r in (NEAR, REACH))
    dark = (region < 25) & (reach > 0)  # the wall's own dark strokes farther off do not count
    count = int(dark.sum())
    return float((dark & (near == 0)).sum() / max(count, 1)), count


def jpeg(rgb: np.ndarray, quality: int, limit_kb: int) -> Tuple[bytes, int]:
    """The screenshot as a JPEG of ``quality``, or the highest below it under ``limit_kb``."""
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for q in range(quality, 9, -2):
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q,
                                            cv2.IMWRITE_JPEG_OPTIMIZE, 1])[1].tobytes()
        if len(data) <= limit_kb * 1000:
            break
    return data, q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the screenshot (JPEG); default: not kept")
    parser.add_argument("--snapshot", type=Path, help="keep /snapshot.jpg here too")
    parser.add_argument("--python", default=sys.executable, help="the kiosk's interpreter")
    parser.add_argument("--pythonpath", default="",
                        help="put before $PYTHONPATH for the kiosk (which jetkiosk it runs)")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds the page shows the stream before the screenshot")
    parser.add_argument("--quality", type=int, default=80, help="the screenshot's JPEG quality")
    parser.add_argument("--max-kb", type=int, default=150,
                        help="a lower quality where the screenshot would be larger")
    args = parse(parser, "a shorter settle (2 s)")
    settle = 2.0 if args.quick else args.settle

    from jetkiosk.edge.cli.demo import make_clip, sample_photos

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (args.pythonpath, os.environ.get("PYTHONPATH", "")) if p))
    with tempfile.TemporaryDirectory(prefix="kiosk-page-") as tmp:
        where = subprocess.run(
            [args.python, "-c", "import jetkiosk.edge.kiosk.loop as m; print(m.__file__)"],
            cwd=tmp, env=env, capture_output=True, text=True, check=True).stdout.strip()
        print(f"# kiosk page: demo clip, style {STYLE}, FPS overlay, width 640, headless "
              f"Chromium {VIEWPORT[0]}x{VIEWPORT[1]}; {machine()}")
        print(f"# kiosk code: {Path(where).parents[2]}")
        clip = Path(tmp) / "demo.mp4"
        make_clip(clip, sample_photos())
        shot, snapshots = shoot(args.python, env, clip, Path(tmp), settle, 2 if args.quick else 5)
    data, quality = jpeg(shot, args.quality, args.max_kb)
    if args.out:
        args.out.write_bytes(data)
    if args.snapshot:
        args.snapshot.write_bytes(snapshots[0])
    frames = [cv2.imdecode(np.frombuffer(s, np.uint8), cv2.IMREAD_GRAYSCALE) for s in snapshots]
    streaks = [streakiness(f) for f in frames]
    smears = [smear(f) for f in frames]
    fraction = float(np.median([f for f, _ in smears]))
    count = int(np.median([c for _, c in smears]))
    h, w = frames[0].shape
    print(f"screenshot {VIEWPORT[0]}x{VIEWPORT[1]} after {settle:.0f} s: JPEG quality "
          f"{quality}, {len(data) / 1000:.0f} KB{f' -> {args.out}' if args.out else ' (not kept)'}")
    print(f"{len(frames)} snapshots {w}x{h}, medians: wall streakiness (mean |d/dx| / mean "
          f"|d/dy|, 1/4 scale) {np.median(streaks):.2f} ({min(streaks):.2f}-{max(streaks):.2f})")
    print(f"FPS text: {100 * fraction:.1f}% of {count} dark pixels more than {NEAR} px from "
          f"a white letter pixel (smeared copy: {'yes' if fraction > 0.15 else 'no'})")


def shoot(python: str, env: dict, clip: Path, tmp: Path, settle: float, count: int
          ) -> Tuple[np.ndarray, List[bytes]]:
    """Runs the kiosk on ``clip``; the page's screenshot (RGB) after ``settle`` seconds of
    its stream, and ``count`` /snapshot.jpg fetched from then on, 1 s apart."""
    base = f"http://127.0.0.1:{free_port()}"
    with open(tmp / "kiosk.log", "w") as log:
        kiosk = subprocess.Popen(
            [python, "-m", "jetkiosk.edge.cli.main", "kiosk", "--source",
             f"file://{clip}?loop=1", "--output", f"{base}/", "--style", STYLE,
             "--set", "kiosk.fps_overlay=true"], cwd=tmp, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        browser = None
        try:
            wait_for(lambda: kiosk.poll() is not None or get(f"{base}/snapshot.jpg", 6),
                     120, "the kiosk's first frame")
            if kiosk.poll() is not None:
                raise RuntimeError(f"the kiosk exited: {(tmp / 'kiosk.log').read_text()}")
            browser = Chromium(f"{base}/", tmp / "profile")
            browser.viewport(*VIEWPORT)
            wait_for(lambda: browser.evaluate(
                "document.getElementById('stream') !== null && "
                "document.getElementById('stream').naturalWidth > 0"), 60, "the page's stream")
            time.sleep(settle)
            shot = browser.screenshot()
            snapshots: List[bytes] = []
            for i in range(count):
                time.sleep(i and 1.0)
                data = get(f"{base}/snapshot.jpg")
                if data is None:
                    raise RuntimeError("no /snapshot.jpg")
                snapshots.append(data)
        finally:
            if browser is not None:
                browser.close()
            kiosk.terminate()
            kiosk.wait(30)
    return shot, snapshots


if __name__ == "__main__":
    main()

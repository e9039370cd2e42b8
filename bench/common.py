"""Helpers shared by the benchmarks: models, the shared photos, timing."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Set, Tuple

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "faces"
MODELS = ROOT / "build" / "bench-models"
SIZE = (1280, 720)  # the crowd clips' frame size
# Where the runtime models are built, when set (tests/test_benches.py shares one folder).
MODELS_ENV = "JETKIOSK_BENCH_MODELS"


def models_dir() -> Path:
    """The runtime models, built once: in $JETKIOSK_BENCH_MODELS, else build/bench-models."""
    from jetkiosk.export.models.prepare import prepare

    path = Path(os.environ.get(MODELS_ENV) or MODELS)
    prepare(path, progress=lambda _: None)
    return path


def parse(parser: argparse.ArgumentParser, quick: str) -> argparse.Namespace:
    """The bench's arguments plus ``--quick`` (``quick`` says what it runs): a few inputs
    through the same code as the full run, in seconds, writing nothing into the checkout
    (models in a folder under the temp dir unless $JETKIOSK_BENCH_MODELS names one)."""
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {quick}, through the same code as the full run")
    args = parser.parse_args()
    if args.quick and not os.environ.get(MODELS_ENV):
        os.environ[MODELS_ENV] = str(Path(tempfile.gettempdir()) / "jetkiosk-bench-models")
    return args


def have_peer(module: str, label: str) -> bool:
    """Whether the peer ``module`` imports; if not, says so (``make install`` installs them)."""
    if importlib.util.find_spec(module) is not None:
        return True
    print(f"peer {label} not installed: skipped")
    return False


def analyzer(*overrides: str):
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.analyzer import FaceAnalyzer

    return FaceAnalyzer(load_config(overrides=[f"models.dir={models_dir()}", *overrides]))


def people() -> Tuple[Dict[str, List[Path]], Dict[Path, Set[str]]]:
    """Gallery photos per person, and each probe photo with the enrolled people in it."""
    base = SHARED / "people"
    gallery = {p.name: sorted(p.iterdir()) for p in sorted((base / "gallery").iterdir())}
    with open(base / "probes/labels.csv") as fh:
        probes = {base / "probes" / r["file"]: set(r["people"].split(";"))
                  for r in csv.DictReader(fh)}
    return gallery, probes


def median_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx")


def cpu() -> Tuple[str, List[str]]:
    """The CPU model and its flags, from /proc/cpuinfo."""
    from jetkiosk.edge.runtime.cpu_features import cpu_flags

    model = platform.processor() or "unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    model = next((value.strip() for key, _, value in (line.partition(":") for line in lines)
                  if key.strip() == "model name"), model)
    return model, sorted(cpu_flags())


def speed_flags(flags: List[str]) -> Dict[str, bool]:
    """Which of ``SPEED_FLAGS`` the CPU has (any ``amx_*`` counts as amx)."""
    return {f: any(x == f or (f == "amx" and x.startswith("amx")) for x in flags)
            for f in SPEED_FLAGS}


def face_recognition_fps(frames: List[np.ndarray]) -> float:
    """face_recognition 1.3.0 on BGR ``frames``: every face found and encoded, frames/s."""
    import face_recognition as fr

    start = time.perf_counter()
    for frame in frames:
        rgb = np.ascontiguousarray(frame[..., ::-1])
        fr.face_encodings(rgb, fr.face_locations(rgb))
    return len(frames) / (time.perf_counter() - start)


def machine() -> str:
    """CPU model, cores, architecture and the flags that decide speed (for bench headers)."""
    model, flags = cpu()
    present = [f for f, has in speed_flags(flags).items() if has]
    return (f"{model}, {os.cpu_count()} cores ({os.uname().machine}; "
            f"{' '.join(present) or 'no avx2/avx512/amx'})")


def collecting_sink():
    """A sink of the runtime's interface that keeps every event in ``.events``."""
    from jetkiosk.edge.node.sinks import Sink

    class CollectingSink(Sink):
        def __init__(self) -> None:
            self.events: List[dict] = []

        def publish(self, event, crop=None) -> None:
            self.events.append(event)

    return CollectingSink()


def default_rule(a):
    """The shipped threshold rule for analyzer ``a``'s encoder."""
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.open_set import threshold_rule

    return threshold_rule(load_config().gallery, a.encoder_manifest)


def lfw_faces(count: int, skip: int = 0) -> List[np.ndarray]:
    """The first photo of ``count`` lfw-calib people (after the first ``skip``, by name)."""
    folders = sorted(p for p in (SHARED / "lfw-calib" / "people").iterdir() if p.is_dir())
    photos = [cv2.imread(str(min(f.iterdir()))) for f in folders[skip:skip + count]]
    return [p for p in photos if p is not None]


def crowd_frames(photos: List[np.ndarray], count: int, length: int) -> List[np.ndarray]:
    """``length`` frames with ``count`` faces in a grid, each drifting on its own path."""
    cols = math.ceil(math.sqrt(count * SIZE[0] / SIZE[1]))
    rows = math.ceil(count / cols)
    cell = min(SIZE[0] // cols, SIZE[1] // rows)
    tile = int(cell * 0.8)
    out = []
    for t in range(length):
        canvas = np.full((SIZE[1], SIZE[0], 3), 60, np.uint8)
        for k in range(count):
            r, c = divmod(k, cols)
            x = int(c * SIZE[0] / cols + (SIZE[0] / cols - tile) / 2 + 6 * math.sin(t / 9 + k))
            y = int(r * SIZE[1] / rows + (SIZE[1] / rows - tile) / 2 + 4 * math.cos(t / 7 + k))
            canvas[y:y + tile, x:x + tile] = cv2.resize(photos[k], (tile, tile),
                                                        interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out


def _pose_homography(tilt_x: float, tilt_y: float, roll: float, centre: Tuple[float, float],
                     depth: float, size: Tuple[int, int], focal: float) -> np.ndarray:
    """The homography taking a ``size`` (w, h) texture, centred on the optical axis's
    ``centre`` offset and at ``depth`` (its pixels at depth ``focal`` are frame pixels),
    turned by the angles (radians), into a SIZE frame (a pinhole camera)."""
    cx, cy, cz = math.cos(tilt_x), math.cos(tilt_y), math.cos(roll)
    sx, sy, sz = math.sin(tilt_x), math.sin(tilt_y), math.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    r = rz @ rx @ ry
    k = np.array([[focal, 0, SIZE[0] / 2], [0, focal, SIZE[1] / 2], [0, 0, 1]])
    t = np.array([centre[0], centre[1], depth])
    # Texture pixel (u, v) -> plane point ((u - w/2), (v - h/2), 0) in focal-units.
    plane = np.array([[1, 0, -size[0] / 2], [0, 1, -size[1] / 2], [0, 0, 1]], float)
    return k @ np.c_[r[:, 0], r[:, 1], t] @ np.diag([depth / focal] * 2 + [1.0]) @ plane


def planar_clip(photo: np.ndarray, frames: int, seed: int, still: bool = False
                ) -> List[np.ndarray]:
    """A 1280x720 clip of ``photo`` on a printed sheet (even seeds) or a phone screen (odd:
    gamma, moire, a black bezel) waved in front of a pinhole camera over a background: from
    one random pose to another (tilts up to 40 degrees about both axes, roll, moves, scale
    changes), with blur and sensor noise; every choice seeded by ``seed``. ``still``: the
    photo as it is (no sheet, no screen) held almost still (tilts and roll up to 3 degrees,
    moves of 10 px): a person who holds the photo's pose in front of the camera."""
    rng = np.random.default_rng(seed)
    height = 400
    width = round(photo.shape[1] * height / photo.shape[0])
    tex = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    if still:
        pass
    elif seed % 2:
        tex = 255 * (tex / 255) ** rng.uniform(0.6, 1.6)  # the screen's gamma
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        period, angle = rng.uniform(2.5, 6), rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
        grid = np.sin(math.pi * xx / 1.5) * np.sin(math.pi * yy / 1.5)  # the pixel grid
        tex *= (1 + rng.uniform(0.05, 0.15) * wave + 0.05 * grid)[..., None]
        tex = cv2.copyMakeBorder(tex, 24, 24, 16, 16, cv2.BORDER_CONSTANT, value=(8, 8, 8))
    else:
        tex = 0.8 * tex + 0.2 * tex.mean(axis=2, keepdims=True) + rng.uniform(-10, 20)
        tex = cv2.copyMakeBorder(tex, 18, 18, 18, 18, cv2.BORDER_CONSTANT,
                                 value=(235, 235, 230))
    tex = np.clip(tex, 0, 255).astype(np.float32)
    size = (tex.shape[1], tex.shape[0])
    background = cv2.resize(rng.uniform(30, 200, (9, 16, 3)).astype(np.float32), SIZE,
                            interpolation=cv2.INTER_CUBIC)
    tilt, roll, move = (math.radians(3), math.radians(3), 10) if still else (
        math.radians(40), 0.2, 250)

    def pose() -> np.ndarray:  # tilt x, tilt y, roll, x, y, depth
        return np.array([rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt),
                         rng.uniform(-roll, roll), rng.uniform(-move, move),
                         rng.uniform(-move, move) * 0.4, rng.uniform(800, 1400)])

    start = pose()
    end = start + (pose() - start) * [1, 1, 1, 1, 1, 0.05] if still else pose()
    blur, noise = rng.uniform(0.3, 1.5), rng.uniform(1, 5)
    tex8 = tex.astype(np.uint8)
    back8 = np.clip(background, 0, 255).astype(np.uint8)
    # Sensor noise: crops of one field drawn per clip (drawing a field per frame costs more
    # than the rest of the frame).
    grain = (rng.standard_normal((SIZE[1] + 32, SIZE[0] + 32, 3), np.float32) * noise
             ).astype(np.int16)
    out = []
    for t in np.linspace(0, 1, frames):
        p = start + (end - start) * t + rng.normal(0, 1, 6) * [0.01, 0.01, 0.005, 3, 3, 5]
        h = _pose_homography(p[0], p[1], p[2], (p[3], p[4]), p[5], size, 1000.0)
        frame = back8.copy()
        cv2.warpPerspective(tex8, h, SIZE, dst=frame, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_TRANSPARENT)
        dy, dx = rng.integers(0, 32, 2)
        frame = (cv2.GaussianBlur(frame, (0, 0), blur).astype(np.int16)
                 + grain[dy:dy + SIZE[1], dx:dx + SIZE[0]])
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out

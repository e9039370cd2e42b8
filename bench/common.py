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

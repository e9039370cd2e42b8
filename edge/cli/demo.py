"""`jetkiosk demo`: the whole face path on a fresh machine, from public-domain photos.

Builds the models, enrolls astronaut Eileen Collins (scikit-image) and Grace Hopper
(matplotlib), generates a clip in which they and an unenrolled person (scikit-image's
cameraman) move, change size and lighting, then runs the node on it: events go out over
MQTT (the broker at ``mqtt.broker`` when one answers, else an embedded one) and a listener
prints what arrives.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import cv2
import numpy as np

from ..core.config import Config
from ..core.errors import JetkioskError, missing_extra
from .common import Common

SIZE = (1280, 720)
FPS = 25


def sample_photos() -> Dict[str, np.ndarray]:
    """The demo's photos as BGR arrays: two to enroll, one stranger."""
    try:
        import matplotlib.cbook
        from skimage import data
    except ImportError as exc:
        raise missing_extra("the demo (scikit-image and matplotlib)", "demo", exc) from exc
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {
        "eileen_collins": cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
        "grace_hopper": hopper,
        "stranger": cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR),
    }


def _paste(canvas: np.ndarray, photo: np.ndarray, centre: Tuple[float, float], height: int,
           gain: float = 1.0) -> None:
    scale = height / photo.shape[0]
    tile = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tile = np.clip(tile.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    h, w = tile.shape[:2]
    x0, y0 = int(centre[0] - w / 2), int(centre[1] - h / 2)
    x1, y1 = max(x0, 0), max(y0, 0)
    x2, y2 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
    canvas[y1:y2, x1:x2] = tile[y1 - y0:y2 - y0, x1 - x0:x2 - x0]


def make_clip(path: Path, photos: Dict[str, np.ndarray]) -> List[str]:
    """Write the demo clip; returns the scene list (who appears, in order)."""
    w, h = SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, SIZE)
    if not writer.isOpened():
        raise JetkioskError(f"{path}: OpenCV cannot write MP4 video here")
    ramp = np.linspace(40, 90, w, dtype=np.float32)
    background = np.repeat(np.repeat(ramp[None, :, None], h, 0), 3, 2).astype(np.uint8)
    scenes = [
        # (who, start x, end x, start height, end height, start gain, end gain)
        ([("eileen_collins", 300, 980, 420, 420, 1.0, 1.0)], "moves left to right"),
        ([("grace_hopper", 640, 640, 330, 470, 0.45, 1.2)], "grows as lighting goes dark->bright"),
        ([("stranger", 330, 420, 380, 380, 1.0, 1.0),
          ("eileen_collins", 960, 880, 380, 380, 0.8, 1.0)], "a stranger beside Eileen"),
    ]
    frames_per_scene, gap = 60, 15
    for people, _ in scenes:
        for i in range(frames_per_scene):
            t = i / (frames_per_scene - 1)
            canvas = background.copy()
            for who, x0, x1, h0, h1, g0, g1 in people:
                _paste(canvas, photos[who], (x0 + (x1 - x0) * t, h / 2),
                       int(h0 + (h1 - h0) * t), g0 + (g1 - g0) * t)
            writer.write(canvas)
        for _ in range(gap):
            writer.write(background)
    writer.release()
    return [desc for _, desc in scenes]


def run_demo(workdir: Path, config: Config) -> int:
    """Prepare, enroll, generate, then run the node and print what MQTT subscribers see."""
    from jetkiosk.export.models.prepare import prepare

    from ..faces.analyzer import FaceAnalyzer
    from ..faces.decisions import Matcher
    from ..faces.gallery import Gallery
    from ..faces.open_set import threshold_rule
    from ..mqtt.client import BrokerSettings
    from ..mqtt.demo_broker import EmbeddedBroker, answers
    from ..mqtt.listen import describe, listen
    from ..mqtt.topics import every_node
    from ..node.daemon import Runner

    workdir.mkdir(parents=True, exist_ok=True)
    for key, value in (("models", "dir"), ("gallery", "path"), ("mqtt", "outbox")):
        if not getattr(getattr(config, key), value):
            default = {"dir": "models", "path": "gallery.npz", "outbox": "outbox.db"}[value]
            setattr(getattr(config, key), value, str(workdir / default))
    config.run.sink = "mqtt"
    config.mqtt.node = config.mqtt.node or "demo"
    log = lambda text: print(f"# {text}", flush=True)
    log(f"models -> {config.models_dir}")
    prepare(config.models_dir, progress=log)
    analyzer = FaceAnalyzer(config)
    photos = sample_photos()
    gallery = Gallery(analyzer.encoder_manifest.name, analyzer.fingerprint, analyzer.encoder.dim)
    for name in ("eileen_collins", "grace_hopper"):
        encodings = [f.encoding for f in analyzer.analyze(photos[name]) if f.encoding is not None]
        gallery.add(name, encodings[0])
        log(f"enrolled {name} from one photo")
    gallery.save(config.gallery_path)
    clip = workdir / "demo.mp4"
    for n, desc in enumerate(make_clip(clip, photos), 1):
        log(f"clip scene {n}: {desc}")

    settings = BrokerSettings.from_config(config.mqtt)
    embedded = None
    if answers(settings):
        log(f"MQTT broker {settings.address} answers: using it")
    else:
        embedded = EmbeddedBroker(settings.host, settings.port)
        log(f"no MQTT broker at {settings.address}: started an embedded one (amqtt) there")
    everything = every_node(config.mqtt)
    stop = threading.Event()

    def emit(topic: str, payload: Any, retained: bool) -> None:
        print(f"mqtt> {describe(topic, payload)}", flush=True)

    listener = threading.Thread(target=listen, args=(config.mqtt, everything, emit),
                                kwargs={"stop": stop}, daemon=True)
    listener.start()
    config.run.source = f"file://{clip.resolve()}"

    def matcher() -> Matcher:
        return Matcher(gallery, threshold_rule(config.gallery, analyzer.encoder_manifest))

    try:
        with Runner(config, analyzer, matcher) as runner:
            log(f"running the node on {config.run.source}; a subscriber prints {everything}")
            frames = runner.start().run()
        log(f"{frames} frames processed")
    finally:
        stop.wait(1.0)  # the last messages reach the listener
        stop.set()
        listener.join(5)
        if embedded is not None:
            embedded.close()
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    demo = sub.add_parser("demo", help="prepare models, enroll sample people, run on a clip")
    demo.add_argument("--workdir", type=Path, default=Path("demo-out"))
    common(demo)


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    return run_demo(args.workdir, config)


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {"demo": cmd_demo}

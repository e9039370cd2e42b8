"""The kiosk with and without its face path (kiosk.faces) on the demo's 720p clip.

Display frames per second at the 640x360 processing width, stylization only and with the
face path running on the same frames in its own thread (kiosk.faces_threads intra-op threads
per face model, kiosk.faces_nice); the face path's frames analysed per second, and the time
from the first frame shown (a face is in it) to the first decision. The clip is read as fast
as the kiosk takes it (``realtime=0``), so the display's rate is the kiosk's, not the clip's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict

import numpy as np

from common import analyzer, default_rule, machine, models_dir, parse

warnings.filterwarnings("ignore")


def run_kiosk(clip: Path, gallery: Path, faces: bool, limit: int,
              faces_fps: float = 0.0) -> Dict[str, float]:
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.analyzer import FaceAnalyzer
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import load_gallery
    from jetkiosk.edge.kiosk.app import KioskService
    from jetkiosk.edge.kiosk.faces import face_config
    from jetkiosk.edge.kiosk.outputs import NO_KEY, Output

    config = load_config(overrides=[
        f"models.dir={models_dir()}", f"gallery.path={gallery}", "kiosk.width=640",
        f"kiosk.source=file://{clip}?realtime=0", "kiosk.output=file:///dev/null",
        "kiosk.style=mosaic", f"kiosk.faces={str(faces).lower()}", "run.sink=jsonl:/dev/null",
        f"kiosk.faces_fps={faces_fps}"])
    if not faces:
        service = KioskService(config)
    else:
        faces_analyzer = FaceAnalyzer(face_config(config))
        m = faces_analyzer.encoder_manifest

        def load_matcher() -> Matcher:
            return Matcher(load_gallery(gallery, m.fingerprint, m.legacy_fingerprint,
                                        config.gallery), default_rule(faces_analyzer))

        service = KioskService(config, faces_analyzer, load_matcher)
    times = []

    class Clock(Output):
        uri = "clock://"

        def show(self, frame: np.ndarray) -> int:
            times.append(time.monotonic())  # the face board's clock
            if len(times) >= limit:
                service.kiosk.stop.set()
            return NO_KEY

    service.kiosk.outputs = [Clock()]
    started = time.monotonic()
    service.run()
    ended = time.monotonic()
    result = {"display_fps": (len(times) - 1) / (times[-1] - times[0])}
    if service.faces is not None:
        board = service.faces.board
        result["analysed_fps"] = service.faces.runner.loop.frames / (ended - started)
        first = board.first_decision
        result["first_decision"] = first - times[0] if first is not None else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces-fps", default="0,6", help="comma-separated kiosk.faces_fps "
                        "values to run the face path with (0: no cap)")
    args = parse(parser, "60 frames of the clip each way")
    caps = [float(v) for v in args.faces_fps.split(",")]
    from jetkiosk.edge.cli import demo
    from jetkiosk.edge.faces.gallery import Gallery

    limit = 60 if args.quick else 225
    with tempfile.TemporaryDirectory() as tmp:
        clip, gallery_path = Path(tmp) / "demo.mp4", Path(tmp) / "gallery.npz"
        photos = demo.sample_photos()
        demo.make_clip(clip, photos)
        a = analyzer()
        gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
        for name in ("eileen_collins", "grace_hopper"):
            gallery.add(name, a.analyze(photos[name])[0].encoding[None])
        gallery.save(gallery_path)
        print(f"# kiosk on the demo clip (1280x720), {limit} frames, processing width 640, "
              f"style mosaic, {machine()}")
        alone = run_kiosk(clip, gallery_path, False, limit)
        print(f"stylization only:          display {alone['display_fps']:5.1f} fps")
        for cap in caps:
            both = run_kiosk(clip, gallery_path, True, limit, cap)
            print(f"with the face path, faces_fps {cap:g}: display {both['display_fps']:5.1f} "
                  f"fps ({100 * both['display_fps'] / alone['display_fps']:.0f}% of "
                  f"stylization only); {both['analysed_fps']:4.1f} frames analysed/s, first "
                  f"decision {both['first_decision']:.2f} s after the first frame shown")


if __name__ == "__main__":
    main()

"""The live loop on a 720p clip with 1-3 moving faces: frames per second on this machine.

Runs the real CaptureLoop on every frame of a generated 1280x720 clip (50 frames each with
1, 2 and 3 faces), with the default re-encoding policy and with every face encoded every
frame; face_recognition 1.3.0 runs on the same frames for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from common import (
    analyzer,
    collecting_sink,
    default_rule,
    face_recognition_fps,
    have_peer,
    machine,
    parse,
)

warnings.filterwarnings("ignore")


def make_clip(path: Path, each: int = 50) -> int:
    from jetkiosk.edge.cli.demo import SIZE, _paste, sample_photos

    photos = sample_photos()
    order = ["eileen_collins", "grace_hopper", "stranger"]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, SIZE)
    frames = 0
    for count in (1, 2, 3):
        for i in range(each):
            canvas = np.full((SIZE[1], SIZE[0], 3), 70, np.uint8)
            for k in range(count):
                x = 220 + 420 * k + 60 * np.sin(i / 8 + k)
                _paste(canvas, photos[order[k]], (x, 360 + 30 * np.cos(i / 10)), 380)
            writer.write(canvas)
            frames += 1
    writer.release()
    return frames


def run_ours(clip: Path, reembed_every: int):
    from jetkiosk.edge.capture.sources import open_source
    from jetkiosk.edge.cli.demo import sample_photos
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import Gallery
    from jetkiosk.edge.node.loop import CaptureLoop

    a = analyzer()
    gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
    photos = sample_photos()
    for name in ("eileen_collins", "grace_hopper"):
        gallery.add(name, a.analyze(photos[name])[0].encoding[None])
    config = load_config(overrides=[f"tracker.reembed_every={reembed_every}"])
    sink = collecting_sink()
    loop = CaptureLoop(config, a, Matcher(gallery, default_rule(a)), sink)
    source = open_source(f"file://{clip}")
    try:
        start = time.perf_counter()
        frames = loop.run(source)
        elapsed = time.perf_counter() - start
    finally:
        source.close()
    stages = {k: 1000 * v / frames for k, v in loop.stage_seconds.items()}
    return frames / elapsed, stages, sink.events


def run_face_recognition(clip: Path, limit: int = 30) -> float:
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    picked = frames[::max(1, len(frames) // limit)][:limit]  # over the 1-, 2- and 3-face parts
    return face_recognition_fps(picked)


def main() -> None:
    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "4 frames per face count, face_recognition on 3 of them")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "live720p.mp4"
        frames = make_clip(clip, 4 if args.quick else 50)
        print(f"# {frames} frames 1280x720, 1-3 faces, {machine()}")
        for every in (5, 1):
            fps, stages, events = run_ours(clip, every)
            names = sorted({e["name"] or "unknown" for e in events})
            detail = ", ".join(f"{k} {v:.1f} ms" for k, v in stages.items())
            print(f"jetkiosk, re-encode decided tracks every {every} frame(s): {fps:5.1f} fps "
                  f"({detail}); {len(events)} events, names {names}")
        if have_peer("face_recognition", "face_recognition"):
            print(f"face_recognition 1.3.0, every frame:                  "
                  f"{run_face_recognition(clip, 3 if args.quick else 30):5.1f} fps")


if __name__ == "__main__":
    main()

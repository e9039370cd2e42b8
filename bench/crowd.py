"""Crowds: the live loop at 1280x720 with 1, 5, 10 and 20 moving faces from real photos.

Faces are people of ../shared/faces/lfw-calib (one photo each, half of them enrolled), laid
out in a grid and drifting a little every frame. Each clip runs through the real CaptureLoop
twice: with the frame budget of a 30 fps camera (the re-encode schedule stretches while
frames are over budget) and without one (decided tracks every ``tracker.reembed_every``
frames, as fast as frames are processed). For each: frames per second, faces encoded per
frame, and when the last face's first decision came (seconds from the first frame, every
face being in it). Both encoders run, face-reid-0095 (the default) and facenet-casia, each in
FP32 and at ``models.precision = "auto"`` (INT8 where a shipped, gated variant pays on this
CPU; each block's header says what auto chose and why). face_recognition 1.3.0 runs on a few
of the same frames.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Dict, Iterator, List

import numpy as np

from common import (
    SIZE,
    analyzer,
    crowd_frames,
    default_rule,
    face_recognition_fps,
    have_peer,
    lfw_faces,
    machine,
    parse,
)

warnings.filterwarnings("ignore")
RATE = 30.0  # the camera's frames per second the budget is taken from


def run_ours(frames: List[np.ndarray], gallery, a, budget: bool) -> Dict[str, float]:
    from jetkiosk.edge.capture.sources import Source
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.node.loop import CaptureLoop
    from jetkiosk.edge.node.sinks import Sink

    class Frames(Source):
        uri = "memory://crowd"
        rate = RATE if budget else None

        def frames(self) -> Iterator:
            for frame in frames:
                yield frame, time.monotonic()

    decided: Dict[int, float] = {}  # track id -> seconds from the start to its decision

    class FirstDecisions(Sink):
        def publish(self, event, crop=None) -> None:
            if event["event"] == "new":
                decided.setdefault(event["track_id"], time.perf_counter() - start)

    loop = CaptureLoop(load_config(), a, Matcher(gallery, default_rule(a)), FirstDecisions())
    encoded = []
    pick = loop.schedule.pick
    loop.schedule.pick = lambda tracks: encoded.append(len(chosen := pick(tracks))) or chosen
    start = time.perf_counter()
    processed = loop.run(Frames())
    elapsed = time.perf_counter() - start
    return {"fps": processed / elapsed, "encoded": float(np.mean(encoded)),
            "tracks": len(decided),
            "last_decision": max(decided.values(), default=float("nan"))}


SETUPS = [("face-reid-0095", "fp32"), ("face-reid-0095", "auto"), ("facenet-casia", "fp32"),
          ("facenet-casia", "auto")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args = parse(parser, "1 and 5 faces, 12 frames each, face_recognition on 2")
    from jetkiosk.edge.faces.gallery import Gallery

    counts = (1, 5) if args.quick else (1, 5, 10, 20)
    length = 12 if args.quick else 90
    photos = lfw_faces(max(counts))
    clips = {count: crowd_frames(photos, count, length) for count in counts}
    print(f"# crowds at {SIZE[0]}x{SIZE[1]}, {length} frames each, {machine()}")
    for encoder, precision in SETUPS:
        a = analyzer(f"models.encoder={encoder}", f"models.precision={precision}")
        print(f"## encoder {encoder} {a.encoder.backend.precision}, detector "
              f"{a.detector.backend.precision} (models.precision {precision}; encoder "
              f"{a.encoder_manifest.reason})")
        gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
        for i, photo in enumerate(photos[::2]):
            found = [f.encoding for f in a.analyze(photo) if f.encoding is not None]
            if found:
                gallery.add(f"person {i}", found[0][None])
        for count in counts:
            for budget in (True, False):
                r = run_ours(clips[count], gallery, a, budget)
                label = f"budget 1/{RATE:g} s" if budget else "no budget"
                print(f"{count:2d} faces, jetkiosk, {label:14s}: {r['fps']:5.1f} fps, "
                      f"{r['encoded']:4.1f} faces encoded/frame, {r['tracks']} tracks decided, "
                      f"the last {r['last_decision']:.2f} s after the first frame")
    if have_peer("face_recognition", "face_recognition"):
        for count in counts:
            sample = clips[count][:2 if args.quick else 6]
            print(f"{count:2d} faces, face_recognition 1.3.0, every face every frame: "
                  f"{face_recognition_fps(sample):5.1f} fps")


if __name__ == "__main__":
    main()

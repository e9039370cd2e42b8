"""Passive liveness: the upstream sample photos' live scores, and what the check costs per face
against the encoder (align + encode) on the same faces of 1280x720 frames."""

from __future__ import annotations

import argparse
from typing import List, Tuple

import cv2
import numpy as np

from common import (
    SHARED,
    analyzer,
    crowd_frames,
    lfw_faces,
    machine,
    median_seconds,
    models_dir,
    parse,
)

SAMPLES = SHARED.parent / "models" / "antispoof" / "samples"
# Upstream's labels for its example photos.
LABELS = {"image_T1": "live", "image_F1": "spoof", "image_F2": "spoof"}


def per_face(a, check, shots: List[Tuple[np.ndarray, list]]) -> Tuple[float, float]:
    """Seconds per face of the liveness check and of the encoder (align + encode), each run
    frame by frame on the same detections."""
    faces = sum(len(d) for _, d in shots)
    live = median_seconds(lambda: [check.scores(f, d) for f, d in shots], 3)
    enc = median_seconds(lambda: [a.analyze_many([shot]) for shot in shots], 3)
    return live / faces, enc / faces


def main() -> None:
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.liveness import LIVENESS_MODELS, LivenessCheck

    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "3 frames per crowd size")
    length = 3 if args.quick else 30
    a = analyzer()
    check = LivenessCheck.load(load_config(overrides=[f"models.dir={models_dir()}"]))
    encoder = a.encoder_manifest
    print(f"# passive liveness ({' + '.join(LIVENESS_MODELS)}, fp32) against encoder "
          f"{encoder.name} ({encoder.why}), {length} frames per crowd, {machine()}")
    for name, label in LABELS.items():
        photo = cv2.imread(str(SAMPLES / f"{name}.jpg"))
        faces = a.detector.detect(photo)
        scores = ", ".join(f"{s:.4f}" for s in check.scores(photo, faces))
        print(f"{name} ({label}): {len(faces)} face(s), live score {scores}")
    for count in (1, 5):
        frames = crowd_frames(lfw_faces(count), count, length)
        shots = [(frame, a.detector.detect(frame)) for frame in frames]
        live, enc = per_face(a, check, shots)
        print(f"{count} faces/frame: liveness {live * 1000:.2f} ms/face, encoder "
              f"{enc * 1000:.2f} ms/face, liveness/encoder {live / enc * 100:.1f}%")


if __name__ == "__main__":
    main()

"""Liveness: the passive check (the upstream sample photos' live scores, and what it costs per
face against the encoder on the same faces of 1280x720 frames) and the landmark geometry check
(planar attacks rendered from real photos, real head turns from pairs of photos of one person,
and its cost per face per frame)."""

from __future__ import annotations

import argparse
import time
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional, Tuple

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
    planar_clip,
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


def in_loop(a, frames: List[np.ndarray], rescore: int) -> Tuple[float, int, int]:
    """The capture loop over ``frames`` (report mode, ``liveness.rescore_every`` = ``rescore``):
    its live stage's time over its embed stage's, faces encoded and faces scored."""
    from jetkiosk.edge.capture.sources import Source
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import Gallery
    from jetkiosk.edge.node.loop import CaptureLoop
    from jetkiosk.edge.node.sinks import Sink

    class Frames(Source):
        uri = "memory://crowd"

        def frames(self):
            for frame in frames:
                yield frame, time.monotonic()

    class Drop(Sink):
        def publish(self, event, crop=None) -> None:
            pass

    config = load_config(overrides=[f"models.dir={models_dir()}",
                                    f"liveness.rescore_every={rescore}"])
    loop = CaptureLoop(config, a, Matcher(Gallery("x", a.fingerprint, a.encoder.dim), 1.0),
                       Drop())
    counts = {"encoded": 0, "scored": 0}
    score_live = a.score_live

    def counted(shots) -> None:
        counts["scored"] += sum(len(faces) for _, faces in shots)
        score_live(shots)

    a.score_live = counted
    encode = a.encoder.encode
    a.encoder.encode = lambda crops: (counts.__setitem__("encoded", counts["encoded"]
                                                         + len(crops)), encode(crops))[1]
    try:
        loop.run(Frames())
    finally:
        del a.score_live, a.encoder.encode  # back to the class's own methods
    stages = loop.stage_seconds
    return stages["live"] / stages["embed"], counts["encoded"], counts["scored"]


def follow(a, frames: List[np.ndarray]) -> List[Optional[np.ndarray]]:
    """The landmarks of one face through ``frames`` (None where it is not found): the
    largest face first, then the face overlapping the last one found most (IoU >= 0.3),
    as the tracker follows a face."""
    out: List[Optional[np.ndarray]] = []
    last = None
    for frame in frames:
        faces = a.detector.detect(frame)
        if last is None:
            face = max(faces, key=lambda d: d.width * d.height) if faces else None
        else:
            face = max(faces, key=lambda d: iou(d.box, last.box), default=None)
            face = face if face is not None and iou(face.box, last.box) >= 0.3 else None
        last = face or last
        out.append(None if face is None else face.landmarks)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def judged(settings, frames: List[Optional[np.ndarray]]):
    """The Geometry of a track of these landmarks (None: no face in that frame)."""
    from jetkiosk.edge.faces.planarity import LandmarkTrack

    track = LandmarkTrack(settings.window, settings.parallax, settings.motion)
    for marks in frames:
        if marks is not None:
            track.add(marks)
    return track.judge()


def planar_attacks(a, settings, photos: List[Path], frames: int) -> None:
    """Each photo on a printed sheet or a phone screen, waved in front of the camera (tilts up
    to 40 degrees about both axes, moves, scale changes), through the real detector, judged
    by a LandmarkTrack with the configured thresholds: every clip must come out not "3d"."""
    from jetkiosk.edge.faces.planarity import parallax

    counts: Dict[str, int] = {"3d": 0, "planar": 0, "still": 0}
    worst_par, worst_mot, worst_pair, missed = 0.0, 0.0, 0.0, 0
    for k, path in enumerate(photos):
        marks = follow(a, planar_clip(cv2.imread(str(path)), frames, seed=k))
        missed += sum(m is None for m in marks)
        g = judged(settings, marks)
        counts[g.verdict] += 1
        worst_par, worst_mot = max(worst_par, g.parallax), max(worst_mot, g.motion)
        found = [m for m in marks if m is not None]
        worst_pair = max([worst_pair, *(parallax(x, y)[0] for x, y in combinations(found, 2))])
    print(f"planar attacks: {len(photos)} clips of {frames} frames 1280x720 (print or screen, "
          f"tilts up to 40 deg): 3d {counts['3d']}, planar {counts['planar']}, still "
          f"{counts['still']}; largest parallax {worst_par:.3f} (one pair alone: "
          f"{worst_pair:.3f}), largest motion {worst_mot:.3f}; {missed} frames without the face")


YAW_BINS = ((0.0, 0.1), (0.1, 0.2), (0.2, 9.0))


def real_turns(a, settings, people: List[Path], frames: int) -> None:
    """Pairs of photos of one person (different photos: pose, expression and camera all
    change; not video), binned by how far the landmarks' yaw differs: judged as a two-frame
    track (one detection of each photo), and as a track of ``frames`` frames holding the first
    photo's pose then ``frames`` holding the second's (each photo held almost still in front
    of the camera, through the detector: its landmark noise is real)."""
    from jetkiosk.edge.faces.planarity import parallax, yaw

    names = ("two frames", f"{frames}+{frames} frames")
    bins = {(kind, b): {"3d": 0, "planar": 0, "still": 0, "pair": 0}
            for kind in names for b in YAW_BINS}
    seed = 100_000
    for folder in people:
        held = []
        for photo in sorted(folder.iterdir()):
            seed += 1
            marks = [m for m in follow(a, planar_clip(cv2.imread(str(photo)), frames, seed,
                                                      still=True)) if m is not None]
            if marks:
                held.append(marks)
        for first, second in combinations(held, 2):
            turn = abs(yaw(first[0]) - yaw(second[0]))
            span = next(b for b in YAW_BINS if b[0] <= turn < b[1])
            bins[(names[0], span)][judged(settings, [first[0], second[0]]).verdict] += 1
            bins[(names[1], span)][judged(settings, first + second).verdict] += 1
            bins[(names[0], span)]["pair"] += parallax(first[0], second[0])[0] > settings.parallax
    for (kind, (low, high)), got in bins.items():
        n = max(1, got["3d"] + got["planar"] + got["still"])
        span = f"|dyaw| {low:.1f}-{high:.1f}" if high < 9 else f"|dyaw| >= {low:.1f}"
        rates = ", ".join(f"{v} {got[v] / n:.3f}" for v in ("3d", "planar", "still"))
        alone = (f" (one pair's parallax above it: {got['pair'] / n:.3f})"
                 if kind == names[0] else "")
        print(f"real turns, photo pairs of one person as {kind}, {span}: "
              f"{got['3d'] + got['planar'] + got['still']} pairs, {rates}{alone}")


def geometry_cost(settings) -> float:
    """Seconds per LandmarkTrack.add + judge, a full window, one face."""
    from jetkiosk.edge.faces.planarity import LandmarkTrack

    rng = np.random.default_rng(0)
    base = np.array([[100, 100], [160, 100], [130, 135], [108, 170], [152, 170]], float)
    stream = [base + rng.normal(0, 1.5, base.shape) for _ in range(settings.window * 4)]
    track = LandmarkTrack(settings.window, settings.parallax, settings.motion)
    for marks in stream[:settings.window]:
        track.add(marks)
    start = time.perf_counter()
    for marks in stream[settings.window:]:
        track.add(marks)
        track.judge()
    return (time.perf_counter() - start) / (len(stream) - settings.window)


def main() -> None:
    from jetkiosk.edge.core.config import load_config
    from jetkiosk.edge.faces.liveness import LIVENESS_MODELS, LivenessCheck

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parallax", type=float, help="geometry threshold (default: config's)")
    parser.add_argument("--motion", type=float, help="geometry threshold (default: config's)")
    args = parse(parser, "3 frames per crowd size, 4 planar clips, 6 people's photo pairs")
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
    clip = 12 if args.quick else 90
    for count in (1, 5):
        frames = crowd_frames(lfw_faces(count), count, clip)
        for rescore in (1, 3):
            share, encoded, scored = in_loop(a, frames, rescore)
            print(f"loop, {count} faces x {clip} frames, rescore_every {rescore}: {encoded} "
                  f"faces encoded, {scored} scored; live stage / embed stage {share * 100:.1f}%")
    settings = load_config(overrides=[f"liveness.{name}={value}" for name, value in (
        ("parallax", args.parallax), ("motion", args.motion)) if value is not None]).liveness
    print(f"# landmark geometry: window {settings.window}, parallax > {settings.parallax}, "
          f"motion > {settings.motion}")
    print(f"geometry: {geometry_cost(settings) * 1000:.3f} ms per LandmarkTrack.add + judge "
          f"(one face, one frame, full window)")
    lfw = sorted(p for p in (SHARED / "lfw-calib" / "people").iterdir() if p.is_dir())
    gallery = sorted(p for person in (SHARED / "people" / "gallery").iterdir()
                     for p in person.iterdir())
    # Every person's first photo (the gallery's and lfw-calib's); --quick: two of each.
    first = [min(f.iterdir()) for f in (lfw[:2] if args.quick else lfw)]
    photos = (gallery[:2] if args.quick else gallery) + first
    planar_attacks(a, settings, photos, 10)
    real_turns(a, settings, lfw[:6] if args.quick else lfw, 4)


if __name__ == "__main__":
    main()

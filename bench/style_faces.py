"""Do the shipped styles keep a face recognisable? And ``kiosk.face_keep`` (the face-aware
blend) with a few strengths and modes.

Three sets: the people probes of ../shared/faces/people (the gallery/ people enrolled with
the default encoder; every face found in a probe); lfw-calib (the first photo of each of N
people enrolled, the largest face of their second photo probed; the 250x250 photo is
upscaled to 640, so its face is about 280 px wide where the network runs); and lfw-720p, the
same probes at their own size in a 1280x720 frame (the face about 55 px wide at 640, as a
720p kiosk camera sees someone a step or two away). Each photo is stylized
whole as the kiosk does (resized to kiosk.width 640, kiosk.canvas's grain, the style
network, no colour keeping, no blend), the blend applied with the detector's boxes on the
original photo (the kiosk uses its tracker's), and shown back at the photo's size. Per style
and set:

* faces found: the original's faces the detector finds again in the stylized photo (IoU >=
  0.4);
* luma / contrast: the mean and the standard deviation of the luminance (0..255) in the
  face boxes, stylized / original;
* cosine: between the encoder's embedding of the original face and of the stylized one,
  both aligned with the original's landmarks (the same box);
* nearest right: enrolled people whose face's nearest enrolled person is still them (of
  every enrolled person in the probes); named right: whom the decision names (threshold
  rule of the default configuration, for the gallery's size).

Then what the blend costs per frame on a 640x360 stylized frame from a 1280x720 camera.

Usage: python bench/style_faces.py [--lfw 100] [--default-blend-only] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np

from common import SHARED, analyzer, default_rule, machine, parse, people

warnings.filterwarnings("ignore")
WIDTH = 640  # kiosk.width's default
# (mode, strength): the blend's variants measured; None: no blend.
VARIANTS: List[Optional[Tuple[str, float]]] = [
    None, ("luma", 0.5), ("luma", 0.75), ("luma", 0.9), ("luma", 1.0), ("alpha", 0.5),
    ("alpha", 0.75)]
QUICK_STYLES = ["mosaic", "starry_night"]
RECOMMENDED = ("luma", 1.0)  # kiosk.face_keep 1 (the kiosk's blend is luma); --quick runs it


@dataclass
class Photo:
    """A probe photo, its faces on the original (detections and embeddings), and the enrolled
    people who appear in it."""

    image: np.ndarray
    detections: list
    encodings: np.ndarray
    expected: Set[str]


@dataclass
class Tally:
    faces: int = 0
    found: int = 0
    luma: List[Tuple[float, float]] = field(default_factory=list)  # (stylized, original)
    contrast: List[Tuple[float, float]] = field(default_factory=list)
    cosines: List[float] = field(default_factory=list)
    expected: int = 0
    nearest: int = 0
    named: int = 0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_stats(image: np.ndarray, box: Sequence[float]) -> Tuple[float, float]:
    """Mean and standard deviation of the luminance inside ``box`` (clipped to the image)."""
    h, w = image.shape[:2]
    x1, y1 = int(max(0, box[0])), int(max(0, box[1]))
    x2, y2 = int(min(w, box[2])), int(min(h, box[3]))
    grey = cv2.cvtColor(image[y1:max(y1 + 1, y2), x1:max(x1 + 1, x2)], cv2.COLOR_BGR2GRAY)
    return float(grey.mean()), float(grey.std())


def embed(a, image: np.ndarray, detections: list) -> np.ndarray:
    """The encoder's embeddings of ``detections`` in ``image`` (no quality gate: a dark face
    is measured, not skipped)."""
    return a.encoder.encode([a.aligner(image, d) for d in detections])


def make_photo(a, image: np.ndarray, expected: Set[str], largest: bool) -> Optional[Photo]:
    detections = a.detector.detect(image)
    if largest and detections:
        detections = [max(detections, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))]
    if not detections:
        return None
    return Photo(image, detections, embed(a, image, detections), expected)


def people_set(a, count: int) -> Tuple[object, List[Photo]]:
    """The people gallery enrolled (one template per person) and the probes."""
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.gallery import Gallery

    gallery_photos, probes = people()
    gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
    for name, paths in gallery_photos.items():
        for path in paths:
            faces = a.analyze(load_image(path))
            gallery.add(name, faces[0].encoding[None])
    photos = [make_photo(a, load_image(p), expected, largest=False)
              for p, expected in list(probes.items())[:count or None]]
    return gallery, [p for p in photos if p is not None]


def in_frame(photo: np.ndarray) -> np.ndarray:
    """``photo`` at its own size in the middle of a grey 1280x720 frame: a face at the size a
    720p kiosk camera sees it from a step or two away (about 110 px wide, 55 px at 640)."""
    frame = np.full((720, 1280, 3), 60, np.uint8)
    h, w = photo.shape[:2]
    top, left = (720 - h) // 2, (1280 - w) // 2
    frame[top:top + h, left:left + w] = photo
    return frame


def lfw_set(a, count: int, framed: bool = False) -> Tuple[object, List[Photo]]:
    """The first ``count`` lfw-calib people: the first photo enrolled, the second probed
    (``framed``: in a 1280x720 frame, see ``in_frame``)."""
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.gallery import Gallery

    gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
    folders = sorted(p for p in (SHARED / "lfw-calib" / "people").iterdir() if p.is_dir())
    photos: List[Photo] = []
    for folder in folders:
        if len(photos) == count:
            break
        files = sorted(folder.iterdir())
        enrolled = make_photo(a, load_image(files[0]), set(), largest=True)
        image = load_image(files[1])
        probe = make_photo(a, in_frame(image) if framed else image, {folder.name}, largest=True)
        if enrolled is None or probe is None:
            continue
        gallery.add(folder.name, enrolled.encodings)
        photos.append(probe)
    return gallery, photos


def measure(a, matcher, photos: List[Photo], shown: List[np.ndarray]) -> Tally:
    """The figures for ``shown`` (each photo as shown, at its own size)."""
    tally = Tally()
    for photo, image in zip(photos, shown):
        found = a.detector.detect(image)
        encodings = embed(a, image, photo.detections)
        decisions = matcher.identify(encodings)
        for d, e, e0 in zip(photo.detections, encodings, photo.encodings):
            tally.faces += 1
            tally.found += any(iou(d.box, f.box) >= 0.4 for f in found)
            (m, s), (m0, s0) = box_stats(image, d.box), box_stats(photo.image, d.box)
            tally.luma.append((m, m0))
            tally.contrast.append((s, s0))
            tally.cosines.append(float(np.dot(e, e0)))
        tally.expected += len(photo.expected)
        tally.nearest += len(photo.expected & {d.candidate for d in decisions})
        tally.named += len(photo.expected & {d.name for d in decisions})
    return tally


def line(label: str, t: Tally) -> str:
    luma = np.mean(t.luma, axis=0)
    contrast = np.mean(t.contrast, axis=0)
    return (f"{label:40s} faces found {t.found:3d}/{t.faces:<3d}  luma {luma[0]:5.1f}/"
            f"{luma[1]:5.1f}  contrast {contrast[0]:4.1f}/{contrast[1]:4.1f}  cosine "
            f"{np.mean(t.cosines):6.3f}  nearest right {t.nearest:3d}/{t.expected:<3d}  "
            f"named right {t.named:3d}/{t.expected}")


def variant_label(variant: Optional[Tuple[str, float]]) -> str:
    return "no blend" if variant is None else f"face_keep {variant[0]} {variant[1]:.2f}"


def stylized(stylizer, photo: Photo, variant: Optional[Tuple[str, float]]) -> np.ndarray:
    """``photo`` as the kiosk shows it with ``stylizer`` and the blend ``variant``."""
    from jetkiosk.edge.kiosk.face_keep import keep_faces

    image = photo.image
    size = (image.shape[1], image.shape[0])
    out = stylizer(image)
    if variant is not None:
        keep_faces(out, image, [d.box for d in photo.detections], size, variant[1], variant[0])
    return cv2.resize(out, size, interpolation=cv2.INTER_LINEAR)


def blend_cost(catalog, variants: List[Tuple[str, float]], repeat: int) -> None:
    """Milliseconds per frame of the blend on a 640x360 frame from a 1280x720 one: 1 face
    (200x240 px at 1280x720) and 5 faces (120x144 px), against the stylizer's frame."""
    from skimage import data

    from jetkiosk.edge.kiosk.face_keep import keep_faces
    from jetkiosk.edge.kiosk.stylizer import Stylizer

    frame = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1280, 720))
    stylizer = Stylizer(catalog, "mosaic", WIDTH)
    styled = stylizer(frame)

    def ms(fn) -> float:
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    network = ms(lambda: stylizer(frame))
    one = [(540.0, 200.0, 740.0, 440.0)]
    five = [(60.0 + 240 * k, 250.0 + 40 * (k % 2), 180.0 + 240 * k, 394.0 + 40 * (k % 2))
            for k in range(5)]
    for mode, strength in variants:
        cost = [ms(lambda b=b, s=strength, m=mode: keep_faces(
            styled.copy(), frame, b, (1280, 720), s, m)) for b in (one, five)]
        print(f"blend cost face_keep {mode} {strength:.2f}: 1 face {cost[0]:.2f} ms/frame, "
              f"5 faces {cost[1]:.2f} ms/frame (the stylizer's frame: {network:.1f} ms)")
    copy = ms(lambda: styled.copy())
    print(f"(a frame copy, included above: {copy:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=int, default=100, help="lfw-calib people")
    parser.add_argument("--default-blend-only", action="store_true",
                        help="per style only no blend and kiosk.face_keep's default")
    args = parse(parser, "3 people probes, 4 lfw-calib people, mosaic and starry_night, no "
                 "blend and the default blend")
    from jetkiosk.edge.core.config import KioskConfig
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
    from jetkiosk.edge.kiosk.face_keep import MODES  # noqa: F401 (the module loads)
    from jetkiosk.edge.kiosk.stylizer import Stylizer

    default = RECOMMENDED
    variants = [None, default] if args.default_blend_only else VARIANTS
    if args.quick:
        args.lfw = 4
        variants = [None, default]
    a = analyzer()
    rule = default_rule(a)
    catalog = StyleCatalog([BUNDLED])
    styles = QUICK_STYLES if args.quick else catalog.names
    print(f"# styles and faces: people probes and {args.lfw} lfw-calib people, photos "
          f"stylized whole at width {WIDTH}, encoder {a.encoder_manifest.name}, {machine()}")
    print(f"# recommended kiosk.face_keep {default[1]:.2f} ({default[0]}); figures: faces found "
          "again, luma and contrast stylized/original, cosine to the original face, nearest "
          "and named right of the enrolled people in the probes")
    sets: Dict[str, Tuple[object, List[Photo]]] = {
        "people": people_set(a, 3 if args.quick else 0), "lfw": lfw_set(a, args.lfw),
        "lfw-720p": lfw_set(a, args.lfw, framed=True)}
    for set_name, (gallery, photos) in sets.items():
        matcher = Matcher(gallery, rule)
        print(f"## {set_name}: {len(photos)} photos, {sum(len(p.detections) for p in photos)} "
              f"faces, gallery of {len(matcher.names)}")
        print(line(f"{set_name} original", measure(a, matcher, photos,
                                                   [p.image for p in photos])))
        plain = [cv2.resize(cv2.resize(p.image, (WIDTH, round(WIDTH * p.image.shape[0]
                                                               / p.image.shape[1])),
                                       interpolation=cv2.INTER_AREA),
                            (p.image.shape[1], p.image.shape[0]),
                            interpolation=cv2.INTER_LINEAR) for p in photos]
        print(line(f"{set_name} no style (width {WIDTH})", measure(a, matcher, photos, plain)))
        for style in styles:
            stylizer = Stylizer(catalog, style, WIDTH, canvas=KioskConfig().canvas)
            for variant in variants:
                shown = [stylized(stylizer, p, variant) for p in photos]
                print(line(f"{set_name} {style} {variant_label(variant)}",
                           measure(a, matcher, photos, shown)))
    print("## blend cost")
    blend_cost(catalog, [default] if args.quick else [v for v in variants if v is not None],
               5 if args.quick else 50)


if __name__ == "__main__":
    main()

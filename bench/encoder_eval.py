"""How to feed FaceNet, and where to put the threshold, by measurement.

1. Alignment: margin crops of the detector's box vs a 5-point similarity transform onto the
   template in the encoder manifest, scored by verification EER on ORL (all 40 subjects,
   every pair) and by the genuine/impostor gap on ../shared/faces/people.
2. Flip test-time augmentation: EER with and without, and its cost.
3. Threshold: genuine and impostor squared distances on both sets; EER point, and FAR/FRR at
   the default threshold.
"""

from __future__ import annotations

import argparse
import time
import warnings

import cv2
import numpy as np

from common import SHARED, analyzer, machine, parse, people

warnings.filterwarnings("ignore")


def orl_images(subjects: int = 40):
    from jetkiosk.edge.core.images import load_image

    images, owners = [], []
    for s in range(1, subjects + 1):
        for i in range(1, 11):
            image = load_image(SHARED / f"orl/s{s}/{i}.pgm", min_side=8)
            image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
            images.append(cv2.copyMakeBorder(image, 56, 56, 46, 46, cv2.BORDER_REPLICATE))
            owners.append(s)
    return images, np.array(owners)


def encode_all(a, images, detections, align=None, flip=False):
    from jetkiosk.edge.faces.align import Aligner

    pre = dict(a.encoder_manifest.preprocess)
    if align is not None:
        pre["align"] = align
    aligner = Aligner(pre)
    a.encoder.flip = flip
    crops = [aligner(img, dets[0]) for img, dets in zip(images, detections)]
    start = time.perf_counter()
    out = a.encoder.encode(crops)
    a.encoder.flip = False
    return out, (time.perf_counter() - start) / len(crops)


def people_sets(a):
    from jetkiosk.edge.core.images import load_image

    gallery, probes = people()
    images, owners = [], []
    for name, photos in gallery.items():
        for p in photos:
            images.append(load_image(p))
            owners.append(name)
    probe_images = [(load_image(p), expected) for p, expected in probes.items()]
    return images, owners, probe_images


def people_distances(a, aligner_align, flip=False):
    """Probe faces vs gallery templates: genuine for labelled people, impostor otherwise."""
    images, owners, probe_images = people_sets(a)
    dets = [a.detector.detect(i) for i in images]
    enc, _ = encode_all(a, images, dets, aligner_align, flip)
    names = sorted(set(owners))
    templates = np.stack([enc[[o == n for o in owners]].mean(0) for n in names])
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    genuine, impostor = [], []
    for image, expected in probe_images:
        pdets = [[d] for d in a.detector.detect(image)]
        penc, _ = encode_all(a, [image] * len(pdets), pdets, aligner_align, flip)
        dist = ((penc[:, None] - templates[None]) ** 2).sum(-1)  # faces x people
        for j, name in enumerate(names):
            (genuine if name in expected else impostor).append(dist[:, j].min())
    return np.array(genuine), np.array(impostor)


def main() -> None:
    from jetkiosk.export.encoder.verification_eval import evaluate, verification_report

    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "ORL subjects 1-4 only")
    a = analyzer("models.encoder=facenet-casia", "quality.min_sharpness=0")
    template = a.encoder_manifest.preprocess["align"]
    images, owners = orl_images(4 if args.quick else 40)
    detections = [a.detector.detect(i) for i in images]
    assert all(detections), "the detector missed an ORL face"
    print(f"# ORL: {len(images)} images, {len(set(owners))} subjects, all pairs; people: "
          f"11 probes vs 5 enrolled; {machine()}")
    print("alignment                      ORL EER   people gap (min impostor - max genuine)")
    candidates = [({"method": "margin", "margin": m}, f"margin crop {m:.0%} of box")
                  for m in (0.0, 0.1, 0.2, 0.3)] + [(template, "similarity to template")]
    for align, label in candidates:
        e = verification_report(encode_all(a, images, detections, align)[0], owners)[0].eer
        g, i = people_distances(a, align)
        print(f"{label:30s} {e * 100:5.2f}%   {i.min() - g.max():+.3f}")
    print("flip test-time augmentation    ORL EER   encode time per face")
    for flip in (False, True):
        enc, seconds = encode_all(a, images, detections, template, flip)
        e = verification_report(enc, owners)[0].eer
        print(f"{'on' if flip else 'off':30s} {e * 100:5.2f}%   {seconds * 1000:.1f} ms")
    print("threshold (squared L2)")
    tau = 1.0
    for name, (g, i) in (("ORL", verification_report(encode_all(a, images, detections)[0],
                                                      owners)[1:]),
                         ("people", people_distances(a, None))):
        report = evaluate(g, i)
        e, at = report.eer, report.eer_threshold
        print(f"{name:7s} genuine {np.mean(g):.3f}+-{np.std(g):.3f} (max {g.max():.3f}), "
              f"impostor {np.mean(i):.3f}+-{np.std(i):.3f} (min {i.min():.3f}); EER "
              f"{e * 100:.2f}% at {at:.3f}; at tau={tau}: FRR {np.mean(g > tau) * 100:.2f}%, "
              f"FAR {np.mean(i <= tau) * 100:.3f}%")


if __name__ == "__main__":
    main()

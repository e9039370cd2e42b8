"""Detector recall against face size, at detector.max_side 640, 960 and 1280, on real photos.

Faces of ../shared/faces/lfw-calib (one photo per person) are pasted in a grid onto a
1280x720 frame, one frame per face size (the width of the pasted face box, from 16 to 96
px); a face counts as found when a detection's box overlaps its true box by IoU >= 0.4. The
true box is where the detector finds the face in the photo at full size, scaled and moved
with it. Prints recall per size and the milliseconds per frame of each max_side.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import List, Tuple

import cv2
import numpy as np

from common import SHARED, analyzer, machine, parse

warnings.filterwarnings("ignore")
FRAME = (1280, 720)
SIZES = (16, 20, 24, 32, 40, 48, 64, 96)  # px: the face box's width in the frame
SIDES = (640, 960, 1280)


def faces(count: int, detector) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Photos with exactly one face found at full size, and that face's box."""
    found = []
    for folder in sorted(p for p in (SHARED / "lfw-calib" / "people").iterdir() if p.is_dir()):
        photo = cv2.imread(str(min(folder.iterdir())))
        if photo is None:
            continue
        boxes = detector.detect(photo)
        if len(boxes) == 1:
            found.append((photo, np.asarray(boxes[0].box[:4], np.float32)))
        if len(found) == count:
            break
    return found


def grid(samples, face_px: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """One frame with as many faces of ``face_px`` as fit, and their true boxes."""
    frame = np.full((FRAME[1], FRAME[0], 3), 90, np.uint8)
    truth = []
    x = y = 0
    for photo, box in samples:
        scale = face_px / float(box[2] - box[0])
        tile = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = tile.shape[:2]
        if x + w > FRAME[0]:
            x, y = 0, y + h
        if y + h > FRAME[1]:
            break
        frame[y:y + h, x:x + w] = tile
        truth.append(box * scale + np.array([x, y, x, y], np.float32))
        x += w
    return frame, truth


def main() -> None:
    from jetkiosk.edge.faces.tracker import iou_matrix

    args = parse(argparse.ArgumentParser(description=__doc__.split("\n")[0]),
                 "sizes 24 and 64, 20 photos")
    sizes = (24, 64) if args.quick else SIZES
    samples = faces(20 if args.quick else 400, analyzer().detector)
    frames = [grid(samples, px) for px in sizes]
    print(f"# {len(samples)} lfw-calib faces, {FRAME[0]}x{FRAME[1]} frames, {machine()}")
    print("face width px  " + "".join(f"{s:>7d}" for s in sizes) + "   ms/frame")
    for side in SIDES:
        detector = analyzer(f"detector.max_side={side}").detector
        recalls, seconds = [], 0.0
        for frame, truth in frames:
            start = time.perf_counter()
            found = [np.asarray(d.box[:4], np.float32) for d in detector.detect(frame)]
            seconds += time.perf_counter() - start
            hit = int((iou_matrix(np.stack(truth), np.stack(found)) >= 0.4).any(axis=1).sum()
                      ) if found else 0
            recalls.append(hit / max(1, len(truth)))
        print(f"max_side {side:4d}  " + "".join(f"{r:7.2f}" for r in recalls)
              + f"   {1000 * seconds / len(frames):8.1f}")


if __name__ == "__main__":
    main()

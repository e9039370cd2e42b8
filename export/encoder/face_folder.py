"""A training or evaluation folder of faces: one subfolder per identity, two photos or more each.

Faces are detected by the runtime's own detector and aligned by the runtime's own
``Aligner`` with the encoder manifest's template, so training sees what inference sees.
Detection runs once; the detections are kept (and can be saved as JSON), so the same faces
can be aligned for encoders of any input size. For training, faces are aligned onto a
*canvas*: the crop plus ``pad`` pixels on every side, so random crops jitter the alignment
while the centre crop is the runtime's crop, pixel for pixel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from jetkiosk.edge.core.errors import ImageError, JetkioskError
from jetkiosk.edge.core.images import IMAGE_SUFFIXES, load_photo
from jetkiosk.edge.faces.align import Aligner
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.detector import FaceDetector

log = logging.getLogger(__name__)


def canvas_preprocess(preprocess: Dict[str, Any], pad: int) -> Dict[str, Any]:
    """The encoder's preprocessing, widened by ``pad`` pixels on each side."""
    width, height = preprocess["size"]
    align = dict(preprocess["align"])
    if align.get("method") != "similarity":
        raise JetkioskError("training needs 5-point similarity alignment in the manifest")
    align["template"] = [[x + pad, y + pad] for x, y in align["template"]]
    return {**preprocess, "size": [width + 2 * pad, height + 2 * pad], "align": align}


@dataclass
class FaceFolder:
    """The largest face of every usable photo: file, identity label, box and landmarks."""

    files: List[str]
    labels: np.ndarray  # identity index per face, into ``identities``
    identities: List[str]
    boxes: np.ndarray  # N x 4
    landmarks: np.ndarray  # N x 5 x 2

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, identities: Sequence[str]) -> FaceFolder:
        """Only these identities (a split by subject), relabelled 0..n-1 in the given order."""
        missing = sorted(set(identities) - set(self.identities))
        if missing:
            raise JetkioskError(f"identities not in the folder: {missing[:5]}")
        order = [self.identities.index(i) for i in identities]
        mask = np.isin(self.labels, order)
        relabel = np.full(len(self.identities), -1)
        relabel[order] = np.arange(len(order))
        return FaceFolder([f for f, m in zip(self.files, mask) if m], relabel[self.labels[mask]],
                          list(identities), self.boxes[mask], self.landmarks[mask])

    def align(self, preprocess: Dict[str, Any], pad: int = 0) -> np.ndarray:
        """Every face aligned as ``preprocess`` says, plus ``pad`` px a side (N x H x W x 3)."""
        aligner = Aligner(canvas_preprocess(preprocess, pad) if pad else preprocess)
        return np.stack([aligner(load_photo(Path(f)), Detection(b, 1.0, lm))
                         for f, b, lm in zip(self.files, self.boxes, self.landmarks)])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({
            "identities": self.identities, "files": self.files, "labels": self.labels.tolist(),
            "boxes": self.boxes.tolist(), "landmarks": self.landmarks.tolist()}))

    @classmethod
    def load(cls, path: Path) -> FaceFolder:
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["files"], np.array(data["labels"], np.int64), data["identities"],
                       np.array(data["boxes"], np.float32).reshape(-1, 4),
                       np.array(data["landmarks"], np.float32).reshape(-1, 5, 2))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JetkioskError(f"{path}: not a saved face folder ({exc})") from exc


def identity_folders(root: Path) -> Dict[str, List[Path]]:
    """``root/<identity>/<photo>`` -> photos per identity; a clear error when the layout is off."""
    root = Path(root)
    if not root.is_dir():
        raise JetkioskError(f"{root}: no such folder (expected one subfolder per identity)")
    people = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
              for d in sorted(root.iterdir()) if d.is_dir()}
    people = {name: photos for name, photos in people.items() if photos}
    if len(people) < 2:
        raise JetkioskError(f"{root}: found {len(people)} identity folders with photos; "
                            "need at least 2 (one subfolder per identity)")
    return people


def _largest(detections: List[Detection]) -> Detection:
    return max(detections, key=lambda d: d.width * d.height)


def detect_face_folder(root: Path, detector: FaceDetector,
                       progress: Optional[Callable[[int, int], None]] = None) -> FaceFolder:
    """Detect the largest face of every photo under ``root``.

    Photos without a face and unreadable files are skipped with a warning, and so are
    identities left with fewer than two faces; fewer than two identities left is an error.
    """
    people = identity_folders(root)
    total = sum(len(v) for v in people.values())
    files: List[str] = []
    labels: List[int] = []
    identities: List[str] = []
    found: List[Detection] = []
    done = 0
    for name, photos in people.items():
        faces = []
        for photo in photos:
            done += 1
            if progress:
                progress(done, total)
            try:
                detections = detector.detect(load_photo(photo))
            except ImageError as exc:
                log.warning("skipped %s", exc)
                continue
            if not detections:
                log.warning("skipped %s: no face found", photo)
                continue
            faces.append((str(photo), _largest(detections)))
        if len(faces) < 2:
            log.warning("skipped identity %s: %d usable photos, need 2", name, len(faces))
            continue
        for file, detection in faces:
            files.append(file)
            labels.append(len(identities))
            found.append(detection)
        identities.append(name)
    if len(identities) < 2:
        raise JetkioskError(f"{root}: only {len(identities)} identities have two usable faces")
    return FaceFolder(files, np.array(labels, np.int64), identities,
                      np.stack([d.box for d in found]).astype(np.float32),
                      np.stack([d.landmarks for d in found]).astype(np.float32))

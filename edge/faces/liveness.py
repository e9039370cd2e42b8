"""Passive liveness: is a detected face a live person or a photo/screen of one?

Two MiniFASNet anti-spoofing networks look at the face at two scales (the box scaled 2.7x and
4.0x about its centre, as their manifests say); the softmax outputs of both are summed, as
upstream does, and the live score is the live class's sum / 2, in [0, 1].
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from ..core.config import Config
from ..core.errors import ModelError
from ..runtime.backend import Backend, load_backend
from .detection import Detection

LIVENESS_MODELS = ("minifasnet-v2", "minifasnet-v1se")
TASK = "face-liveness"


def scaled_box(box: np.ndarray, scale: float, width: int, height: int,
               ) -> Tuple[int, int, int, int]:
    """Upstream's CropImage box: ``box`` (x1, y1, x2, y2) scaled about its centre (less when
    the frame is too small), shifted back inside the frame; inclusive pixel corners."""
    x, y = float(box[0]), float(box[1])
    w, h = max(float(box[2]) - x, 1.0), max(float(box[3]) - y, 1.0)
    scale = min((height - 1) / h, (width - 1) / w, scale)
    cx, cy = x + w / 2, y + h / 2
    left, top = cx - w * scale / 2, cy - h * scale / 2
    right, bottom = cx + w * scale / 2, cy + h * scale / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), float(width - 1)
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), float(height - 1)
    return int(left), int(top), int(right), int(bottom)


def liveness_crop(frame: np.ndarray, box: np.ndarray, scale: float, size: Tuple[int, int],
                  ) -> np.ndarray:
    """The BGR crop one liveness model sees: ``scaled_box`` of ``box``, resized to ``size``
    (width, height) bilinearly."""
    left, top, right, bottom = scaled_box(box, scale, frame.shape[1], frame.shape[0])
    return cv2.resize(frame[top:bottom + 1, left:right + 1], size)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of N x classes logits."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class LivenessCheck:
    """Live scores for the faces of a frame from several anti-spoofing models, each run once
    per frame on a batch of all faces' crops."""

    def __init__(self, backends: Sequence[Backend]):
        if not backends:
            raise ModelError("liveness: no models")
        for backend in backends:
            manifest = backend.manifest
            pre, post = manifest.preprocess, manifest.postprocess
            if (manifest.task != TASK or pre.get("crop", {}).get("method") != "box-scale"
                    or pre.get("color") != "BGR" or "live_class" not in post):
                raise ModelError(f"{manifest.path}: not a box-scale BGR {TASK} model")
        self.backends = list(backends)

    @classmethod
    def load(cls, config: Config, names: Sequence[str] = LIVENESS_MODELS) -> LivenessCheck:
        """The models ``names`` from the models directory, on the configured backend."""
        from .analyzer import model_manifest  # the analyzer loads this check

        return cls([load_backend(config.models.backend, model_manifest(config, name, TASK),
                                 config) for name in names])

    @staticmethod
    def blob(frame: np.ndarray, detections: Sequence[Detection], backend: Backend) -> np.ndarray:
        """The NCHW float32 batch ``backend`` takes for ``detections`` in a BGR frame."""
        pre = backend.manifest.preprocess
        size = (int(pre["size"][1]), int(pre["size"][0]))
        crops = np.stack([liveness_crop(frame, d.box, float(pre["crop"]["scale"]), size)
                          for d in detections]).astype(np.float32)
        mean = np.asarray(pre["mean"], np.float32)
        std = np.asarray(pre["std"], np.float32)
        return np.ascontiguousarray(((crops - mean) / std).transpose(0, 3, 1, 2))

    def scores(self, frame: np.ndarray, detections: Sequence[Detection]) -> List[float]:
        """The live score in [0, 1] of each detection, in order."""
        if not detections:
            return []
        live = np.zeros(len(detections), np.float64)
        for backend in self.backends:
            manifest = backend.manifest
            out = backend.run({manifest.inputs[0].name: self.blob(frame, detections, backend)})
            probs = softmax(out[manifest.postprocess["output"]].astype(np.float64))
            live += probs[:, int(manifest.postprocess["live_class"])]
        return (live / len(self.backends)).tolist()

    def close(self) -> None:
        """Release every model."""
        for backend in self.backends:
            backend.close()

"""Face detector with five landmarks (RetinaFace), fed and decoded as its manifest says."""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..core.errors import ModelError
from ..runtime.backend import Backend
from .detection import Detection


class FaceDetector:
    """Detects faces in a BGR frame; the frame is scaled so its long side is ``max_side``."""

    def __init__(self, backend: Backend, score_threshold: float = 0.8, nms_threshold: float = 0.4,
                 max_side: int = 640):
        manifest = backend.manifest
        if manifest.postprocess.get("decoder") != "retinaface":
            raise ModelError(f"{manifest.name}: unsupported detector decoder "
                             f"{manifest.postprocess.get('decoder')!r}")
        self.backend = backend
        self.pre = manifest.preprocess
        self.post = manifest.postprocess
        self.input_name = manifest.inputs[0].name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self._anchors: Dict[Tuple[int, int], np.ndarray] = {}
        std = set(self.pre["std"])
        if len(std) != 1:
            raise ModelError(f"{manifest.name}: per-channel std is not supported for detectors")
        self._std = float(std.pop())
        mean = self.pre["mean"]  # in the model's colour order; blobFromImage wants BGR
        self._mean_bgr = tuple(mean[::-1] if self.pre["color"] == "RGB" else mean)

    def _prepare(self, frame: np.ndarray) -> Tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                               interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)
        m = int(self.pre.get("pad_multiple", 1))
        rh, rw = frame.shape[:2]
        # Pad with the mean colour so padding is zero after normalisation.
        frame = cv2.copyMakeBorder(frame, 0, -rh % m, 0, -rw % m, cv2.BORDER_CONSTANT,
                                   value=self._mean_bgr)
        blob = cv2.dnn.blobFromImage(frame, 1.0 / self._std, mean=self._mean_bgr,
                                     swapRB=self.pre["color"] == "RGB")
        return blob, scale

    def _priors(self, height: int, width: int) -> np.ndarray:
        """Anchor centres and sizes (cx, cy, w, h) in input pixels, cached per input size."""
        key = (height, width)
        if key not in self._anchors:
            parts = []
            for stride, sizes in zip(self.post["strides"], self.post["anchor_sizes"]):
                ny, nx = math.ceil(height / stride), math.ceil(width / stride)
                ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
                centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
                centres = (centres + 0.5) * stride
                wh = np.asarray(sizes, np.float32)[:, None].repeat(2, 1)
                cell = np.concatenate([centres.repeat(len(sizes), 0),
                                       np.tile(wh, (len(centres), 1))], 1)
                parts.append(cell)
            self._anchors[key] = np.concatenate(parts)
        return self._anchors[key]

    def detect(self, frame: np.ndarray) -> List[Detection]:
        """Faces in one BGR uint8 frame, highest score first. One frame per run, also with
        several cameras: on the CPU two 640x360 frames in one batch ran 0.8x as fast as one
        after the other (bench/cameras.py), and TensorRT detector engines take one image."""
        blob, scale = self._prepare(frame)
        out = self.backend.run({self.input_name: blob})
        loc, conf, lmk = (out[self.post["outputs"][k]][0] for k in ("boxes", "scores",
                                                                     "landmarks"))
        return self._decode(loc, conf, lmk, self._priors(blob.shape[2], blob.shape[3]), scale)

    def _decode(self, loc: np.ndarray, conf: np.ndarray, lmk: np.ndarray, priors: np.ndarray,
                scale: float) -> List[Detection]:
        """One image's raw outputs -> detections in frame pixels, after NMS."""
        if len(priors) != len(loc):
            raise ModelError(f"detector produced {len(loc)} boxes for {len(priors)} anchors")
        keep = np.where(conf[:, 1] > self.score_threshold)[0]
        if keep.size == 0:
            return []
        v0, v1 = self.post["variances"]
        p, loc, lmk, scores = priors[keep], loc[keep], lmk[keep], conf[keep, 1]
        centre = p[:, :2] + loc[:, :2] * v0 * p[:, 2:]
        size = p[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
        points = p[:, None, :2] + lmk.reshape(-1, 5, 2) * v0 * p[:, None, 2:]
        xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
        kept = cv2.dnn.NMSBoxes(xywh, scores.tolist(), self.score_threshold, self.nms_threshold)
        chosen = np.asarray(kept, dtype=int).reshape(-1)
        return [Detection(boxes[i] / scale, float(scores[i]), points[i] / scale) for i in chosen]

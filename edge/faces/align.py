"""Face alignment: 5-point similarity transform onto a template, or a margin crop.

The method and its constants come from the encoder's manifest (``preprocess.align``).
"""

from __future__ import annotations

from typing import Any, Dict

import cv2
import numpy as np

from ..core.errors import ModelError
from .detection import Detection


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) taking ``src`` points onto ``dst``."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


class Aligner:
    """Cuts the encoder's input crop for a detection out of a BGR frame."""

    def __init__(self, preprocess: Dict[str, Any]):
        align = preprocess.get("align", {})
        self.width, self.height = preprocess["size"]
        self.method = align.get("method")
        if self.method == "similarity":
            self.template = np.asarray(align["template"], np.float64)
            if self.template.shape != (5, 2):
                raise ModelError("align.template must be 5 points (x, y)")
        elif self.method == "margin":
            self.margin = float(align["margin"])
        else:
            raise ModelError(f"unknown alignment method {self.method!r}")

    def matrix(self, detection: Detection) -> np.ndarray:
        """The 2x3 affine matrix from frame to crop."""
        if self.method == "similarity":
            return similarity_transform(detection.landmarks.astype(np.float64), self.template)
        x1, y1, x2, y2 = detection.box
        pad_x, pad_y = self.margin * (x2 - x1), self.margin * (y2 - y1)
        sx = self.width / (x2 - x1 + 2 * pad_x)
        sy = self.height / (y2 - y1 + 2 * pad_y)
        return np.array([[sx, 0, -(x1 - pad_x) * sx], [0, sy, -(y1 - pad_y) * sy]])

    def __call__(self, frame: np.ndarray, detection: Detection) -> np.ndarray:
        return cv2.warpAffine(frame, self.matrix(detection), (self.width, self.height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

"""A detected face: box, score and the five landmarks, in frame pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detection:
    """One face. ``box`` is x1, y1, x2, y2; ``landmarks`` is 5x2 (eyes, nose, mouth corners)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def as_dict(self) -> dict:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(self.score, 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
        }

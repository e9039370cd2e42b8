"""Quality gate between detection and encoding: every rejection has a reason."""

from __future__ import annotations

import logging
import math
from typing import Optional

import cv2
import numpy as np

from ..core.config import QualityConfig
from .detection import Detection

log = logging.getLogger(__name__)


class QualityGate:
    """Rejects faces too small, too blurred or with implausible landmarks."""

    def __init__(self, config: QualityConfig):
        self.config = config

    def check_detection(self, det: Detection) -> Optional[str]:
        """Reason to reject before alignment, or None."""
        size = min(det.width, det.height)
        if size < self.config.min_face:
            return f"too small ({size:.0f}px < {self.config.min_face}px)"
        (lx, ly), (rx, ry), (_nx, ny), (_mlx, mly), (_mrx, mry) = det.landmarks
        eye_dist = math.hypot(rx - lx, ry - ly)
        if not 0.15 * det.width < eye_dist < 0.9 * det.width:
            return f"implausible landmarks (eye distance {eye_dist:.0f}px, box {det.width:.0f}px)"
        roll = math.degrees(math.atan2(ry - ly, rx - lx))
        if abs(roll) > self.config.max_roll:
            return f"head roll {roll:.0f} deg beyond {self.config.max_roll:.0f}"
        if not (max(ly, ry) < max(mly, mry) and min(ly, ry) < ny):
            return "implausible landmarks (eyes not above nose and mouth)"
        return None

    def check_crop(self, crop: np.ndarray) -> Optional[str]:
        """Reason to reject the aligned crop (blur), or None."""
        sharpness = cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
        if sharpness < self.config.min_sharpness:
            return f"too blurred (sharpness {sharpness:.1f} < {self.config.min_sharpness})"
        return None

"""Flicker control: motion-gated temporal smoothing of stylized frames.

Feed-forward style networks amplify sensor noise into shimmer: a static scene comes out
different on every frame. Where the input did not change since the previous frame, the
output keeps ``strength`` of the previous output; where it moved by more than ``motion``
grey levels, the new stylization passes through, so moving things do not smear.
bench/stylize.py measures the effect (mean absolute difference of consecutive frames).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


class FlickerFilter:
    def __init__(self, strength: float = 0.6, motion: float = 12.0):
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"flicker strength must be in [0, 1), got {strength}")
        if motion <= 0:
            raise ValueError(f"flicker motion threshold must be positive, got {motion}")
        self.strength = strength
        self.motion = motion
        self._previous_in: Optional[np.ndarray] = None
        self._previous_out: Optional[np.ndarray] = None

    def reset(self) -> None:
        """Forget the history (a new style, or a new frame size)."""
        self._previous_in = self._previous_out = None

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """``frame``: the network's input (BGR uint8); ``stylized``: its output, same size."""
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
        previous_in, previous_out = self._previous_in, self._previous_out
        self._previous_in = grey
        if previous_in is None or previous_out is None or previous_in.shape != grey.shape:
            self._previous_out = stylized.astype(np.float32)
            return stylized
        change = cv2.blur(cv2.absdiff(grey, previous_in), (5, 5))
        keep = self.strength * np.clip(1.0 - change / self.motion, 0.0, 1.0)
        out = stylized + keep[..., None] * (previous_out - stylized)
        self._previous_out = out
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

"""Faces kept recognisable in the stylized frame (``kiosk.face_keep``).

Style networks paint over who someone is. With the face path on, each face box the tracker
holds gets the camera's own face blended back into the stylized frame under a soft
(feathered) elliptical mask: the luminance only, by default, so the face keeps its
structure (eyes, nose, mouth, shading) and the style's colours, and still looks painted.
``bench/style_faces.py`` measures how much identity each strength keeps.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

MODES = ("luma", "alpha")
# The ellipse over a face box: semi-axes as fractions of the box's width and height at full
# strength, then a smooth fall to nothing over FEATHER times that.
AXES = (0.6, 0.65)
FEATHER = 0.35


def ellipse_mask(width: int, height: int, centre: Tuple[float, float],
                 axes: Tuple[float, float]) -> np.ndarray:
    """A ``height`` x ``width`` float32 mask: 1 inside the ellipse (``centre``, semi-axes
    ``axes``, pixels), smoothly down to 0 at ``1 + FEATHER`` times its size."""
    xs = (np.arange(width, dtype=np.float32) + 0.5 - centre[0]) / axes[0]
    ys = (np.arange(height, dtype=np.float32) + 0.5 - centre[1]) / axes[1]
    r = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    t = np.clip((1.0 + FEATHER - r) / FEATHER, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)  # smoothstep


def keep_faces(styled: np.ndarray, frame: np.ndarray, boxes: Sequence[Sequence[float]],
               source: Tuple[int, int], strength: float, mode: str = "luma") -> np.ndarray:
    """``styled`` (BGR uint8, any size) with each face of ``frame`` (the camera's BGR frame it
    was made from) blended back in place under a feathered ellipse per box, and returned.

    ``boxes``: x1, y1, x2, y2 in a ``source`` (width, height) frame (the face path's);
    ``strength`` 0..1: how much of the original comes back at the ellipse's centre (0: none);
    ``mode``: ``luma`` the original's luminance with the style's colours, ``alpha`` the
    original's pixels. Boxes partly outside the frame are cut; outside every ellipse's
    feather ``styled`` is untouched."""
    if mode not in MODES:
        raise ValueError(f"face_keep mode must be one of {MODES}, got {mode!r}")
    if strength <= 0.0 or not len(boxes):
        return styled
    height, width = styled.shape[:2]
    sx, sy = width / source[0], height / source[1]
    fx, fy = frame.shape[1] / width, frame.shape[0] / height
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        cx, cy = (x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy
        ax, ay = AXES[0] * (x2 - x1) * sx, AXES[1] * (y2 - y1) * sy
        if ax < 1 or ay < 1:
            continue
        reach_x, reach_y = ax * (1 + FEATHER), ay * (1 + FEATHER)
        left, top = max(0, int(cx - reach_x)), max(0, int(cy - reach_y))
        right, bottom = min(width, int(np.ceil(cx + reach_x))), min(height,
                                                                    int(np.ceil(cy + reach_y)))
        if right <= left or bottom <= top:
            continue
        w, h = right - left, bottom - top
        # The same region of the camera frame, at the stylized frame's scale.
        ox1, oy1 = int(left * fx), int(top * fy)
        ox2 = min(frame.shape[1], max(ox1 + 1, round(right * fx)))
        oy2 = min(frame.shape[0], max(oy1 + 1, round(bottom * fy)))
        original = cv2.resize(frame[oy1:oy2, ox1:ox2], (w, h), interpolation=cv2.INTER_AREA)
        mask = strength * ellipse_mask(w, h, (cx - left, cy - top), (ax, ay))
        region = styled[top:bottom, left:right]
        if mode == "alpha":
            mixed = region + mask[..., None] * (original.astype(np.float32) - region)
            region[:] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
            continue
        ycc = cv2.cvtColor(region, cv2.COLOR_BGR2YCrCb)
        luma = cv2.cvtColor(original, cv2.COLOR_BGR2GRAY).astype(np.float32)
        y = ycc[..., 0].astype(np.float32)
        ycc[..., 0] = np.clip(y + mask * (luma - y) + 0.5, 0, 255).astype(np.uint8)
        # Only under the mask: a round trip through YCrCb is not exact to the last level.
        np.copyto(region, cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR), where=mask[..., None] > 0)
    return styled

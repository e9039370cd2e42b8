"""Geometric liveness: a photo or a phone screen moves as a plane, a head does not.

One homography explains all five landmarks of a planar face across frames. A real head turning
moves the nose tip off the plane of the eyes and mouth corners (parallax). Each frame's nose is
expressed in the projective frame of its own four anchors (eyes, mouth corners); two frames'
parallax is the distance, in the later frame's eye distances, between its nose and where the
homography of the anchors puts the earlier frame's nose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

ANCHORS = (0, 1, 3, 4)  # left eye, right eye, left mouth corner, right mouth corner
NOSE = 2
# Where the anchors go in the canonical frame (a unit square).
SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
MIN_EYES = 1e-3  # px: closer eyes are no face
MAX_CONDITION = 1e10  # a homography worse conditioned has no usable inverse
SUPPORT = 4  # frames that must each show the parallax with as many others (LandmarkTrack)
# A frame whose nose lies outside the anchors' quadrilateral shrunk by this margin (in the
# canonical square) is no evidence: a face near profile, or cut off, whose landmarks the
# detector guesses and places differently from frame to frame.
NOSE_MARGIN = 0.05


def yaw(landmarks: Any) -> float:
    """How far the head is turned: the nose's horizontal offset from between the eyes over
    the eye distance (0 straight ahead; positive: the nose towards the image's right).
    ``landmarks`` is 5x2."""
    marks = np.asarray(landmarks, np.float64)
    (lx, ly), (rx, ry), (nx, _ny) = marks[:3]
    eyes = math.hypot(rx - lx, ry - ly)
    return float((nx - (lx + rx) / 2) / max(eyes, 1e-6))


def _homography(src: np.ndarray, dst: np.ndarray) -> Optional[np.ndarray]:
    """The 3x3 homography taking the four points ``src`` onto ``dst`` (both convex, in the
    same order); None where there is none (coincident or collinear points, a quadrilateral
    folded or turned inside out)."""
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        return None
    spread = float(np.ptp(dst, axis=0).max())
    if not spread > MIN_EYES or not float(np.ptp(src, axis=0).max()) > 0:
        return None
    h = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return None
    h = h / h[2, 2]
    if np.linalg.cond(h) > MAX_CONDITION:  # collinear points: no inverse
        return None
    mapped = np.c_[src, np.ones(4)] @ h.T
    # Convex onto convex: the whole quadrilateral stays in front (w > 0 at its corners).
    if not np.all(mapped[:, 2] > 1e-9):
        return None
    error = np.abs(mapped[:, :2] / mapped[:, 2:] - dst).max()
    return h if error < 1e-3 * spread else None


def _apply(h: np.ndarray, point: np.ndarray) -> Optional[np.ndarray]:
    """``point`` through homography ``h``; None where it maps to or beyond infinity."""
    x, y, w = h @ np.array([point[0], point[1], 1.0])
    if not (w > 1e-9 and math.isfinite(x) and math.isfinite(y)):
        return None
    return np.array([x / w, y / w])


def _off_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance of the points ``b`` from the best similarity transform of ``a`` onto
    them (rotation, scale, translation), in pixels of ``b`` (over the last two axes)."""
    za = a[..., 0] + 1j * a[..., 1]
    zb = b[..., 0] + 1j * b[..., 1]
    za = za - za.mean(axis=-1, keepdims=True)
    zb = zb - zb.mean(axis=-1, keepdims=True)
    energy = np.sum(np.abs(za) ** 2, axis=-1, keepdims=True)
    scale = np.sum(np.conj(za) * zb, axis=-1, keepdims=True) / np.maximum(energy, 1e-12)
    return np.sqrt(np.mean(np.abs(zb - scale * za) ** 2, axis=-1))


def _eyes(marks: np.ndarray) -> float:
    return float(np.hypot(*(marks[1] - marks[0])))


def parallax(a: np.ndarray, b: np.ndarray) -> Tuple[float, float]:
    """(nose parallax, motion) from landmark set ``a`` to ``b`` (5x2 each, one track).

    Parallax: the distance between b's nose and where the homography taking a's anchors onto
    b's puts a's nose, in b's eye distances. Motion: how far b's anchors are from the best
    similarity transform of a's (the anchors moved as a turned plane), in b's eye distances.
    Degenerate input (NaN, coincident points, a singular homography) gives (0, 0): no
    evidence."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != (5, 2) or b.shape != (5, 2) or not (np.all(np.isfinite(a))
                                                     and np.all(np.isfinite(b))):
        return 0.0, 0.0
    eyes = _eyes(b)
    if eyes < MIN_EYES or _eyes(a) < MIN_EYES:
        return 0.0, 0.0
    anchors = list(ANCHORS)
    h = _homography(a[anchors], b[anchors])
    if h is None:
        return 0.0, 0.0
    nose = _apply(h, a[NOSE])
    if nose is None:
        return 0.0, 0.0
    return (float(np.hypot(*(b[NOSE] - nose)) / eyes),
            float(_off_similarity(a[anchors], b[anchors]) / eyes))


@dataclass(frozen=True)
class Geometry:
    """What a track's landmarks say: ``verdict`` "3d" (moved as a head), "planar" (moved as
    a turned plane, no parallax) or "still" (too little movement out of the image plane to
    tell); the largest ``parallax`` and ``motion`` over the pairs judged; ``frames`` kept."""

    verdict: str
    parallax: float
    motion: float
    frames: int

    def as_dict(self) -> Dict[str, Any]:
        return {"verdict": self.verdict, "parallax": round(self.parallax, 4),
                "motion": round(self.motion, 4), "frames": self.frames}


class LandmarkTrack:
    """The last ``window`` landmark sets of one track, and the geometry they show.

    ``add`` judges the new frame against every frame kept, at once (vectorised: each pair of
    frames is judged once, when its later frame arrives); ``judge`` reads the kept pairs.
    One bad detection (a nose placed off by the detector, another face for a frame) makes
    every pair it is in look 3-D, so a verdict needs ``support`` frames that each show it
    with at least ``support`` others: fewer than ``support`` bad frames cannot make one.
    """

    def __init__(self, window: int, parallax: float, motion: float,
                 support: int = SUPPORT):
        """``parallax``, ``motion``: the thresholds (``liveness.parallax``, ``.motion``)."""
        self.window = n = max(2, int(window))
        self.parallax = parallax
        self.motion = motion
        self.support = max(1, int(support))
        # Each kept frame, by slot (frame number % window): usable, its nose in the canonical
        # square, its anchors (centred, as complex numbers) and their energy.
        self._valid = np.zeros(n, bool)
        self._canonical = np.zeros((n, 2))
        self._anchors = np.zeros((n, 4), complex)
        self._energy = np.ones(n)
        # Parallax and motion of each kept pair, by slot (symmetric; NaN: no pair).
        self._par = np.full((n, n), np.nan)
        self._mot = np.full((n, n), np.nan)
        self._count = 0  # frames added, degenerate ones included

    def add(self, landmarks: np.ndarray) -> None:
        """Keep one frame's 5x2 landmarks (a degenerate set counts as a frame, adds no
        evidence), dropping the oldest beyond the window, and judge it against those kept."""
        slot = self._count % self.window
        self._count += 1
        self._valid[slot] = False
        for m in (self._par, self._mot):
            m[slot, :] = np.nan
            m[:, slot] = np.nan
        frame = _frame(landmarks)
        if frame is None:
            return
        to_frame, canonical, marks, eyes = frame
        anchors = marks[list(ANCHORS)]
        z = anchors[:, 0] + 1j * anchors[:, 1]
        z = z - z.mean()
        kept = np.flatnonzero(self._valid)
        if len(kept):
            # Parallax: each kept nose, through this frame's anchor homography, against
            # this frame's nose.
            points = self._canonical[kept] @ to_frame[:, :2].T + to_frame[:, 2]
            w = points[:, 2]
            ok = w > 1e-9
            off = points[:, :2] / np.where(ok, w, 1.0)[:, None] - marks[NOSE]
            par = np.where(ok, np.hypot(off[:, 0], off[:, 1]) / eyes, 0.0)
            # Motion: this frame's anchors off the best similarity of each kept frame's.
            earlier = self._anchors[kept]
            scale = (earlier.conj() @ z) / self._energy[kept]
            rest = z[None, :] - scale[:, None] * earlier
            mot = np.sqrt(np.mean(rest.real ** 2 + rest.imag ** 2, axis=1)) / eyes
            self._par[slot, kept] = self._par[kept, slot] = np.where(np.isfinite(par), par, 0)
            self._mot[slot, kept] = self._mot[kept, slot] = np.where(np.isfinite(mot), mot, 0)
        self._valid[slot] = True
        self._canonical[slot] = canonical
        self._anchors[slot] = z
        self._energy[slot] = max(float(np.sum(z.real ** 2 + z.imag ** 2)), 1e-12)

    def judge(self) -> Geometry:
        """"3d" when nose parallax above the threshold is supported (see the class); "planar"
        when, without it, the anchors moved as a turned plane (motion above its threshold,
        as supported); "still" otherwise. The parallax and motion given are those supported:
        the largest values that ``support`` frames each show with ``support`` others."""
        frames = min(self._count, self.window)
        par, mot = _supported(self._par, self.support), _supported(self._mot, self.support)
        if par > self.parallax:
            verdict = "3d"
        elif mot > self.motion:
            verdict = "planar"
        else:
            verdict = "still"
        return Geometry(verdict, par, mot, frames)


def _supported(pairs: np.ndarray, support: int) -> float:
    """The largest value v such that ``support`` frames each have ``support`` pairs >= v."""
    if support >= len(pairs):
        return 0.0
    values = np.where(np.isnan(pairs), 0.0, pairs)
    per_frame = np.partition(values, -support, axis=1)[:, -support]
    return float(np.partition(per_frame, -support)[-support])


def _frame(landmarks: Any) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """One frame's (homography from the canonical square onto its anchors, its nose in the
    square, the landmarks, the eye distance); None for a degenerate or unusable set."""
    marks = np.asarray(landmarks, np.float64)
    if marks.shape != (5, 2) or not np.all(np.isfinite(marks)):
        return None
    eyes = _eyes(marks)
    if eyes < MIN_EYES:
        return None
    to_frame = _homography(SQUARE, marks[list(ANCHORS)])
    if to_frame is None:
        return None
    try:
        canonical = _apply(np.linalg.inv(to_frame), marks[NOSE])
    except np.linalg.LinAlgError:
        return None
    if canonical is None or not np.all((canonical >= NOSE_MARGIN)
                                       & (canonical <= 1 - NOSE_MARGIN)):
        return None
    return to_frame, canonical, marks, eyes

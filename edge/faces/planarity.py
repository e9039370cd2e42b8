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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ANCHORS = (0, 1, 3, 4)  # left eye, right eye, left mouth corner, right mouth corner
NOSE = 2
# Where the anchors go in the canonical frame (a unit square).
SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
MIN_EYES = 1e-3  # px: closer eyes are no face
MAX_ENTRY = 1e4  # a normalised homography with larger entries (or 1/det) is singular
SUPPORT = 3  # frames that must each show the parallax with as many others (LandmarkTrack)


def yaw(landmarks: Any) -> float:
    """How far the head is turned: the nose's horizontal offset from between the eyes over
    the eye distance (0 straight ahead; positive: the nose towards the image's right).
    ``landmarks`` is 5x2 (a Detection is taken too, for its ``landmarks``)."""
    marks = np.asarray(getattr(landmarks, "landmarks", landmarks), np.float64)
    (lx, ly), (rx, ry), (nx, _ny) = marks[:3]
    eyes = math.hypot(rx - lx, ry - ly)
    return float((nx - (lx + rx) / 2) / max(eyes, 1e-6))


def _normaliser(points: np.ndarray) -> Optional[np.ndarray]:
    """The similarity moving ``points`` to mean 0 and mean distance sqrt(2) (Hartley)."""
    centre = points.mean(axis=0)
    spread = float(np.mean(np.hypot(*(points - centre).T)))
    if not spread > 1e-9:
        return None
    k = math.sqrt(2) / spread
    return np.array([[k, 0, -k * centre[0]], [0, k, -k * centre[1]], [0, 0, 1]])


def _homography(src: np.ndarray, dst: np.ndarray) -> Optional[np.ndarray]:
    """The 3x3 homography taking the four points ``src`` onto ``dst``; None if singular."""
    ns, nd = _normaliser(src), _normaliser(dst)
    if ns is None or nd is None:
        return None
    x, y = (src @ ns[:2, :2].T + ns[:2, 2]).T
    u, v = (dst @ nd[:2, :2].T + nd[:2, 2]).T
    a = np.zeros((8, 8))
    a[0::2, 0], a[0::2, 1], a[0::2, 2] = x, y, 1
    a[1::2, 3], a[1::2, 4], a[1::2, 5] = x, y, 1
    a[0::2, 6], a[0::2, 7] = -x * u, -y * u
    a[1::2, 6], a[1::2, 7] = -x * v, -y * v
    rhs = np.empty(8)
    rhs[0::2], rhs[1::2] = u, v
    try:
        h = np.append(np.linalg.solve(a, rhs), 1.0).reshape(3, 3)
    except np.linalg.LinAlgError:
        return None
    # Normalised, a usable homography is of order 1; near-singular systems blow up.
    if not (np.all(np.isfinite(h)) and np.abs(h).max() < MAX_ENTRY
            and abs(np.linalg.det(h)) > 1 / MAX_ENTRY):
        return None
    return np.linalg.inv(nd) @ h @ ns


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


@dataclass
class _Frame:
    marks: np.ndarray  # 5x2
    to_frame: np.ndarray  # 3x3: the canonical square onto this frame's anchors
    canonical: np.ndarray  # the nose in the canonical frame
    eyes: float


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
        self.window = max(2, int(window))
        self.parallax = parallax
        self.motion = motion
        self.support = max(1, int(support))
        self._frames: List[Optional[_Frame]] = [None] * self.window  # by index % window
        # Parallax and motion of each kept pair, by slot (symmetric; NaN: no pair).
        self._par = np.full((self.window, self.window), np.nan)
        self._mot = np.full((self.window, self.window), np.nan)
        self._count = 0  # frames added, degenerate ones included

    def add(self, landmarks: np.ndarray) -> None:
        """Keep one frame's 5x2 landmarks (a degenerate set counts as a frame, adds no
        evidence), dropping the oldest beyond the window, and judge it against those kept."""
        slot = self._count % self.window
        self._count += 1
        for m in (self._par, self._mot):
            m[slot, :] = np.nan
            m[:, slot] = np.nan
        frame = _frame(landmarks)
        self._frames[slot] = frame
        if frame is None:
            return
        kept = [(i, f) for i, f in enumerate(self._frames) if f is not None and i != slot]
        if kept:
            par, mot = _pairs_with([f for _, f in kept], frame)
            slots = [i for i, _ in kept]
            self._par[slot, slots] = self._par[slots, slot] = par
            self._mot[slot, slots] = self._mot[slots, slot] = mot

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


def _frame(landmarks: Any) -> Optional[_Frame]:
    """One frame's cached geometry; None for a degenerate landmark set."""
    marks = np.asarray(landmarks, np.float64)
    if marks.shape != (5, 2) or not np.all(np.isfinite(marks)):
        return None
    eyes = _eyes(marks)
    if eyes < MIN_EYES:
        return None
    anchors = marks[list(ANCHORS)]
    to_frame = _homography(SQUARE, anchors)
    if to_frame is None:
        return None
    canonical = _apply(np.linalg.inv(to_frame), marks[NOSE])
    if canonical is None:
        return None
    return _Frame(marks, to_frame, canonical, eyes)


def _pairs_with(frames: List[_Frame], new: _Frame) -> Tuple[np.ndarray, np.ndarray]:
    """(parallax, motion) of each kept frame with ``new``: the earlier nose, through the
    new frame's anchor homography, against the new nose."""
    canon = np.array([f.canonical for f in frames])  # n x 2
    points = np.c_[canon, np.ones(len(canon))] @ new.to_frame.T
    w = points[:, 2]
    ok = w > 1e-9
    predicted = points[:, :2] / np.where(ok, w, 1.0)[:, None]
    par = np.hypot(*(predicted - new.marks[NOSE]).T) / new.eyes
    par = np.where(ok & np.isfinite(par), par, 0.0)
    anchors = list(ANCHORS)
    earlier = np.array([f.marks[anchors] for f in frames])  # n x 4 x 2
    mot = _off_similarity(earlier, np.broadcast_to(new.marks[anchors], earlier.shape))
    mot = np.where(np.isfinite(mot), mot / new.eyes, 0.0)
    return par, mot

"""Tracks faces across frames and decides per track by a vote over several frames.

A track announces its decision once the vote settles, again only when it changes, and
once more when the track ends: never an event per frame.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

import numpy as np

from .config import TrackerConfig

UNKNOWN = ""  # vote label for "not in the gallery"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4) with every box in ``b`` (M x 4)."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


@dataclass
class Observation:
    """What the face path and matcher said about one face in one frame."""

    box: np.ndarray
    label: Optional[str]  # person name, UNKNOWN, or None (rejected by the quality gate)
    distance: float
    threshold: float
    score: float


@dataclass
class Track:
    track_id: int
    box: np.ndarray
    votes: Deque[Tuple[str, float, float]] = field(default_factory=deque)
    announced: Optional[str] = None  # label last announced
    missed: int = 0
    frames: int = 0
    score: float = 0.0

    def settled(self, needed: int) -> Optional[Tuple[str, float, float]]:
        """The label with at least ``needed`` votes in the window, its median distance, tau."""
        if not self.votes:
            return None
        label, count = Counter(v[0] for v in self.votes).most_common(1)[0]
        return self.summary(label) if count >= needed else None

    def summary(self, label: str) -> Tuple[str, float, float]:
        """``label``, the median distance of its votes and the latest threshold."""
        mine = [v for v in self.votes if v[0] == label] or [(label, float("nan"), float("nan"))]
        return label, float(np.median([v[1] for v in mine])), mine[-1][2]


@dataclass
class TrackEvent:
    kind: str  # new | update | end
    track: Track
    label: str
    distance: float
    threshold: float


class Tracker:
    """Greedy IoU association; votes over a sliding window of frames."""

    def __init__(self, config: TrackerConfig):
        self.config = config
        self.tracks: List[Track] = []
        self._next_id = 1

    def update(self, observations: List[Observation]) -> List[TrackEvent]:
        events: List[TrackEvent] = []
        unmatched = list(range(len(observations)))
        live: Dict[int, Track] = {}
        if self.tracks and observations:
            ious = iou_matrix(np.stack([t.box for t in self.tracks]),
                              np.stack([o.box for o in observations]))
            for _ in range(min(ious.shape)):
                ti, oi = np.unravel_index(np.argmax(ious), ious.shape)
                if ious[ti, oi] < self.config.iou:
                    break
                live[int(oi)] = self.tracks[ti]
                ious[ti, :] = -1
                ious[:, oi] = -1
            unmatched = [i for i in unmatched if i not in live]
        for i in unmatched:
            track = Track(self._next_id, observations[i].box)
            self._next_id += 1
            self.tracks.append(track)
            live[i] = track
        for i, track in live.items():
            obs = observations[i]
            track.box, track.missed, track.score = obs.box, 0, obs.score
            track.frames += 1
            if obs.label is not None:
                track.votes.append((obs.label, obs.distance, obs.threshold))
                while len(track.votes) > self.config.window:
                    track.votes.popleft()
            settled = track.settled(self.config.votes)
            if settled and settled[0] != track.announced:
                kind = "new" if track.announced is None else "update"
                track.announced = settled[0]
                events.append(TrackEvent(kind, track, *settled))
        seen = {id(t) for t in live.values()}
        for track in list(self.tracks):
            if id(track) not in seen:
                track.missed += 1
                if track.missed > self.config.max_missed:
                    events.extend(self._end(track))
        return events

    def _end(self, track: Track) -> List[TrackEvent]:
        self.tracks.remove(track)
        if track.announced is None:
            return []
        return [TrackEvent("end", track, *track.summary(track.announced))]

    def finish(self) -> List[TrackEvent]:
        """End every track (the source ended)."""
        events: List[TrackEvent] = []
        for track in list(self.tracks):
            events.extend(self._end(track))
        return events

"""Tracks faces across frames and decides per track by a vote over several frames.

A track announces its decision once the vote settles, again only when it changes, and
once more when the track ends: never an event per frame.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Deque, Dict, List, Optional, Tuple

import numpy as np

from ..core.config import TrackerConfig

if TYPE_CHECKING:
    from .live_decision import TrackLiveness

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
class Track:
    track_id: int
    box: np.ndarray
    votes: Deque[Tuple[str, float, float]] = field(default_factory=deque)
    announced: Optional[str] = None  # label last announced
    missed: int = 0
    frames: int = 0
    score: float = 0.0
    since_vote: int = 0  # frames since this track's face was last encoded
    live: Optional[TrackLiveness] = None  # liveness evidence (``LivenessPolicy.state``)

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

    def assign(self, boxes: List[np.ndarray], scores: List[float]) -> List[Track]:
        """The track of each detected box (greedy IoU), new tracks for the rest."""
        assigned: Dict[int, Track] = {}
        if self.tracks and boxes:
            ious = iou_matrix(np.stack([t.box for t in self.tracks]), np.stack(boxes))
            for _ in range(min(ious.shape)):
                ti, bi = np.unravel_index(np.argmax(ious), ious.shape)
                if ious[ti, bi] < self.config.iou:
                    break
                assigned[int(bi)] = self.tracks[ti]
                ious[ti, :] = -1
                ious[:, bi] = -1
        for i, box in enumerate(boxes):
            if i not in assigned:
                assigned[i] = Track(self._next_id, box)
                self._next_id += 1
                self.tracks.append(assigned[i])
        out = [assigned[i] for i in range(len(boxes))]
        for track, box, score in zip(out, boxes, scores):
            track.box, track.score, track.missed = box, score, 0
            track.frames += 1
            track.since_vote += 1
        return out

    def vote(self, track: Track, label: str, distance: float, threshold: float,
             ) -> Optional[TrackEvent]:
        """Record one frame's decision; an event when the settled decision changes."""
        track.since_vote = 0
        track.votes.append((label, distance, threshold))
        while len(track.votes) > self.config.window:
            track.votes.popleft()
        settled = track.settled(self.config.votes)
        if settled is None or settled[0] == track.announced:
            return None
        kind = "new" if track.announced is None else "update"
        track.announced = settled[0]
        return TrackEvent(kind, track, *settled)

    def expire(self, seen: List[Track]) -> List[TrackEvent]:
        """Age the tracks not in ``seen``; end those missing too long."""
        live = {id(t) for t in seen}
        events: List[TrackEvent] = []
        for track in list(self.tracks):
            if id(track) not in live:
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

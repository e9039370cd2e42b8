"""Which tracks' faces are encoded in a frame: every track not decided yet, and a share of the
decided ones, so that a crowd lowers the re-encode rate before it lowers the frame rate.

A decided track is re-encoded once every ``stride`` frames: ``tracker.reembed_every``,
stretched (up to ``MAX_STRETCH`` times) while frames take longer than their budget (one
frame of ``run.max_fps``, or of a live source's rate) and shrunk back once they fit. The
decided tracks due are spread over the frames, at most ``ceil(decided / stride)`` per frame,
the longest unencoded first, never all in the frame where they fell due together.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

from .tracker import Track

MAX_STRETCH = 8.0  # a decided track is re-encoded at least every 8 x reembed_every frames
GROW, SHRINK = 1.25, 1.1  # stretch steps when a frame is over, or well under, its budget
UNDER = 0.7  # a frame under this share of its budget lets the stretch shrink


class ReencodeSchedule:
    def __init__(self, every: int):
        """``every``: ``tracker.reembed_every``, the stride with time to spare."""
        self.every = max(1, every)
        self.stretch = 1.0

    @property
    def stride(self) -> float:
        """Frames between two encodings of a decided track, now."""
        return self.every * self.stretch

    def pick(self, tracks: Sequence[Track]) -> List[int]:
        """Indices of ``tracks`` whose face to encode this frame (one batch)."""
        undecided = [i for i, t in enumerate(tracks) if t.announced is None]
        decided = len(tracks) - len(undecided)
        due = sorted((i for i, t in enumerate(tracks)
                      if t.announced is not None and t.since_vote >= self.stride),
                     key=lambda i: (-tracks[i].since_vote, tracks[i].track_id))
        return sorted(undecided + due[:math.ceil(decided / self.stride)])

    def pace(self, seconds: float, budget: Optional[float]) -> None:
        """A frame took ``seconds`` against a ``budget`` (None: no budget, frames are taken
        as fast as they are processed)."""
        if not budget:
            return
        if seconds > budget:
            self.stretch = min(MAX_STRETCH, self.stretch * GROW)
        elif seconds < UNDER * budget:
            self.stretch = max(1.0, self.stretch / SHRINK)

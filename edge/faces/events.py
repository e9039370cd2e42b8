"""Face events: one per track decision (new, update) and one when a track ends."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from .live_decision import LivenessPolicy
from .tracker import UNKNOWN, TrackEvent

SCHEMA_VERSION = 1


@dataclass
class FaceEvent:
    """What subscribers receive; carries no encodings and no pixels."""

    event: str
    track_id: int
    camera: str
    decision: str  # match | unknown | uncertain | spoof | not_verified_live
    name: Optional[str]
    distance: Optional[float]
    threshold: Optional[float]
    box: list
    quality: Dict[str, Any]
    model: Dict[str, str]
    event_id: str = ""
    timestamp: float = 0.0
    rule: str = ""  # why the threshold is what it is
    live: Dict[str, Any] = field(default_factory=dict)  # ``Verdict.as_dict``

    @classmethod
    def from_track(cls, te: TrackEvent, camera: str, model: Dict[str, str],
                   uncertain_margin: float = 0.0, rule: str = "",
                   liveness: Optional[LivenessPolicy] = None) -> FaceEvent:
        """``uncertain`` when the distance lies within ``uncertain_margin`` of the threshold;
        ``liveness``: the track's liveness verdict, and under ``require`` a match that is not
        live published as ``spoof`` or ``not_verified_live``."""
        track = te.track
        decision = "unknown" if te.label == UNKNOWN else "match"
        if abs(te.distance - te.threshold) < uncertain_margin:
            decision = "uncertain"
        live: Dict[str, Any] = {}
        if liveness is not None:
            decision, verdict = liveness.decide(track, te.label, decision,
                                                decision == "match" and te.kind != "end")
            live = verdict.as_dict()
        return cls(
            event=te.kind, track_id=track.track_id, camera=camera, decision=decision,
            name=None if te.label == UNKNOWN else te.label,
            distance=None if math.isnan(te.distance) else round(te.distance, 4),
            threshold=None if math.isnan(te.threshold) else round(te.threshold, 4),
            box=[round(float(v), 1) for v in track.box],
            quality={"score": round(track.score, 4), "frames": track.frames},
            model=model, event_id=uuid.uuid4().hex, timestamp=time.time(), rule=rule,
            live=live)

    def as_dict(self) -> Dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **self.__dict__}

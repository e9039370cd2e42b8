"""Per-interval figures of the capture loop for ``stats``: fps and per-stage latency."""

from __future__ import annotations

import time
from typing import Any, Dict

from ..faces.events import SCHEMA_VERSION
from .loop import CaptureLoop


class Telemetry:
    """Differences of the loop's counters between two snapshots."""

    def __init__(self, loop: CaptureLoop, node: str):
        self.loop = loop
        self.node = node
        self.started = self._last_time = time.monotonic()
        self._last_frames = 0
        self._last_stages: Dict[str, float] = {}

    def snapshot(self, outbox: Dict[str, int]) -> Dict[str, Any]:
        """The ``stats`` payload for the interval since the previous snapshot."""
        now, frames = time.monotonic(), self.loop.frames
        stages = dict(self.loop.stage_seconds)
        done = frames - self._last_frames
        latency = {stage: round(1000 * (seconds - self._last_stages.get(stage, 0.0))
                                / max(done, 1), 2) for stage, seconds in stages.items()}
        fps = done / max(now - self._last_time, 1e-9)
        self._last_time, self._last_frames, self._last_stages = now, frames, stages
        backend = self.loop.analyzer.encoder.backend
        return {"schema": SCHEMA_VERSION, "node": self.node, "timestamp": round(time.time(), 3),
                "uptime": round(now - self.started, 1), "fps": round(fps, 2), "frames": frames,
                "latency_ms": latency, "backend": backend.describe(),
                "precision": backend.precision, "recognition": self.loop.recognition.is_set(),
                "outbox": outbox, "source": self._source(), "gallery": self._gallery(),
                "reencode_every": round(self.loop.schedule.stride, 2)}

    def _gallery(self) -> Dict[str, Any]:
        matcher = self.loop.matcher
        return {"people": len(matcher.names), "threshold": round(float(matcher.default), 4),
                "rule": matcher.rule_for(None)}

    def _source(self) -> Dict[str, Any]:
        source = self.loop.source
        if source is None:
            return {"online": None, "reconnects": 0, "reason": ""}
        return {"online": source.online, "reconnects": source.reconnects,
                "reason": source.reason}

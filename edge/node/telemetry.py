"""Per-interval figures of the capture loop for ``stats``: fps and per-stage latency, for the
node and for each camera."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from ..capture.sources import Source
from ..faces.events import SCHEMA_VERSION
from .loop import CaptureLoop


def source_state(source: Optional[Source]) -> Dict[str, Any]:
    """A source's availability (``online`` None before it is opened), reopenings and why it
    is offline."""
    if source is None:
        return {"online": None, "reconnects": 0, "reason": ""}
    return {"online": source.online, "reconnects": source.reconnects, "reason": source.reason}


def merged_state(states: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Cameras' states (by name) as one: online only when every one is (None when one has
    not opened yet and none is offline), reopenings summed, the reasons (after their
    camera's name when there are several)."""
    online = [s["online"] for s in states.values()]
    reasons = [f"{name}: {s['reason']}" if len(states) > 1 else s["reason"]
               for name, s in states.items() if s["reason"]]
    return {"online": False if False in online else None if None in online else True,
            "reconnects": sum(s["reconnects"] for s in states.values()),
            "reason": "; ".join(reasons)}


class Telemetry:
    """Differences of the loop's counters between two snapshots."""

    def __init__(self, loop: CaptureLoop, node: str):
        self.loop = loop
        self.node = node
        self.started = self._last_time = time.monotonic()
        self._last_ticks = 0
        self._last_frames: Dict[str, int] = {}
        self._last_stages: Dict[str, float] = {}

    def snapshot(self, outbox: Dict[str, int]) -> Dict[str, Any]:
        """The ``stats`` payload for the interval since the previous snapshot: ``fps`` and
        ``frames`` of all cameras, ``latency_ms`` per tick (one frame of each camera with a
        new one), ``source`` and ``reencode_every`` over all cameras (online when all are;
        the most stretched stride), and each camera's own under ``cameras``."""
        loop = self.loop
        now, ticks, stages = time.monotonic(), loop.ticks, dict(loop.stage_seconds)
        seconds = max(now - self._last_time, 1e-9)
        done = ticks - self._last_ticks
        latency = {stage: round(1000 * (total - self._last_stages.get(stage, 0.0))
                                / max(done, 1), 2) for stage, total in stages.items()}
        cameras: Dict[str, Dict[str, Any]] = {c.name: {
            "fps": round((c.frames - self._last_frames.get(c.name, 0)) / seconds, 2),
            "frames": c.frames, "source": source_state(c.source),
            "reencode_every": round(c.schedule.stride, 2)} for c in loop.cameras}
        self._last_time, self._last_ticks, self._last_stages = now, ticks, stages
        self._last_frames = {c.name: c.frames for c in loop.cameras}
        backend = loop.analyzer.encoder.backend
        return {"schema": SCHEMA_VERSION, "node": self.node, "timestamp": round(time.time(), 3),
                "uptime": round(now - self.started, 1),
                "fps": round(sum(c["fps"] for c in cameras.values()), 2),
                "frames": loop.frames, "latency_ms": latency, "backend": backend.describe(),
                "precision": backend.precision, "models": self._models(),
                "recognition": loop.recognition.is_set(),
                "outbox": outbox, "gallery": self._gallery(), "cameras": cameras,
                "source": merged_state({n: c["source"] for n, c in cameras.items()}),
                "reencode_every": max(c["reencode_every"] for c in cameras.values())}

    def _models(self) -> Dict[str, Dict[str, str]]:
        analyzer = self.loop.analyzer
        models = {}
        for role, backend in (("detector", analyzer.detector.backend),
                              ("encoder", analyzer.encoder.backend)):
            models[role] = {"name": backend.manifest.name, "precision": backend.precision,
                            "why": backend.manifest.reason}
        return models

    def _gallery(self) -> Dict[str, Any]:
        matcher = self.loop.matcher
        return {"people": len(matcher.names), "threshold": round(float(matcher.default), 4),
                "rule": matcher.rule_for(None)}

"""Whether a track is a live person: its passive scores, the geometry of its landmarks and,
at a kiosk, a turn challenge, each frame's evidence kept on the track and decided against
``liveness.mode``.

A track is a ``spoof`` once it has ``liveness.frames`` passive scores whose median is below
``liveness.threshold``, or when its passive verdict crossed the threshold more than
``liveness.max_flips`` times (a score that flips is not live). It is ``live`` when its
scores are live, its landmarks have moved as a 3-D head at least once (``liveness.need_3d``)
and a turn challenge, when one is asked, was met; otherwise ``not_verified_live`` (not
enough evidence yet, or the passive check is not loaded). A "planar" geometry is reported
but decides nothing: real faces changing expression look planar too (bench/liveness.py).
Under ``require`` a match that is not live is published with the liveness decision instead
of ``match``.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import numpy as np

from ..core.config import LivenessConfig
from .planarity import Geometry, LandmarkTrack, yaw
from .tracker import Track

LIVE, SPOOF, NOT_VERIFIED = "live", "spoof", "not_verified_live"
MATCH = "match"
SIDES = {"left": 1.0, "right": -1.0}  # the person's own side -> sign of the yaw that follows


@dataclass(frozen=True)
class Verdict:
    """What the liveness checks found for a track or a photo."""

    decision: Optional[str]  # live | spoof | not_verified_live; None: liveness.mode is off
    score: Optional[float]  # the median passive live score; None: no score
    checks: Tuple[str, ...]  # the checks that ran: passive, geometry, challenge
    reason: str
    geometry: Optional[Geometry] = None
    challenge: Optional[Dict[str, Any]] = None  # side, state (asked | passed), seconds left

    def as_dict(self) -> Dict[str, Any]:
        return {"decision": self.decision,
                "score": None if self.score is None else round(self.score, 4),
                "checks": list(self.checks), "reason": self.reason,
                "geometry": None if self.geometry is None else self.geometry.as_dict(),
                "challenge": self.challenge}


OFF = Verdict(None, None, (), "liveness.mode is off")


def passive_verdict(config: LivenessConfig, score: Optional[float]) -> Verdict:
    """What the passive check alone says of one face."""
    if config.mode == "off":
        return OFF
    if score is None:
        return Verdict(NOT_VERIFIED, None, (), "the passive check is not loaded")
    live = score >= config.threshold
    return Verdict(LIVE if live else SPOOF, score, ("passive",),
                   f"live score {score:.3f} {'>=' if live else '<'} {config.threshold}")


def photo_verdict(config: LivenessConfig, score: Optional[float]) -> Verdict:
    """A single photo's verdict: the passive check; one photo shows no head moving, so with
    ``liveness.need_3d`` a live score is not enough."""
    verdict = passive_verdict(config, score)
    if verdict.decision == LIVE and config.need_3d:
        return Verdict(NOT_VERIFIED, score, verdict.checks,
                       f"{verdict.reason}; one photo shows no 3-D head movement "
                       "(liveness.need_3d)")
    return verdict


def gated(config: LivenessConfig, decision: str, verdict: Verdict) -> str:
    """The decision published: under ``require`` a match that is not live becomes the
    liveness decision (spoof or not_verified_live)."""
    if config.mode == "require" and decision == MATCH and verdict.decision != LIVE:
        return verdict.decision or NOT_VERIFIED
    return decision


class TurnChallenge:
    """Asks for a head turn to a random side: met when the yaw has moved at least ``turn``
    that way from where it was when asked and the track has moved as a 3-D head since;
    asked again (a new side) after ``seconds``."""

    def __init__(self, turn: float, seconds: float, clock: Callable[[], float],
                 rng: random.Random):
        self.turn, self.seconds, self.clock, self.rng = turn, seconds, clock, rng
        self.side = ""
        self.start_yaw: Optional[float] = None
        self.deadline = 0.0
        self.passed = False
        self.asked = 0

    def ask(self) -> None:
        self.side = self.rng.choice(sorted(SIDES))
        self.start_yaw, self.deadline = None, self.clock() + self.seconds
        self.asked += 1

    def observe(self, landmarks: np.ndarray, solid: bool) -> None:
        """One frame's landmarks; ``solid``: the track moved as a 3-D head since asked."""
        if self.passed or not self.side:
            return
        if self.clock() > self.deadline:
            self.ask()
        now = yaw(landmarks)
        if not np.isfinite(now):
            return
        if self.start_yaw is None:
            self.start_yaw = now
        elif SIDES[self.side] * (now - self.start_yaw) >= self.turn and solid:
            self.passed = True

    def as_dict(self) -> Dict[str, Any]:
        return {"side": self.side, "state": "passed" if self.passed else "asked",
                "seconds_left": round(max(0.0, self.deadline - self.clock()), 1),
                "asked": self.asked}


class TrackLiveness:
    """One track's liveness evidence: passive scores and landmarks of its last
    ``liveness.window`` frames, the geometry verdicts seen, the challenge."""

    def __init__(self, config: LivenessConfig):
        self.config = config
        self.scores: Deque[float] = deque(maxlen=config.window)
        self.encoded = 0  # faces of the track encoded (``due``)
        self.landmarks = LandmarkTrack(config.window, config.parallax, config.motion)
        self.geometry: Optional[Geometry] = None
        self.moved_3d = False  # the geometry has said "3d" at least once
        self.challenge: Optional[TurnChallenge] = None
        self.solid_since_asked = False
        self.published: Optional[Tuple[str, ...]] = None  # what was last published of it
        self.label: Optional[str] = None  # the track's decision this evidence was gathered for

    def observe(self, landmarks: np.ndarray) -> None:
        """One frame's landmarks of the track's face."""
        self.landmarks.add(landmarks)
        self.geometry = self.landmarks.judge()
        self.moved_3d |= self.geometry.verdict == "3d"
        if self.challenge is not None:
            self.solid_since_asked |= self.geometry.verdict == "3d"
            self.challenge.observe(landmarks, self.solid_since_asked)

    def due(self) -> bool:
        """Is this encoded face of the track to be scored? Each one until the track has
        ``liveness.frames`` scores, then every ``liveness.rescore_every``th."""
        self.encoded += 1
        return (len(self.scores) < self.config.frames
                or self.encoded % self.config.rescore_every == 0)

    def score(self, live: float) -> None:
        """One passive live score of the track's face."""
        self.scores.append(float(live))

    def flips(self) -> int:
        """Times the passive verdict crossed the threshold in the kept scores."""
        sides = [s >= self.config.threshold for s in self.scores]
        return sum(a != b for a, b in zip(sides, sides[1:]))

    def verdict(self, passive: bool) -> Verdict:
        """The track's verdict; ``passive``: the passive check is loaded."""
        c = self.config
        checks = ("passive",) * passive + ("geometry",) + ("challenge",) * (
            self.challenge is not None)
        score = float(np.median(self.scores)) if self.scores else None
        challenge = None if self.challenge is None else self.challenge.as_dict()

        def out(decision: str, reason: str) -> Verdict:
            return Verdict(decision, score, checks, reason, self.geometry, challenge)

        geometry = self.geometry.verdict if self.geometry else "still"
        if self.flips() > c.max_flips:
            return out(SPOOF, f"the live score crossed {c.threshold} {self.flips()} times")
        if score is not None and len(self.scores) >= c.frames and score < c.threshold:
            return out(SPOOF, f"live score {score:.3f} < {c.threshold}")
        if not passive:
            return out(NOT_VERIFIED, "the passive check is not loaded")
        if len(self.scores) < c.frames:
            return out(NOT_VERIFIED, f"{len(self.scores)} of {c.frames} live scores")
        if c.need_3d and not self.moved_3d:
            return out(NOT_VERIFIED, f"live score {score:.3f}, no 3-D head movement seen yet "
                                     f"(geometry {geometry})")
        if self.challenge is not None and not self.challenge.passed:
            return out(NOT_VERIFIED, f"turn {self.challenge.side} asked, not made yet")
        return out(LIVE, f"live score {score:.3f} >= {c.threshold}, geometry "
                         f"{'3d seen' if self.moved_3d else geometry}")


class LivenessPolicy:
    """The liveness settings applied to the tracks of a capture loop. ``challenges``: a
    track that would match is asked to turn (a kiosk with ``liveness.challenge = "turn"``)."""

    def __init__(self, config: LivenessConfig, passive: bool, challenges: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Optional[random.Random] = None):
        self.config = config
        self.passive = passive
        self.challenges = challenges
        self.clock = clock
        self.rng = rng or random.SystemRandom()

    @property
    def on(self) -> bool:
        return self.config.mode != "off"

    def state(self, track: Track) -> TrackLiveness:
        """``track``'s evidence (made on first use)."""
        if track.live is None:
            track.live = TrackLiveness(self.config)
        return track.live

    def verdict(self, track: Track, named: bool) -> Verdict:
        """``track``'s verdict; ``named``: its decision names someone (a challenge is asked
        then, when challenges are on)."""
        if not self.on:
            return OFF
        live = self.state(track)
        if named and self.challenges and live.challenge is None:
            live.challenge = TurnChallenge(self.config.challenge_turn,
                                           self.config.challenge_seconds, self.clock, self.rng)
            live.challenge.ask()
        return live.verdict(self.passive)

    def decide(self, track: Track, label: str, decision: str, named: bool,
               ) -> Tuple[str, Verdict]:
        """The decision to publish for ``track``, now decided as ``label``, and its verdict.
        Evidence belongs to the person it was gathered for: when a track's label changes
        (another face took its place: a live face swapped for a photo) it starts again."""
        if self.on:
            live = self.state(track)
            if live.label is not None and live.label != label:
                track.live = live = TrackLiveness(self.config)
            live.label = label
        verdict = self.verdict(track, named)
        return gated(self.config, decision, verdict), verdict

"""Liveness decisions of a track: passive scores, landmark geometry, the turn challenge, and
what ``liveness.mode`` publishes."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.faces.live_decision import (
    LIVE,
    NOT_VERIFIED,
    OFF,
    SPOOF,
    LivenessPolicy,
    TrackLiveness,
    gated,
    photo_verdict,
)
from jetkiosk.edge.faces.planarity import yaw
from jetkiosk.edge.faces.tracker import Track

# A face's five landmarks in eye distances: eyes, nose tip (in front of the face), mouth
# corners; x to the image's right, y down, z away from the camera.
HEAD = np.array([[-0.5, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.55, -0.6],
                 [-0.4, 1.0, 0.0], [0.4, 1.0, 0.0]])


NOISE = np.random.default_rng(0)


def landmarks(turn: float, planar: bool = False, noise: float = 0.0) -> np.ndarray:
    """The five landmarks in pixels of a head (or a photo of one: ``planar``) turned by
    ``turn`` degrees about the vertical axis (positive: to the person's own left, the nose
    towards the image's right), 60 px between the eyes, 1 m away."""
    points = HEAD.copy()
    if planar:
        points[:, 2] = 0.0
    a = math.radians(turn)
    rot = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    p = points @ rot.T
    depth = 16.0 + p[:, 2]  # eye distances from the camera
    xy = 960.0 * p[:, :2] / depth[:, None] + np.array([640.0, 300.0])
    return (xy + NOISE.normal(0, noise, xy.shape)).astype(np.float32)


TURN = list(range(0, 29, 2)) + list(range(28, -1, -4))  # degrees: a turn and back


def config(**values):
    return load_config(overrides=[f"liveness.{k}={v}" for k, v in values.items()]).liveness


def test_the_synthetic_head_turns_as_yaw_says():
    assert yaw(landmarks(0)) == pytest.approx(0, abs=1e-6)
    assert yaw(landmarks(20)) > 0.15 and yaw(landmarks(-20)) < -0.15


def test_passive_scores_decide_after_enough_frames():
    live = TrackLiveness(config(frames=3, threshold=0.5, need_3d="false"))
    live.observe(landmarks(0))
    assert live.verdict(True).decision == NOT_VERIFIED  # no score yet
    for score in (0.9, 0.95):
        live.score(score)
    verdict = live.verdict(True)
    assert verdict.decision == NOT_VERIFIED and verdict.reason == "2 of 3 live scores"
    live.score(0.97)
    verdict = live.verdict(True)
    assert verdict.decision == LIVE and verdict.score == pytest.approx(0.95)
    assert verdict.checks == ("passive", "geometry")
    assert verdict.geometry is not None and verdict.geometry.verdict == "still"
    assert live.verdict(False).decision == NOT_VERIFIED  # the passive check is not loaded

    photo = TrackLiveness(config(frames=3, threshold=0.5))
    for score in (0.2, 0.1, 0.3):
        photo.score(score)
    assert photo.verdict(True).decision == SPOOF


def test_a_flipping_score_is_not_live():
    track = TrackLiveness(config(frames=3, threshold=0.5, max_flips=1))
    for score in (0.9, 0.9, 0.2, 0.9, 0.9):  # median 0.9, but it crossed twice
        track.score(score)
    verdict = track.verdict(True)
    assert verdict.decision == SPOOF and "crossed 0.5 2 times" in verdict.reason
    assert TrackLiveness(config(max_flips=2)).flips() == 0


def test_a_live_score_is_not_enough_without_3d_movement():
    photo, head = TrackLiveness(config()), TrackLiveness(config())
    for track in (photo, head):
        for _ in range(3):
            track.score(0.99)  # a photo good enough to fool the passive check
    for turn in range(-28, 29, 4):  # both turn from side to side, half a pixel of noise
        photo.observe(landmarks(turn, planar=True, noise=0.5))
        head.observe(landmarks(turn, noise=0.5))
    verdict = photo.verdict(True)
    assert verdict.decision == NOT_VERIFIED and "no 3-D head movement" in verdict.reason
    assert verdict.geometry.verdict in ("planar", "still")
    assert head.verdict(True).decision == LIVE
    assert head.verdict(True).geometry.verdict == "3d"
    head.observe(landmarks(20, planar=True))  # 3-D movement once seen is kept
    assert head.verdict(True).decision == LIVE
    # With liveness.need_3d off, the passive check alone decides.
    passive_only = TrackLiveness(config(need_3d="false"))
    for _ in range(3):
        passive_only.score(0.99)
    assert passive_only.verdict(True).decision == LIVE


def test_no_landmarks_is_no_evidence_and_no_error():
    track = TrackLiveness(config())
    for _ in range(5):
        track.observe(np.full((5, 2), np.nan, np.float32))
        track.observe(np.zeros((5, 2), np.float32))
        track.score(0.99)
    verdict = track.verdict(True)
    assert verdict.geometry.verdict == "still" and verdict.decision == NOT_VERIFIED


def test_require_gates_only_matches():
    spoof = photo_verdict(config(mode="require"), 0.1)
    live = photo_verdict(config(mode="require", need_3d="false"), 0.9)
    still = photo_verdict(config(mode="require"), 0.9)  # one photo: no movement to see
    assert still.decision == NOT_VERIFIED and "no 3-D head movement" in still.reason
    assert (spoof.decision, live.decision) == (SPOOF, LIVE) and spoof.checks == ("passive",)
    assert gated(config(mode="require"), "match", spoof) == SPOOF
    assert gated(config(mode="require"), "match", live) == "match"
    assert gated(config(mode="require"), "unknown", spoof) == "unknown"
    assert gated(config(mode="report"), "match", spoof) == "match"
    unloaded = photo_verdict(config(mode="require"), None)
    assert gated(config(mode="require"), "match", unloaded) == NOT_VERIFIED
    assert photo_verdict(config(mode="off"), 0.1) is OFF and OFF.as_dict()["checks"] == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def challenged(side: str, planar: bool = False, **values):
    """A require policy with challenges, its clock, and a live-scored track asked to turn
    to ``side`` (the random choice fixed)."""
    clock = Clock()
    rng = random.Random()
    rng.choice = lambda options: side  # type: ignore[method-assign]
    policy = LivenessPolicy(config(mode="require", **values), True, True, clock, rng)
    track = Track(1, np.zeros(4))
    for _ in range(3):
        policy.state(track).score(0.99)
    policy.state(track).observe(landmarks(0, planar))
    decision, verdict = policy.decide(track, "ann", "match", named=True)
    assert decision == NOT_VERIFIED and verdict.challenge["side"] == side
    assert verdict.challenge["state"] == "asked" and "challenge" in verdict.checks
    return policy, track, clock


@pytest.mark.parametrize("side,sign", [("left", 1), ("right", -1)])
def test_turn_challenge_is_met_by_a_head_turning_the_asked_way(side, sign):
    policy, track, _ = challenged(side)
    for turn in TURN:
        policy.state(track).observe(landmarks(sign * turn, noise=0.3))
    decision, verdict = policy.decide(track, "ann", "match", named=True)
    assert decision == "match" and verdict.decision == LIVE
    assert verdict.challenge["state"] == "passed"


def test_turn_challenge_is_not_met_the_wrong_way_or_by_a_photo():
    policy, track, _ = challenged("left")
    for turn in TURN:
        policy.state(track).observe(landmarks(-turn, noise=0.3))  # to the right
    assert policy.decide(track, "ann", "match", named=True)[0] == NOT_VERIFIED

    policy, photo, _ = challenged("left", planar=True)
    for turn in TURN:
        policy.state(photo).observe(landmarks(turn, planar=True, noise=0.3))
    decision, verdict = policy.decide(photo, "ann", "match", named=True)
    assert decision == NOT_VERIFIED and verdict.challenge["state"] == "asked"


def test_turn_challenge_is_asked_again_after_its_time():
    policy, track, clock = challenged("left", challenge_seconds=5)
    clock.now = 6.0
    policy.state(track).observe(landmarks(0))
    verdict = policy.verdict(track, named=True)
    assert verdict.challenge["asked"] == 2 and verdict.challenge["seconds_left"] == 5.0
    assert verdict.decision == NOT_VERIFIED


def test_mode_off_checks_nothing():
    policy = LivenessPolicy(config(mode="off"), True)
    track = Track(1, np.zeros(4))
    assert policy.decide(track, "ann", "match", named=True) == ("match", OFF)
    assert track.live is None


def test_a_track_is_scored_less_often_once_it_has_its_scores():
    track = TrackLiveness(config(frames=3, rescore_every=3))
    pattern = []
    for _ in range(12):
        pattern.append(track.due())
        if pattern[-1]:
            track.score(0.9)
    assert pattern == [True] * 3 + [False, False, True] * 3
    every = TrackLiveness(config(rescore_every=1))
    assert all(every.due() for _ in range(10))


def test_evidence_starts_again_when_another_face_takes_over_the_track():
    """A live face that moved, then swapped for a photo of someone enrolled in the same
    place: the new name gets none of the live face's evidence."""
    policy = LivenessPolicy(config(mode="require"), True)
    track = Track(1, np.zeros(4))
    for turn in range(-28, 29, 4):
        policy.state(track).observe(landmarks(turn, noise=0.3))
    for _ in range(3):
        policy.state(track).score(0.99)
    assert policy.decide(track, "", "unknown", named=False)[1].decision == LIVE
    decision, verdict = policy.decide(track, "victim", "match", named=True)
    assert decision == NOT_VERIFIED and verdict.reason == "0 of 3 live scores"
    for _ in range(3):
        policy.state(track).score(0.1)  # the photo
    assert policy.decide(track, "victim", "match", named=True)[0] == SPOOF

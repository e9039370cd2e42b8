"""Tracker: identity kept across frames; one event per decision or change, one at the end."""

from __future__ import annotations

import numpy as np
from jetkiosk.edge.config import TrackerConfig
from jetkiosk.edge.tracker import UNKNOWN, Observation, Tracker


def obs(x: float, label, distance: float = 0.4) -> Observation:
    return Observation(np.array([x, 100, x + 80, 200], np.float32), label, distance, 1.0, 0.99)


def test_decides_by_vote_and_emits_only_on_decision_change_and_end():
    tracker = Tracker(TrackerConfig(votes=3, window=5, max_missed=2))
    events = []
    labels = ["ann", "ann", "ann", "ann", "bob", "ann"] + ["bob"] * 6
    for i, label in enumerate(labels):
        events += tracker.update([obs(10 + 3 * i, label)])
    assert [(e.kind, e.label) for e in events] == [("new", "ann"), ("update", "bob")]
    assert len({e.track.track_id for e in events}) == 1
    for _ in range(3):
        events += tracker.update([])
    assert [(e.kind, e.label) for e in events][-1] == ("end", "bob")


def test_two_faces_two_tracks_and_rejected_faces_do_not_vote():
    tracker = Tracker(TrackerConfig(votes=2, window=3, max_missed=1))
    events = []
    for i in range(4):
        events += tracker.update([obs(10 + i, "ann"), obs(400 - i, UNKNOWN, 1.5),
                                  obs(800, None)])
    kinds = sorted((e.kind, e.label) for e in events)
    assert kinds == [("new", ""), ("new", "ann")]
    assert len(tracker.tracks) == 3
    events = tracker.finish()
    assert sorted(e.label for e in events) == ["", "ann"]  # the never-decided track is silent

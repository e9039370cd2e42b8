"""Tracker: identity kept across frames; one event per decision or change, one at the end."""

from __future__ import annotations

import numpy as np

from jetkiosk.edge.core.config import TrackerConfig
from jetkiosk.edge.faces.tracker import UNKNOWN, Tracker


def box(x: float) -> np.ndarray:
    return np.array([x, 100, x + 80, 200], np.float32)


def step(tracker, faces):
    """One frame: faces is a list of (x, label or None for a rejected face)."""
    tracks = tracker.assign([box(x) for x, _ in faces], [0.99] * len(faces))
    events = [tracker.vote(t, label, 0.4, 1.0) for t, (_, label) in zip(tracks, faces)
              if label is not None]
    return [e for e in events if e] + tracker.expire(tracks), tracks


def test_decides_by_vote_and_emits_only_on_decision_change_and_end():
    tracker = Tracker(TrackerConfig(votes=3, window=5, max_missed=2))
    events = []
    labels = ["ann", "ann", "ann", "ann", "bob", "ann"] + ["bob"] * 6
    for i, label in enumerate(labels):
        events += step(tracker, [(10 + 3 * i, label)])[0]
    assert [(e.kind, e.label) for e in events] == [("new", "ann"), ("update", "bob")]
    assert len({e.track.track_id for e in events}) == 1
    for _ in range(3):
        events += step(tracker, [])[0]
    assert [(e.kind, e.label) for e in events][-1] == ("end", "bob")


def test_two_faces_two_tracks_and_rejected_faces_do_not_vote():
    tracker = Tracker(TrackerConfig(votes=2, window=3, max_missed=1))
    events = []
    for i in range(4):
        events += step(tracker, [(10 + i, "ann"), (400 - i, UNKNOWN), (800, None)])[0]
    assert sorted((e.kind, e.label) for e in events) == [("new", ""), ("new", "ann")]
    assert len(tracker.tracks) == 3
    events = tracker.finish()
    assert sorted(e.label for e in events) == ["", "ann"]  # the never-decided track is silent


def test_decided_tracks_are_re_encoded_only_every_nth_frame():
    tracker = Tracker(TrackerConfig(votes=2, window=3, reembed_every=4))
    due = []
    for i in range(12):
        tracks = tracker.assign([box(10 + i)], [0.9])
        due.append(tracks[0].due(4))
        if due[-1]:
            tracker.vote(tracks[0], "ann", 0.3, 1.0)
    assert due == [True, True, False, False, False, True, False, False, False, True, False,
                   False]

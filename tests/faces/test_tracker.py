"""Tracker: identity kept across frames; one event per decision or change, one at the end."""

from __future__ import annotations

import numpy as np

from jetkiosk.edge.core.config import TrackerConfig
from jetkiosk.edge.faces.schedule import MAX_STRETCH, ReencodeSchedule
from jetkiosk.edge.faces.tracker import UNKNOWN, Track, Tracker


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
    schedule = ReencodeSchedule(4)
    due = []
    for i in range(12):
        tracks = tracker.assign([box(10 + i)], [0.9])
        due.append(schedule.pick(tracks) == [0])
        if due[-1]:
            tracker.vote(tracks[0], "ann", 0.3, 1.0)
    assert due == [True, True, False, False, False, True, False, False, False, True, False,
                   False]


def decided_crowd(count: int, since: int) -> list:
    """``count`` decided tracks, each last encoded ``since`` frames ago."""
    tracks = [Track(i + 1, np.zeros(4)) for i in range(count)]
    for track in tracks:
        track.announced, track.since_vote = "ann", since
    return tracks


def test_a_crowd_falling_due_together_is_spread_over_the_frames():
    schedule = ReencodeSchedule(5)
    crowd = decided_crowd(10, 5) + [Track(99, np.zeros(4))]  # and one not decided yet
    per_frame, waits = [], []
    for _ in range(15):
        for track in crowd:  # as Tracker.assign counts them
            track.since_vote += 1
        picked = schedule.pick(crowd)
        assert 10 in picked  # the undecided one, every frame
        per_frame.append(len(picked) - 1)
        waits += [crowd[i].since_vote for i in picked if i != 10]
        for i in picked:
            crowd[i].since_vote = 0
    assert per_frame == [2] * 15  # ceil(10 / 5) a frame, not 10 at once
    assert waits[10:] == [5] * len(waits[10:])  # then each one every 5 frames


def test_frames_over_their_budget_stretch_the_stride_and_fast_ones_shrink_it_back():
    schedule = ReencodeSchedule(5)
    schedule.pace(0.5, None)  # no budget: nothing changes
    assert schedule.stride == 5
    for _ in range(30):
        schedule.pace(0.1, 1 / 30)
    assert schedule.stride == 5 * MAX_STRETCH
    lone = decided_crowd(1, 20)
    assert schedule.pick(lone) == []  # one decided face: every 40 frames now, not 5
    lone[0].since_vote = 40
    assert schedule.pick(lone) == [0]
    for _ in range(60):
        schedule.pace(0.01, 1 / 30)
    assert schedule.stride == 5

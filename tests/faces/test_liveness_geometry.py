"""Landmark geometry liveness: a head turning shows nose parallax, a photo or screen moved
and tilted shows none, on synthetic tracks from a 3-D face model through a pinhole camera."""

from __future__ import annotations

import math
import time
from typing import List, Optional

import numpy as np
import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.faces.planarity import Geometry, LandmarkTrack, parallax, yaw

# Eyes, nose tip, mouth corners in eye distances (x right, y down, z away from the camera).
FACE = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, 0.6, -0.55], [-0.4, 1.1, -0.1],
                 [0.4, 1.1, -0.1]])
PIVOT = np.array([0, 0.5, 0.9])  # the head turns about a point behind the eyes
NOISE = 0.5  # px of landmark noise, at about 80 px between the eyes
SETTINGS = load_config().liveness


def rotation(yaw_: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw_), math.sin(yaw_), math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def project(points: np.ndarray, focal: float = 1000.0) -> np.ndarray:
    return np.c_[focal * points[:, 0] / points[:, 2] + 640,
                 focal * points[:, 1] / points[:, 2] + 360]


def head(yaw_: float, pitch: float, depth: float = 12.0, x: float = 0.0) -> np.ndarray:
    """The five landmarks of a head turned by the angles (radians)."""
    return project((FACE - PIVOT) @ rotation(yaw_, pitch).T + PIVOT + [x, 0, depth])


def photo(tilt_x: float, tilt_y: float, roll: float, depth: float, x: float, y: float,
          face: Optional[np.ndarray] = None) -> np.ndarray:
    """The five landmarks printed on a plane (the nose in it), the plane tilted and moved."""
    flat = (FACE if face is None else face).copy()
    flat[:, 2] = 0
    return project((flat - [0, 0.5, 0]) @ rotation(tilt_y, tilt_x, roll).T + [x, y, depth])


def judge(frames: List[np.ndarray], seed: int = 0, noise: float = NOISE) -> Geometry:
    rng = np.random.default_rng(seed)
    track = LandmarkTrack(SETTINGS.window, SETTINGS.parallax, SETTINGS.motion)
    for marks in frames:
        track.add(marks + rng.normal(0, noise, marks.shape))
    return track.judge()


@pytest.mark.parametrize("seed", range(20))
def test_a_head_turning_in_yaw_or_pitch_moves_as_3d(seed):
    """Straight ahead, a turn (18-25 degrees in yaw, 22-30 in pitch), held: 12 frames."""
    rng = np.random.default_rng(seed)
    along_yaw = seed % 2 == 0
    amount = math.radians(rng.uniform(*((18, 25) if along_yaw else (22, 30))))
    amount *= rng.choice([-1, 1])
    depth, x = rng.uniform(10, 16), rng.uniform(-2, 2)
    frames = [head(amount * t if along_yaw else 0.0, 0.0 if along_yaw else amount * t,
                   depth=depth, x=x) for t in np.clip(np.linspace(-0.3, 1.3, 12), 0, 1)]
    g = judge(frames, seed)
    assert g.verdict == "3d", g
    assert g.parallax > SETTINGS.parallax and g.frames == 12


@pytest.mark.parametrize("seed", range(40))
def test_a_photo_tilted_up_to_40_degrees_moved_and_scaled_is_never_3d(seed):
    rng = np.random.default_rng(100 + seed)
    tilt = math.radians(40)
    # Also a photo of a turned head: its landmarks, flattened onto the print.
    printed = None
    if seed % 2:
        turned = (FACE - PIVOT) @ rotation(math.radians(rng.uniform(-30, 30)), 0).T + PIVOT
        printed = np.c_[turned[:, :2], np.zeros(5)]
    start, end = ([rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt), rng.uniform(-0.2, 0.2),
                   rng.uniform(10, 16), rng.uniform(-2, 2), rng.uniform(-1, 1)]
                  for _ in range(2))
    frames = [photo(*(np.array(start) + (np.array(end) - np.array(start)) * t), face=printed)
              for t in np.linspace(0, 1, 10)]
    g = judge(frames, seed)
    assert g.verdict != "3d", g
    assert g.parallax < SETTINGS.parallax


def test_a_photo_turned_far_in_depth_is_planar():
    frames = [photo(0, math.radians(40) * t, 0, 12, 0, 0)
              for t in np.clip(np.linspace(-0.3, 1.3, 12), 0, 1)]
    g = judge(frames)
    assert g.verdict == "planar", g
    assert g.motion > SETTINGS.motion


def test_translation_scale_and_in_plane_rotation_alone_are_still():
    frames = [photo(0, 0, 0.3 * t, 10 + 6 * t, 3 * t, -t) for t in np.linspace(0, 1, 10)]
    g = judge(frames)
    assert g.verdict == "still", g
    a, b = frames[0], frames[-1]
    par, motion = parallax(a, b)
    assert par == pytest.approx(0, abs=1e-6) and motion == pytest.approx(0, abs=1e-6)


def test_parallax_of_a_turn_is_about_the_noses_shift_and_a_tilted_plane_has_none():
    par, motion = parallax(head(0, 0), head(math.radians(20), 0))
    assert 0.1 < par < 0.4 and motion < par / 2
    par, motion = parallax(photo(0, 0, 0, 12, 0, 0), photo(0.5, 0.6, 0.1, 9, 1, 0))
    assert par == pytest.approx(0, abs=1e-6) and motion > 0.05


def test_degenerate_landmarks_give_no_evidence_and_never_raise():
    good = head(0, 0)
    nan = good.copy()
    nan[2, 0] = np.nan
    inf = good.copy()
    inf[0, 1] = np.inf
    coincident = np.tile(good[:1], (5, 1))
    collinear = np.c_[np.arange(5.0) * 10, np.zeros(5)]
    for bad in (nan, inf, coincident, collinear, np.zeros((5, 2)), np.zeros((3, 2))):
        assert parallax(good, bad) == (0.0, 0.0)
        assert parallax(bad, good) == (0.0, 0.0)
    track = LandmarkTrack(SETTINGS.window, SETTINGS.parallax, SETTINGS.motion)
    for bad in (nan, coincident, collinear, good, inf, np.zeros((5, 2))):
        track.add(bad)
    g = track.judge()
    assert g.verdict == "still" and g.parallax == 0 and g.frames == 6


def test_an_empty_or_single_frame_track_is_still_and_as_dict_rounds():
    track = LandmarkTrack(5, 0.1, 0.05)
    assert track.judge() == Geometry("still", 0.0, 0.0, 0)
    track.add(head(0, 0))
    assert track.judge().verdict == "still"
    assert Geometry("3d", 0.123456, 0.0456789, 7).as_dict() == {
        "verdict": "3d", "parallax": 0.1235, "motion": 0.0457, "frames": 7}


def test_the_window_forgets_a_turn_that_has_left_it():
    track = LandmarkTrack(10, SETTINGS.parallax, SETTINGS.motion)
    for turn in (30,) * 5 + (0,) * 5:
        track.add(head(math.radians(turn), 0))
    assert track.judge().verdict == "3d"
    for _ in range(10):
        track.add(head(0, 0, x=0.5))
    g = track.judge()
    assert g.verdict == "still" and g.frames == 10 and g.parallax < 0.05


@pytest.mark.parametrize("bad", [1, 2, 3])
def test_fewer_bad_frames_than_the_support_never_make_a_photo_3d(bad):
    """A detector that puts the nose far off in a frame or two (or finds another face)
    makes every pair with that frame look 3-D; the rest of the track outvotes it."""
    frames = [photo(0, math.radians(30) * t, 0, 12, 0, 0) for t in np.linspace(0, 1, 10)]
    for k in range(bad):
        frames[2 + 3 * k] = frames[2 + 3 * k] + [[0, 0], [0, 0], [30, 0], [0, 0], [0, 0]]
    g = judge(frames)
    assert g.verdict != "3d" and g.parallax < 0.05, g
    assert parallax(frames[0], frames[2])[0] > 0.3  # one pair alone would have said 3d


def test_fewer_frames_than_the_support_needs_are_never_3d():
    track = LandmarkTrack(30, SETTINGS.parallax, SETTINGS.motion)
    for turn in (0, 0, 30, 30):  # four frames; 3-D needs support + 1 = five
        track.add(head(math.radians(turn), 0))
    assert track.judge().verdict == "still"
    track.add(head(math.radians(30), 0))
    assert track.judge().verdict == "still"  # four frames must each see four others above
    for turn in (0, 0, 30):
        track.add(head(math.radians(turn), 0))
    assert track.judge().verdict == "3d"


def test_a_nose_outside_the_eyes_and_mouth_corners_is_no_evidence():
    """Near profile the detector guesses landmarks; such frames neither make nor break 3-D."""
    profile = head(0, 0)
    profile[2, 0] = profile[1, 0] + 5  # the nose beyond the far eye
    track = LandmarkTrack(30, SETTINGS.parallax, SETTINGS.motion)
    for marks in [head(0, 0)] * 4 + [profile] * 6:
        track.add(marks)
    g = track.judge()
    assert g.verdict == "still" and g.parallax == 0


def test_yaw_is_positive_with_the_nose_towards_the_images_right():
    assert yaw(head(0, 0)) == pytest.approx(0, abs=1e-9)
    right = head(math.radians(-20), 0)  # turned so the nose tip moves to the image's right
    assert right[2, 0] > head(0, 0)[2, 0]
    assert yaw(right) > 0.1 and yaw(head(math.radians(20), 0)) < -0.1
    marks = np.array([[100, 100], [140, 100], [128, 120], [104, 140], [136, 140]], float)
    assert yaw(marks) == pytest.approx(0.2)


def test_add_and_judge_cost_little_per_face_and_frame():
    rng = np.random.default_rng(0)
    track = LandmarkTrack(30, SETTINGS.parallax, SETTINGS.motion)
    frames = [head(0, 0) + rng.normal(0, 1, (5, 2)) for _ in range(130)]
    for marks in frames[:30]:
        track.add(marks)
    start = time.perf_counter()
    for marks in frames[30:]:
        track.add(marks)
        track.judge()
    assert (time.perf_counter() - start) / 100 < 0.005  # measured about 0.1 ms

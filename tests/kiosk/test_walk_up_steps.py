"""Walk-up enrollment's steps with a scripted camera: consent, varied shots, every way it
stops, and what reaches the gallery (a real file, saved under its lock)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.analyzer import Face
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.gallery import Gallery, load_gallery
from jetkiosk.edge.kiosk.enroll_screen import draw_enrollment, wrap
from jetkiosk.edge.kiosk.enrollment import (
    CAPTURE,
    CONSENT,
    FAILED,
    IDLE,
    RESULT_SECONDS,
    SAVED,
    EnrollmentError,
    WalkUpEnrollment,
    poses,
    yaw,
)

DIM = 8


def face(turn: float, x: float = 100.0, size: float = 100.0, encoding: bool = True,
         seed: int = 0) -> Face:
    """A face whose landmarks give yaw ``turn``, with a unit encoding (or gate-rejected)."""
    box = np.array([x, 100, x + size, 100 + size], np.float32)
    eyes = 0.4 * size
    left, right = x + 0.3 * size, x + 0.3 * size + eyes
    nose = (left + right) / 2 + turn * eyes
    marks = np.array([[left, 140], [right, 140], [nose, 160], [left, 180], [right, 180]],
                     np.float32)
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return Face(Detection(box, 0.9, marks),
                vector / np.linalg.norm(vector) if encoding else None,
                None if encoding else "too blurred")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Kiosk:
    """The enrollment wired to a scripted camera and a real gallery file."""

    def __init__(self, tmp_path, known: Optional[str] = None, shots: int = 5,
                 enrolled=("grace",)):
        self.config = load_config(overrides=[f"kiosk.enroll_shots={shots}",
                                             "kiosk.enroll_turn=0.3", "kiosk.enroll_timeout=30"])
        self.path = tmp_path / "gallery.npz"
        gallery = Gallery("enc", "f" * 16, DIM)
        for i, name in enumerate(enrolled):
            gallery.add(name, face(0, seed=100 + i).encoding[None])
        gallery.save(self.path)
        self.before = self.path.read_bytes()
        self.scene: List[Face] = []
        self.known = known
        self.clock = Clock()
        self.announced: List[dict] = []
        self.enrollment = WalkUpEnrollment(
            self.config.kiosk, lambda frame: list(self.scene),
            lambda encodings: [self.known] * len(encodings),
            lambda: load_gallery(self.path).names, self.save, min_face=40,
            announce=self.announced.append, clock=self.clock)

    def save(self, name: str, encodings: np.ndarray) -> None:
        from jetkiosk.edge.faces.gallery import locked_update

        with locked_update(self.path) as gallery:
            if name in gallery:
                raise GalleryError(f"{name!r} is already enrolled")
            gallery.add(name, encodings)

    def show(self, *faces: Face) -> None:
        self.scene = list(faces)
        self.enrollment.observe(np.zeros((8, 8, 3), np.uint8))

    @property
    def state(self) -> str:
        return self.enrollment.state()["state"]

    def unchanged(self) -> bool:
        return self.path.read_bytes() == self.before


def test_yaw_follows_the_nose_and_poses_alternate_growing_to_the_widest_turn():
    assert yaw(face(0).detection.landmarks) == pytest.approx(0, abs=1e-6)
    assert yaw(face(0.2).detection.landmarks) == pytest.approx(0.2, abs=1e-4)
    assert yaw(face(-0.3).detection.landmarks) == pytest.approx(-0.3, abs=1e-4)
    assert poses(5, 0.3) == pytest.approx([0, -0.15, 0.15, -0.3, 0.3])
    assert poses(3, 0.3) == pytest.approx([0, -0.3, 0.3])
    assert poses(1, 0.3) == [0.0]
    assert poses(4, 0.2) == pytest.approx([0, -0.1, 0.1, -0.2])


def test_nothing_is_captured_before_consent_and_shots_are_varied_poses(tmp_path):
    k = Kiosk(tmp_path)
    k.enrollment.start("ada")
    assert k.state == CONSENT and k.enrollment.screen().text == k.config.kiosk.enroll_consent
    for _ in range(5):
        k.show(face(0))
    assert k.enrollment.state()["shots"] == 0
    k.enrollment.accept()
    for _ in range(10):  # one pose held: one shot, not ten copies
        k.show(face(0.01))
    assert k.enrollment.state()["shots"] == 1
    screen = k.enrollment.screen()
    assert screen.state == CAPTURE and screen.arrow == -1 and screen.progress == pytest.approx(0.2)
    k.show(face(0.01, encoding=False))  # gate-rejected: not a shot
    for turn, seed in ((-0.14, 1), (-0.32, 2), (0.16, 3)):
        k.show(face(turn, seed=seed))
    assert k.enrollment.state()["shots"] == 4 and k.unchanged()
    assert k.enrollment.screen().arrow == 1
    k.show(face(0.45, seed=4))  # beyond the widest turn still counts for it
    assert k.state == SAVED
    saved = load_gallery(k.path)
    assert saved.names == ["ada", "grace"] and len(saved.encodings("ada")) == 5
    assert len({row.tobytes() for row in saved.encodings("ada")}) == 5
    # consent, accepted, four shots announced, then saved with the fifth
    assert [a["state"] for a in k.announced] == [CONSENT] + [CAPTURE] * 5 + [SAVED]
    assert [a["shots"] for a in k.announced] == [0, 0, 1, 2, 3, 4, 5]
    assert k.announced[-1]["message"] == "Enrolled: ada"
    k.clock.now += RESULT_SECONDS
    assert k.state == IDLE and k.enrollment.screen() is None


def test_start_refuses_bad_taken_names_and_a_second_enrollment(tmp_path):
    k = Kiosk(tmp_path)
    for bad in ("", "a/b", "x" * 200, "tab\there"):
        with pytest.raises(EnrollmentError, match="invalid person name"):
            k.enrollment.start(bad)
    with pytest.raises(EnrollmentError, match="'grace' is already enrolled"):
        k.enrollment.start("grace")
    with pytest.raises(EnrollmentError, match="no enrollment is waiting for consent"):
        k.enrollment.accept()
    k.enrollment.start("ada")
    with pytest.raises(EnrollmentError, match="enrollment of 'ada' is under way"):
        k.enrollment.start("bob")
    assert k.unchanged() and k.announced[-1]["name"] == "ada"


def test_the_key_starts_with_the_configured_name_and_y_n_answer(tmp_path):
    k = Kiosk(tmp_path)
    assert not k.enrollment.on_key("y")  # nothing to agree to: the key is not taken
    assert k.enrollment.on_key("e")
    assert k.state == CONSENT and k.enrollment.state()["name"].startswith("visitor-")
    assert not k.enrollment.on_key("e")  # no second one while this runs
    assert k.enrollment.on_key("n")
    assert k.state == FAILED and k.enrollment.state()["message"] == "Declined: nothing was saved."
    k.clock.now += RESULT_SECONDS
    k.enrollment.on_key("e")
    assert k.enrollment.on_key("y") and k.state == CAPTURE
    assert k.enrollment.on_key("n") and "cancelled" in k.enrollment.state()["message"]
    assert k.unchanged()


@pytest.mark.parametrize("case, message", [
    ("consent timeout", "No answer to the consent question: nothing was saved."),
    ("no face", "No face was seen: nothing was saved."),
    ("partial", "Timed out with 2 of 5 shots: nothing was saved."),
    ("second face", "Only one person at a time, please: nothing was saved."),
    ("cancel", "Enrollment cancelled: nothing was saved."),
    ("camera lost", "The camera was lost: nothing was saved."),
    ("already enrolled", "You are already enrolled as grace: nothing was saved."),
    ("name taken meanwhile", "Not saved: 'ada' is already enrolled: nothing was saved."),
])
def test_every_way_it_stops_says_why_and_leaves_the_gallery_unchanged(tmp_path, case, message):
    k = Kiosk(tmp_path, known="grace" if case == "already enrolled" else None)
    k.enrollment.start("ada")
    if case == "consent timeout":
        k.clock.now += 31
    else:
        k.enrollment.accept()
    if case == "partial":
        k.show(face(0))
        k.show(face(-0.15, seed=1))
    if case in ("no face", "partial"):
        k.clock.now += 31
    if case == "second face":
        k.show(face(0))
        k.show(face(0, x=100), face(0.1, x=300, seed=1))
    if case == "cancel":
        k.enrollment.cancel()
    if case == "camera lost":
        k.enrollment.camera_lost()
    if case == "name taken meanwhile":
        k.save("ada", face(0, seed=9).encoding[None])
        k.before = k.path.read_bytes()
    if case in ("already enrolled", "name taken meanwhile"):
        for i, turn in enumerate(poses(5, 0.3)):
            k.show(face(turn, seed=i))
    assert k.state == FAILED
    assert k.enrollment.state()["message"] == message
    assert k.enrollment.screen().text == message
    assert k.announced[-1]["state"] == FAILED and k.unchanged()
    with pytest.raises(EnrollmentError):
        k.enrollment.cancel()


def test_a_small_face_far_behind_is_not_a_second_person(tmp_path):
    k = Kiosk(tmp_path, shots=1)
    k.enrollment.start("ada")
    k.enrollment.accept()
    k.show(face(0), face(0, x=400, size=20, seed=5))
    assert k.state == SAVED


def test_the_screen_shows_consent_progress_and_arrow_and_wraps_long_text(tmp_path):
    k = Kiosk(tmp_path)
    frame = np.full((360, 640, 3), 128, np.uint8)
    k.enrollment.start("ada")
    consent = draw_enrollment(frame.copy(), k.enrollment.screen())
    top, bottom = consent[:60], consent[300:]
    assert (top != 128).any() and (bottom == 128).all()  # a band at the top only
    assert len(wrap(k.config.kiosk.enroll_consent, 576, 0.5, 1)) > 1
    k.enrollment.accept()
    k.show(face(0))
    capture = draw_enrollment(frame.copy(), k.enrollment.screen())
    arrow = (capture[:, :, 2] > 200) & (capture[:, :, 1] > 180) & (capture[:, :, 0] < 60)
    columns = np.flatnonzero(arrow.any(axis=0))
    assert columns.size and columns.max() < 320  # the arrow on the left: the next turn
    green = (capture[:, :, 1] > 180) & (capture[:, :, 0] < 120) & (capture[:, :, 2] < 120)
    assert green.any()  # the progress bar's filled part

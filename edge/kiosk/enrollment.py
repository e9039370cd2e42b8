"""Walk-up enrollment at the kiosk: consent, guided capture of varied shots, then the gallery.

A person is enrolled in four steps, each shown on the screen and announced on MQTT:

1. ``consent``: the configured consent text; nothing is captured until an explicit accept (the
   Y key or an ``accept`` command). N, a ``cancel`` command or ``kiosk.enroll_timeout`` end it.
2. ``capture``: the screen asks for the head straight, then small turns each way; a frame
   gives a shot when exactly one face is in view, it passes the quality gate, and the
   landmarks' yaw (``yaw``) fits a pose still missing, so the ``kiosk.enroll_shots`` shots are
   varied poses, not copies of one. A second face, a cancel, the timeout or the camera lost
   end it.
3. The shots' encodings (never a photo: frames are only read, in memory) are checked against
   the gallery: a person it already knows under another name is refused.
4. ``saved``: the encodings are added under the gallery's lock and the face path reloads it;
   or ``failed`` with the reason. Either message stays on the screen for a few seconds.

Every way it can fail leaves the gallery as it was.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.config import KioskConfig
from ..core.errors import GalleryError, JetkioskError
from ..faces.analyzer import Face
from ..faces.gallery import clean_name
from ..faces.planarity import yaw

log = logging.getLogger(__name__)

RESULT_SECONDS = 5.0  # how long the outcome stays on the screen
IDLE, CONSENT, CAPTURE, SAVING, SAVED, FAILED = (
    "idle", "consent", "capture", "saving", "saved", "failed")
UNDER_WAY = (CONSENT, CAPTURE, SAVING)


class EnrollmentError(JetkioskError):
    """An enrollment request that cannot be taken (busy, a bad or taken name)."""


def poses(shots: int, turn: float) -> List[float]:
    """The yaw of each shot asked for: straight ahead, then turns alternating left and
    right, growing to ``turn``."""
    steps = max(1, math.ceil((shots - 1) / 2))
    targets = [0.0]
    for i in range(1, steps + 1):
        targets += [-turn * i / steps, turn * i / steps]
    return targets[:shots]


@dataclass
class Screen:
    """What the kiosk shows for the enrollment now."""

    state: str
    text: str
    progress: Optional[float] = None  # capture: the share of shots taken
    arrow: int = 0  # capture: -1 turn towards the image's left, 1 to its right, 0 straight


@dataclass
class _Session:
    name: str
    deadline: float
    state: str = CONSENT
    targets: List[float] = field(default_factory=list)
    shots: Dict[int, np.ndarray] = field(default_factory=dict)  # target index -> encoding
    message: str = ""
    until: float = 0.0  # a result: shown until then


class WalkUpEnrollment:
    """One enrollment at a time, driven from three threads: keys and the screen (display),
    commands (MQTT), frames (the face path's ``observe``)."""

    def __init__(self, settings: KioskConfig, analyze: Callable[[np.ndarray], List[Face]],
                 known: Callable[[np.ndarray], List[Optional[str]]],
                 names: Callable[[], Sequence[str]],
                 save: Callable[[str, np.ndarray], None], min_face: float,
                 announce: Callable[[Dict[str, Any]], None] = lambda state: None,
                 clock: Callable[[], float] = time.monotonic):
        """``analyze``: every face in a frame (with an encoding when it passed the gate);
        ``known``: the gallery's name for each encoding (None: nobody); ``names``: who is
        enrolled; ``save``: add a person's encodings to the gallery (raises GalleryError);
        ``min_face``: faces smaller than this (px) are not counted as a second person;
        ``announce``: each new state, as ``state()`` gives it."""
        self.settings = settings
        self.analyze = analyze
        self.known = known
        self.names = names
        self.save = save
        self.min_face = min_face
        self.announce = announce
        self.clock = clock
        self._lock = threading.Lock()
        self._session: Optional[_Session] = None

    @property
    def active(self) -> bool:
        """Whether an enrollment is under way (keys go to it)."""
        self.tick()
        with self._lock:
            return self._session is not None and self._session.state in UNDER_WAY

    def start(self, name: Optional[str] = None) -> Dict[str, Any]:
        """Ask for consent to enroll ``name`` (default: ``kiosk.enroll_name``)."""
        if name is None:
            name = self.settings.enroll_name.replace("{time}", time.strftime("%Y%m%d-%H%M%S"))
        try:
            name = clean_name(name)
        except GalleryError as exc:
            raise EnrollmentError(str(exc)) from None
        if name in self.names():
            raise EnrollmentError(f"{name!r} is already enrolled: choose another name, or "
                                  "remove them first (`jetkiosk gallery remove`)")
        with self._lock:
            if self._session is not None and self._session.state in UNDER_WAY:
                raise EnrollmentError(f"an enrollment of {self._session.name!r} is under way")
            self._session = _Session(name, self.clock() + self.settings.enroll_timeout)
        log.info("enrollment of %r: asking for consent", name)
        return self._changed()

    def accept(self) -> Dict[str, Any]:
        """Consent given: start the guided capture."""
        with self._lock:
            session = self._current(CONSENT, "accept")
            session.state = CAPTURE
            session.deadline = self.clock() + self.settings.enroll_timeout
            session.targets = poses(self.settings.enroll_shots, self.settings.enroll_turn)
        log.info("enrollment of %r: consent given, capturing", session.name)
        return self._changed()

    def cancel(self, reason: str = "Enrollment cancelled") -> Dict[str, Any]:
        """Stop consent or capture, saving nothing."""
        with self._lock:
            self._current((CONSENT, CAPTURE), "cancel")
        return self._fail(reason)

    def camera_lost(self) -> None:
        """The source went away: an enrollment under way stops."""
        self._fail("The camera was lost")

    def _current(self, states: Any, action: str) -> _Session:
        session = self._session
        if session is None or session.state not in states:
            raise EnrollmentError(f"{action}: no enrollment is "
                                  + ("waiting for consent" if states == CONSENT
                                     else "under way"))
        return session

    def tick(self) -> None:
        """Time out consent or capture; clear a result once it has been shown."""
        with self._lock:
            session = self._session
            if session is None:
                return
            now = self.clock()
            if session.state in (SAVED, FAILED):
                if now >= session.until:
                    self._session = None
                return
            if now < session.deadline or session.state == SAVING:
                return
            if session.state == CONSENT:
                reason = "No answer to the consent question"
            elif session.shots:
                reason = f"Timed out with {len(session.shots)} of {len(session.targets)} shots"
            else:
                reason = "No face was seen"
        self._fail(reason)

    def observe(self, frame: np.ndarray) -> None:
        """A frame from the face path: during capture, maybe a shot; when the last is taken,
        the check against the gallery and the save (on the calling thread)."""
        self.tick()
        with self._lock:
            if self._session is None or self._session.state != CAPTURE:
                return
        faces = self.analyze(frame)
        people = [f for f in faces
                  if min(f.detection.width, f.detection.height) >= self.min_face]
        if len(people) > 1:
            self._fail("Only one person at a time, please")
            return
        if len(people) != 1 or people[0].encoding is None:
            return
        face, encoding = people[0], people[0].encoding
        with self._lock:
            session = self._session
            if session is None or session.state != CAPTURE:
                return
            turned = yaw(face.detection.landmarks)
            slot = self._slot(session, turned)
            if slot is None:
                return
            session.shots[slot] = encoding
            done = len(session.shots) == len(session.targets)
            if done:  # from here on a cancel or the timeout no longer applies
                session.state = SAVING
            log.info("enrollment of %r: shot %d of %d (yaw %.2f)", session.name,
                     len(session.shots), len(session.targets), turned)
        if done:
            self._finish(session)
        else:
            self._changed()

    def _slot(self, session: _Session, value: float) -> Optional[int]:
        """The first pose still missing that ``value`` fits: within half a step of it, or
        beyond it for the widest turns."""
        targets = session.targets
        step = abs(targets[1]) if len(targets) > 1 else self.settings.enroll_turn
        widest = max(abs(t) for t in targets)
        for i, target in enumerate(targets):
            if i in session.shots:
                continue
            if target == 0 and abs(value) <= step / 2:
                return i
            same_side = target * value > 0
            beyond = abs(target) == widest and abs(value) >= abs(target) - step / 2
            if target and same_side and (abs(value - target) <= step / 2 or beyond):
                return i
        return None

    def _finish(self, session: _Session) -> None:
        encodings = np.stack([session.shots[i] for i in sorted(session.shots)])
        names = [n for n in self.known(encodings) if n]
        if names:
            other = max(set(names), key=names.count)
            if names.count(other) * 2 >= len(encodings):
                self._fail(f"You are already enrolled as {other}", (SAVING,))
                return
        try:
            self.save(session.name, encodings)
        except (GalleryError, OSError) as exc:
            log.error("enrollment of %r not saved: %s", session.name, exc)
            self._fail(f"Not saved: {exc}", (SAVING,))
            return
        log.info("enrollment of %r: %d encodings saved", session.name, len(encodings))
        with self._lock:
            session.state, session.message = SAVED, f"Enrolled: {session.name}"
            session.until = self.clock() + RESULT_SECONDS
        self._changed()

    def _fail(self, reason: str, states: Sequence[str] = (CONSENT, CAPTURE)) -> Dict[str, Any]:
        """End the enrollment with ``reason`` if it is in one of ``states``."""
        with self._lock:
            session = self._session
            if session is None or session.state not in states:
                return self._state(session)
            session.state = FAILED
            session.message = f"{reason}: nothing was saved."
            session.until = self.clock() + RESULT_SECONDS
        log.warning("enrollment of %r: %s", session.name, session.message)
        return self._changed()

    def _changed(self) -> Dict[str, Any]:
        state = self.state()
        self.announce(state)
        return state

    def state(self) -> Dict[str, Any]:
        """The enrollment's state: ``state`` (idle, consent, capture, saving, saved, failed),
        the ``name``, the ``shots`` taken of ``needed``, and the ``message`` shown."""
        self.tick()
        with self._lock:
            return self._state(self._session)

    def _state(self, session: Optional[_Session]) -> Dict[str, Any]:
        if session is None:
            return {"state": IDLE, "name": None, "shots": 0, "needed": 0, "message": ""}
        return {"state": session.state, "name": session.name, "shots": len(session.shots),
                "needed": len(session.targets), "message": self._text(session)}

    def screen(self) -> Optional[Screen]:
        """What to show now (None: nothing)."""
        self.tick()
        with self._lock:
            session = self._session
            if session is None:
                return None
            text = self._text(session)
            if session.state != CAPTURE:
                return Screen(session.state, text)
            target = self._next_target(session)
            return Screen(CAPTURE, text, len(session.shots) / len(session.targets),
                          0 if target == 0 else (1 if target > 0 else -1))

    def _text(self, session: _Session) -> str:
        if session.state == CONSENT:
            return self.settings.enroll_consent
        if session.state == SAVING:
            return "Saving..."
        if session.state == CAPTURE:
            target = self._next_target(session)
            return ("Look straight at the camera" if target == 0
                    else "Turn your head a little, slowly, the way the arrow points")
        return session.message

    @staticmethod
    def _next_target(session: _Session) -> float:
        return next(t for i, t in enumerate(session.targets) if i not in session.shots)

    def on_key(self, char: str) -> bool:
        """Y/Enter accept and N/Backspace cancel while an enrollment is under way, E starts
        one; True when the key was taken."""
        if char in ("y", "Y", "\r", "\n") and self._waiting():
            self.accept()
        elif char in ("n", "N", "\b", "\x7f") and self.active:
            self.cancel("Declined" if self._waiting() else "Enrollment cancelled")
        elif char in ("e", "E") and not self.active:
            try:
                self.start()
            except EnrollmentError as exc:
                log.warning("enrollment: %s", exc)
        else:
            return False
        return True

    def _waiting(self) -> bool:
        with self._lock:
            return self._session is not None and self._session.state == CONSENT

"""The face path inside the kiosk (``kiosk.faces``): one camera, two consumers, one process.

The display loop reads the source and posts each frame to a ``FrameTap``; the face path
(``node.daemon.Runner``: the capture loop, its sinks, MQTT node, outbox and metrics) runs
in a thread of its own over the tap and always takes the newest frame: a slot of one, never
a queue, so a slow face path skips frames and never slows the display.

Ownership: a frame read from the source belongs to nobody once read; both consumers only
read it (the stylizer and the face path make new arrays for everything they change), so it
is shared without a copy. The display draws only on frames of its own (the stylized one).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..capture.sources import Frame, Source
from ..core.audit import AuditLog
from ..core.config import Config, LivenessConfig
from ..core.errors import GalleryError
from ..faces.analyzer import Face, FaceAnalyzer
from ..faces.decisions import Matcher
from ..faces.detection import Detection
from ..faces.gallery import enroll_encodings
from ..faces.live_decision import LIVE, passive_verdict
from ..faces.tracker import Track
from ..node.daemon import Runner
from ..node.sinks import Sink, sink_uris
from ..service.sd_notify import Notifier
from .enroll_screen import draw_enrollment
from .enrollment import WalkUpEnrollment
from .overlay import Label, draw_greeting, draw_labels

log = logging.getLogger(__name__)
TURN_PROMPT = "Please turn your head a little to your {side}"
NAMED = ("match", "uncertain")  # decisions whose label shows the name


def face_config(config: Config) -> Config:
    """The settings the kiosk's face path runs with: ``kiosk.faces_threads`` intra-op threads
    per face model, at most ``kiosk.faces_fps`` frames a second, and the MQTT sink added
    when ``kiosk.mqtt`` is on."""
    faces = copy.deepcopy(config)
    faces.models.threads = config.kiosk.faces_threads
    faces.run.max_fps = config.kiosk.faces_fps
    if config.kiosk.mqtt and "mqtt" not in sink_uris(config.run.sink):
        faces.run.sink = f"{config.run.sink},mqtt"
    return faces


class FrameTap(Source):
    """A source fed by another thread's ``post``: ``frames`` yields only the newest frame
    posted since the last one it yielded; ``end`` (after the last post) or ``stop`` end it.
    Its availability is that of ``camera``, the kiosk's own source, once given."""

    uri = "kiosk://frames"
    live = True

    def __init__(self) -> None:
        self.camera: Optional[Source] = None
        self._frame: Optional[Frame] = None
        self._ended = False
        self._stopped = False
        self._cond = threading.Condition()
        self.dropped = 0

    @property
    def online(self) -> Optional[bool]:  # type: ignore[override]
        return True if self.camera is None else self.camera.online

    @property
    def reconnects(self) -> int:  # type: ignore[override]
        return 0 if self.camera is None else self.camera.reconnects

    @property
    def reason(self) -> str:  # type: ignore[override]
        return "" if self.camera is None else self.camera.reason

    def post(self, frame: np.ndarray) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = (frame, time.monotonic())
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def frames(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._frame is not None or self._ended
                                    or self._stopped, 0.5)
                frame, self._frame = self._frame, None
                done = self._stopped or (self._ended and frame is None)
            if done:
                return
            if frame is None:
                self.keepalive()
            else:
                yield frame


class FaceBoard(Sink):
    """The latest box of each live track (from the loop's observer) and the latest decision
    announced for it (from its events); a track's box stays until the track ends."""

    def __init__(self, greeting: str = "", greeting_seconds: float = 0.0) -> None:
        """``greeting``: shown for ``greeting_seconds`` once per decision naming someone
        (``{name}``: the name)."""
        self.greeting = greeting
        self.greeting_seconds = greeting_seconds
        self._greetings: Dict[int, Tuple[str, float]] = {}  # track id -> (text, until)
        self._lock = threading.Lock()
        self._boxes: Dict[int, Tuple[float, float, float, float]] = {}
        self._decisions: Dict[int, Tuple[str, str]] = {}  # track id -> (text, decision)
        self._prompts: Dict[int, str] = {}  # track id -> a turn challenge asked of it
        self.size: Tuple[int, int] = (1, 1)  # (width, height) of the face path's frames
        self.first_decision: Optional[float] = None  # monotonic time of the first decision

    def observe(self, frame: np.ndarray, tracks: List[Track]) -> None:
        with self._lock:
            self.size = (frame.shape[1], frame.shape[0])
            self._boxes = {t.track_id: tuple(float(v) for v in t.box[:4])  # type: ignore
                           for t in tracks}

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        track = event["track_id"]
        with self._lock:
            challenge = (event.get("live") or {}).get("challenge") or {}
            if event["event"] != "end" and challenge.get("state") == "asked":
                self._prompts[track] = TURN_PROMPT.format(side=challenge["side"])
            else:
                self._prompts.pop(track, None)
            if event["event"] == "end":
                self._decisions.pop(track, None)
                self._boxes.pop(track, None)
                return
            decision = event["decision"]
            shown = event["name"] if decision in NAMED else None  # a spoof shows no name
            self._decisions[track] = (shown or decision.replace("_", " "), decision)
            now = time.monotonic()
            if self.first_decision is None:
                self.first_decision = now
            if self.greeting and event["decision"] == "match" and self.greeting_seconds > 0:
                self._greetings[track] = (self.greeting.replace("{name}", event["name"]),
                                          now + self.greeting_seconds)

    def greetings(self) -> List[str]:
        """The greetings on the screen now, oldest first."""
        now = time.monotonic()
        with self._lock:
            for track in [t for t, (_, until) in self._greetings.items() if until <= now]:
                del self._greetings[track]
            return [text for text, _ in self._greetings.values()]

    def prompt(self) -> Optional[str]:
        """The newest turn challenge asked and not met yet, if any."""
        with self._lock:
            return next(reversed(self._prompts.values()), None)

    def main_person(self) -> Optional[str]:
        """The name of the largest face recognised now (None: nobody recognised)."""
        with self._lock:
            named = [(track, box) for track, box in self._boxes.items()
                     if self._decisions.get(track, ("", ""))[1] == "match"]
            if not named:
                return None
            track, _ = max(named, key=lambda item: (item[1][2] - item[1][0])
                           * (item[1][3] - item[1][1]))
            return self._decisions[track][0]

    def boxes(self) -> Tuple[List[Tuple[Tuple[float, float, float, float], str]],
                             Tuple[int, int]]:
        """Each live track's box and decision ('' before one), and the size of the frames
        the boxes are in."""
        with self._lock:
            return ([(box, self._decisions.get(track, ("", ""))[1])
                     for track, box in sorted(self._boxes.items())], self.size)

    def labels(self) -> Tuple[List[Label], Tuple[int, int]]:
        """The tracks to show and the size of the frames their boxes are in."""
        with self._lock:
            shown = [Label(track, box, *self._decisions.get(track, ("", "")))
                     for track, box in sorted(self._boxes.items())]
            return shown, self.size


def warm_up(analyzer: FaceAnalyzer, size: Tuple[int, int] = (1280, 720)) -> None:
    """One run of each face model: their first runs are slow, and a slow first frame lets a
    moving face leave its track (the face path takes the newest frame, not the next)."""
    analyzer.detector.detect(np.zeros((size[1], size[0], 3), np.uint8))
    aligner = analyzer.aligner
    analyzer.encoder.encode([np.zeros((aligner.height, aligner.width, 3), np.uint8)])
    if analyzer.liveness is not None:
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        analyzer.liveness.scores(frame, [Detection(np.array([100, 100, 200, 220], np.float32),
                                                   1.0, np.zeros((5, 2), np.float32))])


def enrollment_faces(analyzer: FaceAnalyzer, liveness: LivenessConfig,
                     ) -> Callable[[np.ndarray], List[Face]]:
    """What walk-up enrollment analyses a frame with: with ``liveness.mode = "require"`` a
    face that the passive check does not find live is rejected, so a photo or a screen
    shown to the kiosk is never enrolled (the head turns it asks for are its movement)."""
    if liveness.mode != "require":
        return analyzer.analyze

    def analyze(frame: np.ndarray) -> List[Face]:
        faces = analyzer.analyze(frame, live=True)
        for face in faces:
            verdict = passive_verdict(liveness, face.live)
            if face.encoding is not None and verdict.decision != LIVE:
                face.encoding, face.rejected = None, f"not live: {verdict.reason}"
        return faces
    return analyze


class Heartbeat(Notifier):
    """The face path's notifier: it tells systemd nothing (inside the kiosk, the display loop
    does) and keeps the time of the capture loop's last watchdog ping, sent after each frame
    and while the loop waits for one."""

    def __init__(self) -> None:
        super().__init__({})  # no NOTIFY_SOCKET: silent
        self.watchdog_seconds = 0.4  # the loop pings at most every 0.1 s
        self.last = time.monotonic()

    def watchdog(self) -> bool:
        self.last = time.monotonic()
        return False


class FacePath:
    """The face path on a thread over the kiosk's frames; ``post`` from the display loop,
    ``draw`` on each frame shown."""

    def __init__(self, config: Config, analyzer: FaceAnalyzer,
                 load_matcher: Callable[[], Matcher]):
        """``config``: as ``face_config`` makes it."""
        self.nice = config.kiosk.faces_nice
        self.blur = config.kiosk.blur_unknown
        self.tap = FrameTap()
        self.board = FaceBoard(config.kiosk.greeting, config.kiosk.greeting_seconds)
        self.heartbeat = Heartbeat()
        self.runner = Runner(config, analyzer, load_matcher, source=self.tap,
                             observer=self.board, notifier=self.heartbeat)
        self.runner.loop.observer = self._observe
        self.runner.loop.liveness.challenges = config.liveness.challenge == "turn"
        self.gallery_path = config.gallery_path
        self.gallery_limits = config.gallery
        self.audit = AuditLog.from_config(config)
        loop = self.runner.loop
        self.enrollment = WalkUpEnrollment(
            config.kiosk, enrollment_faces(analyzer, config.liveness), self._known,
            lambda: loop.matcher.names,
            self._save, config.quality.min_face)
        self.on_failure: Callable[[], None] = lambda: None
        self.error: Optional[Exception] = None
        self.frames_posted = 0
        self._thread = threading.Thread(target=self._run, name="face-path", daemon=True)

    def start(self) -> FacePath:
        """Warm the face models up, connect (when there is an MQTT node), start the thread."""
        warm_up(self.runner.loop.analyzer)
        self.runner.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            if self.nice and hasattr(os, "setpriority"):  # this thread only (Linux)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
            self.runner.run()
        except Exception as exc:  # noqa: BLE001 - re-raised on the kiosk's thread by finish
            self.error = exc
            self.on_failure()

    def alive(self, within: float) -> bool:
        """The face path's thread runs and has finished a frame, or waited for one, within
        the last ``within`` seconds (False: it hangs)."""
        return self._thread.is_alive() and time.monotonic() - self.heartbeat.last <= within

    def post(self, frame: np.ndarray) -> None:
        self.frames_posted += 1
        self.tap.post(frame)

    def _observe(self, frame: np.ndarray, tracks: List[Track]) -> None:
        """After each of the face path's frames (on its thread)."""
        self.board.observe(frame, tracks)
        self.enrollment.observe(frame)

    def _known(self, encodings: np.ndarray) -> List[Optional[str]]:
        return [d.name for d in self.runner.loop.matcher.identify(encodings)]

    def _save(self, name: str, encodings: np.ndarray) -> None:
        """A walk-up enrollment's encodings into the gallery file (a new name only), then
        the face path switches to it (on its own thread: this runs there)."""
        manifest = self.runner.loop.analyzer.encoder_manifest
        enroll_encodings(self.gallery_path, manifest, encodings.shape[1], self.gallery_limits,
                         {name: encodings}, only_new=True)
        self.audit.note("enroll", name=name, encodings=len(encodings), total=len(encodings),
                        source="kiosk")
        self.runner.reload()

    def main_style(self) -> Optional[str]:
        """The style stored with the recognised person whose face is largest now, if any."""
        name = self.board.main_person()
        if name is None:
            return None
        try:
            return self.runner.loop.matcher.gallery.person(name).style
        except GalleryError:  # removed from the gallery since
            return None

    def draw(self, shown: np.ndarray) -> None:
        """Boxes and labels (faces not recognised pixelated with ``kiosk.blur_unknown``),
        the newest greeting, and a walk-up enrollment under way."""
        labels, size = self.board.labels()
        draw_labels(shown, labels, size, self.blur)
        greetings = self.board.greetings()
        prompt = self.board.prompt()
        if greetings or prompt:
            draw_greeting(shown, greetings[-1] if greetings else str(prompt))
        screen = self.enrollment.screen()
        if screen is not None:
            draw_enrollment(shown, screen)

    def finish(self, timeout: Optional[float] = None) -> None:
        """No more frames: the face path takes the last one, ends its tracks and stops;
        raises what stopped it, if anything did. An enrollment under way stops."""
        self.enrollment.camera_lost()
        self.tap.end()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the thread, then close what the runner opened (the outbox is flushed)."""
        self.runner.loop.shutdown()
        if self._thread.is_alive():
            self._thread.join()
        self.runner.close()

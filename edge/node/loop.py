"""The capture loop: capture -> detect -> align -> embed -> live -> match -> track ->
publish."""

from __future__ import annotations

import logging
import queue
import threading
import time
import typing
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..capture.reader import KEEPALIVE, FrameReader
from ..capture.sources import STREAM_TIMEOUT_MS, Frame, Source
from ..core.audit import AuditLog
from ..core.config import Config
from ..faces.analyzer import Face, FaceAnalyzer
from ..faces.decisions import Matcher
from ..faces.detection import Detection
from ..faces.events import FaceEvent
from ..faces.live_decision import SPOOF, LivenessPolicy
from ..faces.schedule import ReencodeSchedule
from ..faces.tracker import UNKNOWN, Track, Tracker, TrackEvent
from ..service.sd_notify import Notifier
from .sinks import Sink

log = logging.getLogger(__name__)
RECENT_DECISIONS = 256  # events whose encoding stays in memory for `gallery reject --event`


def _number(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


class Camera:
    """One camera of the loop: its name, its own tracker and re-encode schedule, what is kept
    of its live tracks, and, while the loop runs, its source and reader."""

    def __init__(self, name: str, config: Config):
        self.name = name
        self.tracker = Tracker(config.tracker)
        self.schedule = ReencodeSchedule(config.tracker.reembed_every)
        self.frames = 0
        self.source: Optional[Source] = None
        self.reader: Optional[FrameReader] = None
        self.crops: Dict[int, np.ndarray] = {}  # track id -> latest aligned face
        self.encodings: Dict[int, np.ndarray] = {}  # track id -> latest encoding


Shot = Tuple[Camera, np.ndarray]  # a camera's newest frame in a tick
Encoded = Tuple[Camera, Track, np.ndarray, Face]  # a face encoded in a tick, and its track


class CaptureLoop:
    """Runs the face path over the frames of one or more cameras and publishes their track
    events to a sink. Each tick takes the newest frame of every camera that has a new one:
    each frame through the detector, one encoder batch for every face due, then each
    camera's tracks."""

    def __init__(self, config: Config, analyzer: FaceAnalyzer, matcher: Matcher, sink: Sink,
                 notifier: Optional[Notifier] = None, cameras: Sequence[str] = ()):
        """``cameras``: their names, in the order ``run`` gets their sources (default: one,
        ``run.camera``)."""
        self.config = config
        self.notifier = notifier or Notifier()  # systemd: READY=1, WATCHDOG=1 from this loop
        self.audit = AuditLog.from_config(config)  # match decisions are recorded there
        self.analyzer = analyzer
        self.matcher = matcher
        self.liveness = LivenessPolicy(config.liveness, analyzer.liveness is not None)
        self.sink = sink
        self.cameras = [Camera(name, config) for name in cameras or [config.run.camera]]
        self.model = {"encoder": analyzer.encoder_manifest.name,
                      "fingerprint": analyzer.fingerprint}
        self.frames = 0  # of all cameras
        self.ticks = 0
        self.stage_seconds: Dict[str, float] = defaultdict(float)  # summed over ticks
        self.stop = threading.Event()
        self.recognition = threading.Event()  # cleared: frames are read but not analysed
        self.recognition.set()
        # event id -> the encoding it was decided on; memory only, the latest few
        self._decided: typing.OrderedDict[str, np.ndarray] = OrderedDict()
        self._decided_lock = threading.Lock()
        self._wake = threading.Event()  # a reader has a frame, or has ended
        self._pinged = -float("inf")
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # of Callable[[], None]
        # called after each frame with the frame and its camera's live tracks (kiosk overlay)
        self.observer: Optional[Callable[[np.ndarray, List[Track]], None]] = None

    @property
    def schedule(self) -> ReencodeSchedule:
        """The first camera's re-encode schedule (the only one of a kiosk or a bench)."""
        return self.cameras[0].schedule

    def process(self, shots: Sequence[Shot]) -> None:
        """One tick: detect -> align -> embed -> live -> match -> track -> publish."""
        if not self.recognition.is_set():
            for camera, frame in shots:
                self._publish(camera, camera.tracker.finish())
                self._observe(camera, frame)
            return
        t0 = time.perf_counter()
        found = [self.analyzer.detector.detect(frame) for _, frame in shots]
        tracks = [camera.tracker.assign([d.box for d in dets], [d.score for d in dets])
                  for (camera, _), dets in zip(shots, found)]
        due = [camera.schedule.pick(live) for (camera, _), live in zip(shots, tracks)]
        t1 = time.perf_counter()
        faces = self.analyzer.analyze_many([(frame, [dets[i] for i in picked]) for
                                            (_, frame), dets, picked in zip(shots, found, due)])
        t2 = time.perf_counter()
        encoded = [(camera, live[i], encoding, face) for (camera, _), live, picked, got
                   in zip(shots, tracks, due, faces) for i, face in zip(picked, got)
                   if (encoding := face.encoding) is not None]
        for camera, track, encoding, face in encoded:
            camera.encodings[track.track_id] = encoding
            if self.sink.wants_crops and face.crop is not None:
                camera.crops[track.track_id] = face.crop
        self._landmarks(tracks, found)
        self._score_live(shots, encoded)
        t3 = time.perf_counter()
        decisions = self.matcher.identify(np.array([e for _, _, e, _ in encoded]))
        t4 = time.perf_counter()
        votes = [(camera, camera.tracker.vote(track, d.name or UNKNOWN, d.distance, d.threshold))
                 for (camera, track, _, _), d in zip(encoded, decisions)]
        for (camera, _), live in zip(shots, tracks):
            decided = [e for c, e in votes if c is camera and e]
            self._publish(camera, decided + self._live_changes(camera, decided)
                          + camera.tracker.expire(live))
        t5 = time.perf_counter()
        for camera, frame in shots:
            self._observe(camera, frame)
            camera.frames += 1
        self.frames += len(shots)
        self.ticks += 1
        for stage, seconds in (("detect", t1 - t0), ("embed", t2 - t1), ("live", t3 - t2),
                               ("match", t4 - t3), ("track+publish", t5 - t4)):
            self.stage_seconds[stage] += seconds

    def _landmarks(self, tracks: List[List[Track]], found: List[List[Detection]]) -> None:
        """Each track's landmarks of this frame, for the liveness geometry."""
        if self.liveness.on:
            for live, dets in zip(tracks, found):
                for track, detection in zip(live, dets):
                    self.liveness.state(track).observe(detection.landmarks)

    def _score_live(self, shots: Sequence[Shot], encoded: List[Encoded]) -> None:
        """The passive live score of each encoded face whose track is due one, one liveness
        run per frame."""
        if not self.liveness.on:
            return
        due = [(camera, track, face) for camera, track, _, face in encoded
               if self.liveness.state(track).due()]
        self.analyzer.score_live([(frame, [f for c, _, f in due if c is camera])
                                  for camera, frame in shots])
        for _, track, face in due:
            if face.live is not None:
                self.liveness.state(track).score(face.live)

    def _live_changes(self, camera: Camera, decided: List[TrackEvent]) -> List[TrackEvent]:
        """An update for each announced track whose liveness verdict (or its challenge) has
        changed since it was last published, unless it has a decision to publish already."""
        if not self.liveness.on:
            return []
        deciding = {id(e.track) for e in decided}
        changed = []
        for track in camera.tracker.tracks:
            if track.announced is None or id(track) in deciding or track.live is None:
                continue
            if self._published_key(track) != track.live.published:
                changed.append(TrackEvent("update", track, *track.summary(track.announced)))
        return changed

    def _published_key(self, track: Track) -> Tuple[str, ...]:
        """What a liveness update would change: the verdict, the challenge's side and state."""
        verdict = self.liveness.verdict(track, False)
        challenge = verdict.challenge or {}
        return (str(verdict.decision), str(challenge.get("side")), str(challenge.get("state")))

    def _observe(self, camera: Camera, frame: np.ndarray) -> None:
        if self.observer is not None:
            self.observer(frame, list(camera.tracker.tracks))

    def _publish(self, camera: Camera, track_events: List[TrackEvent]) -> None:
        for te in track_events:
            event = FaceEvent.from_track(
                te, camera.name, self.model, self.config.gallery.uncertain_margin,
                self.matcher.rule_for(None if te.label == UNKNOWN else te.label), self.liveness)
            if te.track.live is not None:
                te.track.live.published = self._published_key(te.track)
            crop: Optional[np.ndarray] = camera.crops.get(te.track.track_id)
            self._remember(event.event_id, camera.encodings.get(te.track.track_id))
            if event.decision == "match" and event.event != "end":  # what may open a door
                self.audit.note("match", name=event.name, camera=event.camera,
                                event_id=event.event_id, event=event.event,
                                distance=_number(event.distance),
                                threshold=_number(event.threshold))
            if event.live.get("decision") == SPOOF and event.event != "end":  # kept on record
                self.audit.note("spoof", name=event.name, camera=event.camera,
                                event_id=event.event_id, reason=event.live["reason"])
            self.sink.publish(event.as_dict(), crop)
        live = {t.track_id for t in camera.tracker.tracks}
        for kept in (camera.crops, camera.encodings):  # ended tracks, announced or not
            for track_id in [k for k in kept if k not in live]:
                del kept[track_id]

    def _remember(self, event_id: str, encoding: Optional[np.ndarray]) -> None:
        if encoding is None:
            return
        with self._decided_lock:
            self._decided[event_id] = encoding
            while len(self._decided) > RECENT_DECISIONS:
                self._decided.popitem(last=False)

    def decided_encoding(self, event_id: str) -> Optional[np.ndarray]:
        """The encoding a recent event was decided on (safe from other threads); None once
        it is older than the last ``RECENT_DECISIONS`` events."""
        with self._decided_lock:
            return self._decided.get(event_id)

    def run(self, *sources: Source) -> int:
        """Process ticks until every source has ended or ``stop`` is set; one source per
        camera, in order; returns the frames processed. Each source is read by a thread of
        its own (``FrameReader``). A source that fails (a clip's unreadable frame, a live one
        given up: ``GaveUp``) stops the others and its error is raised once every track has
        ended. The sources stay open: whoever opened them closes them."""
        if len(sources) != len(self.cameras):
            raise ValueError(f"{len(sources)} sources for {len(self.cameras)} cameras")
        started = time.monotonic()
        readers = [FrameReader(source, self._wake, camera.name)
                   for camera, source in zip(self.cameras, sources)]
        for camera, source, reader in zip(self.cameras, sources, readers):
            camera.source, camera.reader = source, reader.start()
        try:
            while not self.stop.is_set() and not all(r.finished for r in readers):
                self._wake.wait(KEEPALIVE)
                self._wake.clear()
                arrived = [(camera, reader.take()) for camera, reader in zip(self.cameras, readers)]
                shots = [(camera, frame) for camera, frame in arrived if frame is not None]
                if shots:
                    self._tick(shots)
                for camera, reader in zip(self.cameras, readers):
                    if reader.finished:  # a clip that has ended: its tracks end now
                        self._publish(camera, camera.tracker.finish())
                failed = next((r.error for r in readers if r.error is not None), None)
                if failed is not None:
                    raise failed
                self.between_frames()
        finally:
            self._close(readers)
        elapsed = time.monotonic() - started
        log.info("%d frames in %.1fs (%.1f fps)", self.frames, elapsed,
                 self.frames / max(elapsed, 1e-9))
        return self.frames

    def _tick(self, shots: Sequence[Tuple[Camera, Frame]]) -> None:
        """``process``, then each camera's re-encode schedule paced against its budget,
        READY after the first tick, and ``run.max_fps`` kept."""
        tick = time.monotonic()
        self.process([(camera, frame) for camera, (frame, _) in shots])
        for camera, _ in shots:
            camera.schedule.pace(time.monotonic() - tick, self._budget(camera.source))
        if self.ticks == 1:  # models loaded and the first frames through
            self.notifier.ready("processing " + ", ".join(
                f"{c.name} ({c.source.uri})" for c in self.cameras if c.source))
        if self.config.run.max_fps > 0:
            time.sleep(max(0.0, 1.0 / self.config.run.max_fps - (time.monotonic() - tick)))

    def _close(self, readers: List[FrameReader]) -> None:
        """Stop the readers and wait for them (a source is closed only after its reader has
        left it), then STOPPING=1 and every track ended."""
        for reader in readers:
            reader.stop()
        for reader in readers:
            reader.join(STREAM_TIMEOUT_MS / 1000 + 1)
        self.notifier.stopping()
        for camera in self.cameras:
            self._publish(camera, camera.tracker.finish())

    def _budget(self, source: Optional[Source]) -> Optional[float]:
        """Seconds a frame may take: one of ``run.max_fps``, else of a live source's rate
        (None for a clip read as fast as it is processed)."""
        rate = self.config.run.max_fps or (source.rate if source else None)
        return 1.0 / rate if rate else None

    def _readers_alive(self) -> bool:
        """Every camera's reader has delivered a frame, waited for the loop or for its
        source (reopening a lost camera) within the watchdog period (at least twice the
        keepalive interval): False while one hangs inside a read."""
        within = max(self.notifier.watchdog_seconds or 0.0, 2 * KEEPALIVE)
        return all(c.reader is None or c.reader.alive(within) for c in self.cameras)

    def between_frames(self) -> None:
        """On the loop's own thread: WATCHDOG=1 while every reader is alive (so a hung loop
        or reader stops the pings and is restarted) and the work asked for with
        ``call_soon``."""
        watchdog = self.notifier.watchdog_seconds
        now = time.monotonic()
        if watchdog and now - self._pinged >= watchdog / 4 and self._readers_alive():
            self.notifier.watchdog()
            self._pinged = now
        while not self._requests.empty():
            self._requests.get_nowait()()

    def call_soon(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the loop's thread between frames (safe from signal handlers)."""
        self._requests.put(work)

    def shutdown(self) -> None:
        """Stop at the next frame or wait (safe from signal handlers and other threads)."""
        self.stop.set()
        for camera in self.cameras:
            if camera.source is not None:
                camera.source.stop()
        self._wake.set()

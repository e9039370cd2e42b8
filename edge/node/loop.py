"""The capture loop: capture -> detect -> align -> embed -> match -> track -> publish."""

from __future__ import annotations

import logging
import queue
import threading
import time
import typing
from collections import OrderedDict, defaultdict
from typing import Callable, Dict, List, Optional

import numpy as np

from ..capture.sources import Source
from ..core.audit import AuditLog
from ..core.config import Config
from ..faces.analyzer import FaceAnalyzer
from ..faces.decisions import Matcher
from ..faces.events import FaceEvent
from ..faces.schedule import ReencodeSchedule
from ..faces.tracker import UNKNOWN, Track, Tracker, TrackEvent
from ..service.sd_notify import Notifier
from .sinks import Sink

log = logging.getLogger(__name__)
RECENT_DECISIONS = 256  # events whose encoding stays in memory for `gallery reject --event`


def _number(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


class CaptureLoop:
    """Runs the per-frame path over a source and publishes track events to a sink."""

    def __init__(self, config: Config, analyzer: FaceAnalyzer, matcher: Matcher, sink: Sink,
                 notifier: Optional[Notifier] = None):
        self.config = config
        self.notifier = notifier or Notifier()  # systemd: READY=1, WATCHDOG=1 from this loop
        self.audit = AuditLog.from_config(config)  # match decisions are recorded there
        self.analyzer = analyzer
        self.matcher = matcher
        self.sink = sink
        self.tracker = Tracker(config.tracker)
        self.schedule = ReencodeSchedule(config.tracker.reembed_every)
        self.model = {"encoder": analyzer.encoder_manifest.name,
                      "fingerprint": analyzer.fingerprint}
        self.frames = 0
        self.stage_seconds: Dict[str, float] = defaultdict(float)
        self.stop = threading.Event()
        self.recognition = threading.Event()  # cleared: frames are read but not analysed
        self.recognition.set()
        self._crops: Dict[int, np.ndarray] = {}  # track id -> latest aligned face
        self._encodings: Dict[int, np.ndarray] = {}  # track id -> latest encoding
        # event id -> the encoding it was decided on; memory only, the latest few
        self._decided: typing.OrderedDict[str, np.ndarray] = OrderedDict()
        self._decided_lock = threading.Lock()
        self.source: Optional[Source] = None
        self._pinged = -float("inf")
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # of Callable[[], None]
        # called after each frame with the frame and the live tracks (the kiosk's overlay)
        self.observer: Optional[Callable[[np.ndarray, List[Track]], None]] = None

    def process(self, frame: np.ndarray) -> None:
        """One frame: detect -> align -> embed -> match -> track -> publish."""
        if not self.recognition.is_set():
            self._publish(self.tracker.finish())
            self._observe(frame)
            return
        t0 = time.perf_counter()
        detections = self.analyzer.detector.detect(frame)
        tracks = self.tracker.assign([d.box for d in detections], [d.score for d in detections])
        due = self.schedule.pick(tracks)
        t1 = time.perf_counter()
        faces = self.analyzer.analyze(frame, [detections[i] for i in due])
        t2 = time.perf_counter()
        encoded = [(tracks[i], f.encoding) for i, f in zip(due, faces) if f.encoding is not None]
        self._encodings.update((track.track_id, e) for track, e in encoded)
        if self.sink.wants_crops:
            self._crops.update((tracks[i].track_id, f.crop) for i, f in zip(due, faces)
                               if f.crop is not None)
        decisions = self.matcher.identify(np.array([e for _, e in encoded]))
        t3 = time.perf_counter()
        events = [self.tracker.vote(track, d.name or UNKNOWN, d.distance, d.threshold)
                  for (track, _), d in zip(encoded, decisions)]
        self._publish([e for e in events if e] + self.tracker.expire(tracks))
        t4 = time.perf_counter()
        self._observe(frame)
        self.frames += 1
        for stage, seconds in (("detect", t1 - t0), ("embed", t2 - t1), ("match", t3 - t2),
                               ("track+publish", t4 - t3)):
            self.stage_seconds[stage] += seconds

    def _observe(self, frame: np.ndarray) -> None:
        if self.observer is not None:
            self.observer(frame, list(self.tracker.tracks))

    def _publish(self, track_events: List[TrackEvent]) -> None:
        for te in track_events:
            event = FaceEvent.from_track(
                te, self.config.run.camera, self.model, self.config.gallery.uncertain_margin,
                self.matcher.rule_for(None if te.label == UNKNOWN else te.label))
            crop: Optional[np.ndarray] = self._crops.get(te.track.track_id)
            self._remember(event.event_id, self._encodings.get(te.track.track_id))
            if event.decision == "match" and event.event != "end":  # what may open a door
                self.audit.note("match", name=event.name, camera=event.camera,
                                event_id=event.event_id, event=event.event,
                                distance=_number(event.distance),
                                threshold=_number(event.threshold))
            self.sink.publish(event.as_dict(), crop)
        live = {t.track_id for t in self.tracker.tracks}
        for kept in (self._crops, self._encodings):  # ended tracks, announced or not
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

    def run(self, source: Source) -> int:
        """Process frames until the source ends or ``stop`` is set; returns frames processed.
        The source stays open: whoever opened it closes it."""
        started = time.monotonic()
        self.source = source
        source.keepalive = self.between_frames  # a source waiting to reopen is not hung
        try:
            for count, (frame, _) in enumerate(source.frames(), 1):
                if self.stop.is_set():
                    break
                tick = time.monotonic()
                self.process(frame)
                self.schedule.pace(time.monotonic() - tick, self._budget(source))
                if count == 1:  # models loaded and the first frame through
                    self.notifier.ready(f"processing {self.config.run.source or 'frames'}")
                self.between_frames()
                if self.config.run.max_fps > 0:
                    time.sleep(max(0.0, 1.0 / self.config.run.max_fps
                                   - (time.monotonic() - tick)))
        finally:
            self.notifier.stopping()
            self._publish(self.tracker.finish())
        elapsed = time.monotonic() - started
        log.info("%d frames in %.1fs (%.1f fps)", self.frames, elapsed,
                 self.frames / max(elapsed, 1e-9))
        return self.frames

    def _budget(self, source: Source) -> Optional[float]:
        """Seconds a frame may take: one of ``run.max_fps``, else of a live source's rate
        (None for a clip read as fast as it is processed)."""
        rate = self.config.run.max_fps or source.rate
        return 1.0 / rate if rate else None

    def between_frames(self) -> None:
        """On the loop's own thread: WATCHDOG=1 (so a hung loop stops pinging and is
        restarted) and the work asked for with ``call_soon``."""
        watchdog = self.notifier.watchdog_seconds
        now = time.monotonic()
        if watchdog and now - self._pinged >= watchdog / 4:
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
        if self.source is not None:
            self.source.stop()

"""`jetkiosk run` as a service: the capture loop with its source, sinks, signals, reload and
metrics.

SIGTERM (and SIGINT) stop capture; the outbox is flushed within ``mqtt.flush_timeout``, the
camera and node are published offline, and the exit status is 0. SIGHUP reloads the
configuration and the gallery between frames, keeping the MQTT session; a changed gallery
file is reloaded between frames too, without a signal.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
from types import FrameType, TracebackType
from typing import Any, Callable, Dict, Iterator, Optional, Type, final
from urllib.parse import urlsplit

from ..capture.reconnect import GaveUp, ReconnectingSource, StateChange
from ..capture.sources import LIVE_SCHEMES, Source, open_source
from ..core.config import Config
from ..faces.analyzer import FaceAnalyzer
from ..faces.decisions import Matcher
from ..mqtt.link import link_from_config
from ..mqtt.outbox import Outbox
from ..mqtt.topics import Topics, check_level
from ..service.sd_notify import Notifier
from .cameras import camera_sources
from .loop import CaptureLoop
from .metrics import LoopCollector, MetricsServer
from .mqtt_sink import MqttSink
from .node import Node
from .reload import GalleryWatch, Reloader
from .retention import Retention
from .sinks import FanoutSink, Sink, open_sink, sink_uris

log = logging.getLogger(__name__)


@contextlib.contextmanager
def signal_handlers(handlers: Dict[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """Install ``handlers`` (main thread only) and restore the previous ones afterwards."""
    def handler(number: int, frame: Optional[FrameType]) -> None:
        handlers[signal.Signals(number)]()

    previous = {sig: signal.signal(sig, handler) for sig in handlers}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def open_service_source(uri: str, config: Config,
                        on_state: Optional[StateChange] = None) -> Source:
    """``uri`` as a service reads it: a live source (camera, stream) is reopened when lost,
    each change of its availability going to ``on_state``, until ``run.retries``; a clip or
    an image folder is opened once."""
    if urlsplit(uri).scheme not in LIVE_SCHEMES:
        return open_source(uri, images=config.images)
    return ReconnectingSource(uri, config.run, on_state or (lambda online: None))


def serve_until_stopped(run: Callable[[], object], stop: Callable[[], None],
                        reload: Callable[[], None]) -> int:
    """``run()`` as a service: SIGTERM and SIGINT call ``stop``, SIGHUP ``reload``; the
    handlers stay in place until ``run`` has returned, its flush included, so that a second
    signal cannot cut that short. 0, or 1 when a live source was given up (``run.retries``,
    ``GaveUp``) so that systemd restarts the service."""
    with signal_handlers({signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}):
        try:
            run()
        except GaveUp as exc:
            log.error("%s; exiting with status 1 so that the service is restarted", exc)
            return 1
    return 0


@final
class Runner:
    """The one owner of what a run opens.

    Opened in this order, and closed once in the reverse order however the ``with`` block is
    left (the source's end, ``loop.shutdown`` from a signal, an exception while opening,
    connecting or running):

    1. the outbox and the MQTT link, when ``run.sink`` names ``mqtt``;
    2. the sinks (``jsonl`` files);
    3. the metrics endpoint (``metrics.listen``);
    4. the sources, one per camera (``camera_sources``: ``run.source`` or ``[[run.cameras]]``),
       opened before any connection so that a bad one fails fast, unless the caller hands in
       a source of its own (the kiosk's frames, camera ``run.camera``), which it closes;
    5. the gallery watch: a thread that looks at the gallery file once a second and has the
       loop reload it between frames when it has changed;
    6. retention (``retention.Retention``): a sink noting each match, and a thread that has
       the loop save last-seen times and remove expired people every hour.

    Closing the link drains the outbox for up to ``mqtt.flush_timeout`` s and publishes the
    node ``offline``; the outbox is closed only after the link's thread has stopped.
    """

    def __init__(self, config: Config, analyzer: FaceAnalyzer,
                 load_matcher: Callable[[], Matcher],
                 load_config: Optional[Callable[[], Config]] = None,
                 source: Optional[Source] = None, observer: Optional[Sink] = None,
                 notifier: Optional[Notifier] = None):
        """``load_config`` is what SIGHUP reads (default: the same settings, the gallery
        reloaded); ``source``: frames the caller owns, instead of opening the cameras';
        ``observer``: a sink that also gets every event (not closed here); ``notifier``:
        where the loop reports READY/WATCHDOG/STOPPING (default: systemd's, if any)."""
        self.config = config
        self.load_matcher = load_matcher
        self.watch = GalleryWatch(  # before loading: a change from now on is seen
            lambda: config.gallery_path,
            lambda: self.loop.call_soon(self.reloader.gallery_changed))
        matcher = load_matcher()
        cameras = camera_sources(config.run) if source is None else \
            [(config.run.camera, source.uri)]
        self.node: Optional[Node] = None
        self.metrics: Optional[MetricsServer] = None
        with contextlib.ExitStack() as stack:
            mqtt = self._open_mqtt(stack) if "mqtt" in sink_uris(config.run.sink) else None
            sink = open_sink(config.run.sink, {"mqtt": mqtt} if mqtt else {})
            stack.callback(sink.close)
            self.retention = Retention(config)
            sink = FanoutSink([sink, self.retention] + ([observer] if observer else []))
            self.loop = CaptureLoop(config, analyzer, matcher, sink, notifier,
                                    [name for name, _ in cameras])
            if mqtt is not None:
                check_level(config.run.camera, "run.camera")
                self.node = Node(config, self.loop, mqtt, load_matcher)
            self.reloader = Reloader(config, load_config or (lambda: config), self.reload)
            if config.metrics.listen:
                self.metrics = MetricsServer(config.metrics.listen, LoopCollector(
                    self.loop, self.node.outbox_figures if self.node else None,
                    lambda: self.reloader.reloads))
                stack.callback(self.metrics.close)
                log.info("metrics on http://%s/metrics", config.metrics.listen)
            self.sources = [source] if source else [self._open_source(stack, name, uri)
                                                    for name, uri in cameras]
            stack.callback(self.watch.close)
            self.watch.start()
            self.retention.call_soon = self.loop.call_soon
            stack.callback(self.retention.close)
            self.retention.start()
            self._opened = stack.pop_all()

    def _open_mqtt(self, stack: contextlib.ExitStack) -> MqttSink:
        """The outbox and the link to the broker (not connected yet), registered on
        ``stack`` so that the link is closed before the outbox it drains."""
        settings = self.config.mqtt
        topics = Topics.from_config(settings)
        outbox = Outbox(self.config.outbox_path, settings.outbox_capacity)
        stack.callback(outbox.close)
        link = link_from_config(settings, topics, outbox, topics.availability)
        stack.callback(link.close, settings.flush_timeout)
        return MqttSink(link, topics, settings.face_crops, settings.presence_refresh)

    def _open_source(self, stack: contextlib.ExitStack, name: str, uri: str) -> Source:
        """Camera ``name``'s source, closed with ``stack``; a live one reopens itself, its
        state going to MQTT when there is a node."""
        on_state = functools.partial(self.node.camera_state, camera=name) if self.node else None
        source = open_service_source(uri, self.config, on_state)
        stack.callback(source.close)
        return source

    def start(self) -> Runner:
        """Connect to the broker, if there is one (see ``Node.start``)."""
        if self.node is not None:
            self.node.start()
        return self

    def run(self) -> int:
        """The capture loop over the cameras until they end or ``loop.shutdown``; returns the
        frames processed."""
        if self.node is None:
            return self.loop.run(*self.sources)
        return self.node.run(*self.sources)

    def reload(self) -> Dict[str, Any]:
        """The gallery again (SIGHUP, a changed file); the loop switches at its next frame."""
        if self.node is not None:
            return self.node.reload()
        self.loop.matcher = self.load_matcher()
        return {"people": len(self.loop.matcher.names)}

    def close(self) -> None:
        """Close everything opened, in reverse order; a second call does nothing."""
        self._opened.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()


def serve(config: Config, analyzer: FaceAnalyzer, load_matcher: Callable[[], Matcher],
          load_config: Callable[[], Config]) -> int:
    """Run until the cameras end or a signal stops it: 0, or 1 when a live camera was given
    up (``run.retries``: the other cameras stop too) so that systemd restarts the service."""
    with Runner(config, analyzer, load_matcher, load_config) as runner:
        loop = runner.loop

        def run() -> None:
            try:
                runner.start().run()
            finally:
                runner.close()  # under the handlers: a second signal cannot cut the flush short

        return serve_until_stopped(run, loop.shutdown, lambda: loop.call_soon(runner.reloader))

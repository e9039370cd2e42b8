"""`jetkiosk run` as a service: the capture loop with its source, sinks, signals, reload and
metrics.

SIGTERM (and SIGINT) stop capture; the outbox is flushed within ``mqtt.flush_timeout``, the
camera and node are published offline, and the exit status is 0. SIGHUP reloads the
configuration and the gallery between frames, keeping the MQTT session.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from types import FrameType
from typing import Callable, Dict, Iterator, Optional
from urllib.parse import urlsplit

from ..capture.reconnect import ReconnectingSource
from ..capture.sources import LIVE_SCHEMES, Source, open_source
from ..core.config import Config
from ..core.errors import SourceError
from ..faces.analyzer import FaceAnalyzer
from ..faces.decisions import Matcher
from .loop import CaptureLoop
from .metrics import LoopCollector, MetricsServer
from .node import Node
from .reload import Reloader
from .sinks import open_sink, sink_uris

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


def serve(config: Config, analyzer: FaceAnalyzer, load_matcher: Callable[[], Matcher],
          load_config: Callable[[], Config]) -> int:
    """Run until the source ends or a signal stops it: 0, or 1 when a live source was given
    up (``run.retries``) so that systemd restarts the service."""
    node: Optional[Node] = None
    if "mqtt" in sink_uris(config.run.sink):
        node = Node(config, analyzer, load_matcher)
        loop = node.loop
    else:
        loop = CaptureLoop(config, analyzer, load_matcher(), open_sink(config.run.sink))

    def reload_gallery() -> Dict[str, object]:
        if node is not None:
            return node.reload()
        loop.matcher = load_matcher()
        return {"people": len(loop.matcher.names)}

    reloader = Reloader(config, load_config, reload_gallery)
    metrics = None
    try:
        source = _open(config, node)
        if config.metrics.listen:
            metrics = MetricsServer(config.metrics.listen, LoopCollector(
                loop, node.outbox_figures if node else None, lambda: reloader.reloads))
            log.info("metrics on http://%s/metrics", config.metrics.listen)
    except BaseException:
        loop.sink.close()
        raise
    stop = loop.shutdown
    with signal_handlers({signal.SIGTERM: stop, signal.SIGINT: stop,
                          signal.SIGHUP: lambda: loop.call_soon(reloader)}):
        try:
            if node is not None:
                node.start().run(source)
            else:
                try:
                    loop.run(source)
                finally:
                    loop.sink.close()
        except SourceError as exc:
            if not isinstance(source, ReconnectingSource):
                raise
            log.error("%s", exc)
            return 1
        finally:
            if metrics is not None:
                metrics.close()
    return 0


def _open(config: Config, node: Optional[Node]) -> Source:
    """A live source reopens itself; its state goes to MQTT when there is a node."""
    uri = config.run.source
    if urlsplit(uri).scheme not in LIVE_SCHEMES:
        return open_source(uri)
    if node is None:
        return ReconnectingSource(uri, config.run)
    return ReconnectingSource(uri, config.run, node.camera_state)

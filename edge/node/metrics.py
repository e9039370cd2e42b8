"""An optional Prometheus text endpoint (``metrics.listen``) over the capture loop's
counters: frames, per-stage seconds, the source's state, the outbox, the gallery.

prometheus_client serves it: the exposition format, content negotiation and the HTTP
server are its job, not ours. Rates and mean latencies are PromQL's:
``rate(jetkiosk_stage_seconds_total[1m]) / rate(jetkiosk_frames_total[1m])``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from ..core.errors import ConfigError
from .loop import CaptureLoop
from .telemetry import source_state


def listen_address(text: str) -> Tuple[str, int]:
    """``host:port`` (``:port`` for every interface) of ``metrics.listen``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"metrics.listen: {text!r}: expected host:port, e.g. 127.0.0.1:9108")
    return host.strip("[]") or "0.0.0.0", int(port)


class LoopCollector:
    """Reads the loop's counters at each scrape."""

    def __init__(self, loop: CaptureLoop, outbox: Optional[Callable[[], Dict[str, int]]] = None,
                 reloads: Callable[[], int] = lambda: 0):
        self.loop = loop
        self.outbox = outbox
        self.reloads = reloads

    def collect(self) -> Iterator[Any]:
        loop = self.loop
        backend = loop.analyzer.encoder.backend
        info = GaugeMetricFamily("jetkiosk_info", "The running models", labels=[
            "camera", "backend", "precision", "encoder"])
        info.add_metric([",".join(c.name for c in loop.cameras), backend.describe(),
                         backend.precision, loop.model["encoder"]], 1)
        yield info
        yield CounterMetricFamily("jetkiosk_frames", "Frames analysed", value=loop.frames)
        stages = CounterMetricFamily("jetkiosk_stage_seconds", "Seconds spent per stage",
                                     labels=["stage"])
        for stage, seconds in loop.stage_seconds.items():
            stages.add_metric([stage], seconds)
        yield stages
        yield from self._cameras()
        yield GaugeMetricFamily("jetkiosk_recognition_enabled", "1 while faces are analysed",
                                value=float(loop.recognition.is_set()))
        yield GaugeMetricFamily("jetkiosk_gallery_people", "Enrolled people",
                                value=len(loop.matcher.names))
        yield CounterMetricFamily("jetkiosk_reloads", "Configuration reloads (SIGHUP)",
                                  value=self.reloads())
        if self.outbox is not None:
            figures = self.outbox()
            yield GaugeMetricFamily("jetkiosk_outbox_depth", "Events not yet acknowledged",
                                    value=figures["depth"])
            yield CounterMetricFamily("jetkiosk_outbox_dropped", "Events dropped, outbox full",
                                      value=figures["dropped"])


    def _cameras(self) -> Iterator[Any]:
        """Each camera's frames, source state and re-encode stride, labelled by its name."""
        frames = CounterMetricFamily("jetkiosk_camera_frames", "Frames analysed per camera "
                                     "(fps: its rate)", labels=["camera"])
        online = GaugeMetricFamily("jetkiosk_source_online", "1 while the camera delivers "
                                   "frames (reason: why it is offline)",
                                   labels=["camera", "reason"])
        reconnects = CounterMetricFamily("jetkiosk_source_reconnects",
                                         "Reopenings of the camera", labels=["camera"])
        stride = GaugeMetricFamily("jetkiosk_reencode_every", "Frames between two encodings of "
                                   "a decided face now (stretched while frames are over "
                                   "budget)", labels=["camera"])
        for camera in self.loop.cameras:
            state = source_state(camera.source)
            frames.add_metric([camera.name], camera.frames)
            online.add_metric([camera.name, state["reason"]], float(bool(state["online"])))
            reconnects.add_metric([camera.name], state["reconnects"])
            stride.add_metric([camera.name], camera.schedule.stride)
        yield from (frames, online, reconnects, stride)


class MetricsServer:
    """The endpoint on its own thread; ``close`` stops it."""

    def __init__(self, address: str, collector: LoopCollector):
        host, port = listen_address(address)
        registry = CollectorRegistry()
        registry.register(collector)  # type: ignore[arg-type]
        try:
            self.server, _ = start_http_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {address} ({exc})") from None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

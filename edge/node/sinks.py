"""Where events go: a small sink interface; JSON lines to stdout or a file, and fan-out.

The MQTT sink lives in ``mqtt_sink.py``; ``run.sink`` names sinks comma-separated.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import IO, Any, Dict, List, Mapping, Optional

import numpy as np

from ..core.errors import ConfigError


class Sink:
    """Receives each event as a JSON-serialisable dict (and the face crop if it wants it)."""

    wants_crops = False

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release."""


class JsonLinesSink(Sink):
    """One JSON object per line, flushed per event."""

    def __init__(self, stream: IO[str], owned: bool = False):
        self.stream = stream
        self.owned = owned

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        self.stream.write(json.dumps(event, sort_keys=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class FanoutSink(Sink):
    """Every event to every sink."""

    def __init__(self, sinks: List[Sink]):
        self.sinks = sinks
        self.wants_crops = any(s.wants_crops for s in sinks)

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        for sink in self.sinks:
            sink.publish(event, crop if sink.wants_crops else None)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _jsonl(target: str) -> Sink:
    if target == "-":
        return JsonLinesSink(sys.stdout)
    return JsonLinesSink(open(target, "a", encoding="utf-8"), owned=True)


def sink_uris(spec: str) -> List[str]:
    """The sinks named in ``run.sink`` (comma-separated)."""
    return [part.strip() for part in spec.split(",")]


def open_sink(spec: str, named: Optional[Mapping[str, Sink]] = None) -> Sink:
    """``jsonl:-`` (stdout), ``jsonl:/path/file.jsonl`` (append), or a sink the caller made,
    such as ``mqtt``, from ``named``; several separated by commas. Closing the result closes
    them all; when one cannot be opened, the files opened before it are closed."""
    named = named or {}
    sinks: List[Sink] = []
    with contextlib.ExitStack() as opened:
        for uri in sink_uris(spec):
            scheme, _, target = uri.partition(":")
            if scheme == "jsonl" and target:
                sinks.append(_jsonl(target))
                opened.callback(sinks[-1].close)
            elif uri in named:
                sinks.append(named[uri])
            else:
                known = ", ".join(["jsonl:-", "jsonl:/path/file.jsonl", *named])
                raise ConfigError(f"run.sink: unknown sink {uri!r} (known: {known})")
        opened.pop_all()
    return sinks[0] if len(sinks) == 1 else FanoutSink(sinks)

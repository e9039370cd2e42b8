"""Where events go: a small sink interface; JSON lines to stdout or a file here."""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Dict

from .errors import ConfigError


class Sink:
    """Receives each event as a JSON-serialisable dict."""

    def publish(self, event: Dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release."""


class JsonLinesSink(Sink):
    """One JSON object per line, flushed per event."""

    def __init__(self, stream: IO[str], owned: bool = False):
        self.stream = stream
        self.owned = owned

    def publish(self, event: Dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, sort_keys=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


def open_sink(uri: str) -> Sink:
    """``jsonl:-`` for stdout, ``jsonl:/path/file.jsonl`` to append to a file."""
    scheme, _, target = uri.partition(":")
    if scheme != "jsonl" or not target:
        raise ConfigError(f"run.sink: unknown sink {uri!r} (jsonl:- or jsonl:/path/file.jsonl)")
    if target == "-":
        return JsonLinesSink(sys.stdout)
    return JsonLinesSink(open(target, "a", encoding="utf-8"), owned=True)

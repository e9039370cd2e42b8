"""Removing people, and keeping nobody longer than they are seen.

``remove_people`` is the one way people leave the gallery (``gallery remove``, ``gallery
expire``, a running node's expiry): their encodings go from the gallery file under its lock,
their events still queued go from the outbox, and each removal is an audit entry; what is
returned is the receipt. A running node reloads the changed gallery, which clears their
retained MQTT state.

``Retention`` runs beside a node's sinks: it notes when each person is matched and, on the
loop's thread every ``interval`` seconds, writes the new ``last_seen`` times to the gallery
and removes whoever has gone unseen for longer than their expiry.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..core.audit import AuditError, AuditLog
from ..core.config import Config
from ..core.errors import GalleryError, JetkioskError
from ..faces.gallery import load_gallery, locked_update
from ..mqtt.outbox import Outbox
from .sinks import Sink

log = logging.getLogger(__name__)
CHECK_EVERY = 3600.0  # seconds between a node's last-seen writes and expiry checks


def remove_people(config: Config, names: List[str], reason: str) -> List[Dict[str, Any]]:
    """Remove ``names`` (all or none: an unknown name is a GalleryError before anything
    changes); one receipt per person."""
    path = config.gallery_path
    with locked_update(path, limits=config.gallery) as gallery:
        counts = {}
        for name in names:
            person = gallery.person(name)
            counts[name] = (len(person.encodings), len(person.rejected))
        for name in names:
            gallery.remove(name)
    events = dict.fromkeys(names, 0)
    if names and config.outbox_path.exists():
        outbox = Outbox(config.outbox_path, config.mqtt.outbox_capacity)
        try:
            events = {name: outbox.forget(name) for name in names}
        finally:
            outbox.close()
    trail = AuditLog.from_config(config)
    receipts = []
    for name in names:
        encodings, rejections = counts[name]
        try:
            entry = trail.record("remove", name=name, reason=reason, encodings=encodings,
                                 rejections=rejections, outbox_events=events[name])
        except (AuditError, OSError) as exc:
            raise JetkioskError(f"{name!r} was removed, but the audit trail could not be "
                                f"written: {exc}") from exc
        receipts.append({
            "name": name, "reason": reason, "gallery": str(path), "encodings": encodings,
            "rejections": rejections, "outbox": str(config.outbox_path),
            "outbox_events": events[name], "audit": str(config.audit_path),
            "audit_seq": entry["seq"],
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(entry["time"]))})
    return receipts


def expire_people(config: Config, seen: Optional[Dict[str, float]] = None,
                  now: Optional[float] = None) -> List[Dict[str, Any]]:
    """Write ``seen`` (name -> time of a match) as last-seen times, then remove whoever has
    expired at ``now``; the receipts of those removed."""
    now = time.time() if now is None else now
    if not config.gallery_path.exists():
        return []
    current = load_gallery(config.gallery_path, limits=config.gallery)
    if not any(name in current for name in seen or {}) \
            and not current.expired(config.gallery.expire_after, now):
        return []  # nothing to write
    with locked_update(config.gallery_path, limits=config.gallery) as gallery:
        for name, when in (seen or {}).items():
            if name in gallery:
                person = gallery.person(name)
                person.last_seen = max(person.last_seen or 0.0, when)
        expired = gallery.expired(config.gallery.expire_after, now)
    return remove_people(config, expired, "expired") if expired else []


class Retention(Sink):
    """Notes each match; ``check`` (on the loop's thread) saves them and expires people."""

    def __init__(self, config: Config, interval: float = CHECK_EVERY):
        self.config = config
        self.interval = interval
        self.call_soon: Callable[[Callable[[], None]], None] = lambda work: work()
        self._seen: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="retention", daemon=True)

    def publish(self, event: Dict[str, Any], crop: Optional[np.ndarray] = None) -> None:
        if event["decision"] == "match" and event["event"] != "end":
            with self._lock:
                self._seen[event["name"]] = float(event["timestamp"] or time.time())

    def start(self) -> Retention:
        self._thread.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.call_soon(self.check)

    def check(self) -> None:
        """Save last-seen times, remove the expired (the node reloads the gallery)."""
        with self._lock:
            seen, self._seen = self._seen, {}
        try:
            for receipt in expire_people(self.config, seen):
                log.warning("%s removed: not seen for gallery.expire_after (%d encodings, "
                            "%d queued events deleted)", receipt["name"], receipt["encodings"],
                            receipt["outbox_events"])
        except (GalleryError, JetkioskError) as exc:
            log.error("retention: %s; tried again in %.0f s", exc, self.interval)
            with self._lock:
                self._seen = {**seen, **self._seen}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

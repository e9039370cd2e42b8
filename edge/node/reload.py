"""SIGHUP: read the configuration again, apply what can change while running, reload the
gallery; what needs a restart is named in the log. A bad file changes nothing. A gallery
file that changes (``jetkiosk enroll`` beside a running node) is reloaded without a signal.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..core.audit import AuditLog
from ..core.config import Config, settings
from ..core.errors import JetkioskError
from ..core.log_format import setup_logging

log = logging.getLogger(__name__)
WATCH_INTERVAL = 1.0  # seconds between two looks at the gallery file

# Settings read afresh on each use: they apply at the next frame. [gallery] applies through
# the gallery reload (a new Matcher with the new path and thresholds).
LIVE = ("gallery.", "tracker.", "quality.", "run.max_fps", "log.level")


def changed_keys(old: Config, new: Config) -> List[str]:
    """Key paths whose values differ."""
    return [f"{name}.{spec.name}" for name in vars(old)
            for spec, value in settings(getattr(old, name))
            if getattr(getattr(new, name), spec.name) != value]


class Reloader:
    """Call it on the loop's thread (``CaptureLoop.call_soon``)."""

    def __init__(self, config: Config, load: Callable[[], Config],
                 reload_gallery: Callable[[], Dict[str, Any]]):
        self.config = config
        self.load = load
        self.reload_gallery = reload_gallery
        self.reloads = 0

    def __call__(self) -> None:
        try:
            new = self.load()
        except JetkioskError as exc:
            log.error("reload: %s; the running configuration stays", exc)
            return
        changed = changed_keys(self.config, new)
        live = [key for key in changed if key.startswith(LIVE)]
        for key in live:  # in place: the tracker, quality gate and loop hold these objects
            section, name = key.split(".")
            setattr(getattr(self.config, section), name, getattr(getattr(new, section), name))
        if "log.level" in live:
            setup_logging(new.log.level, new.log.format)
        restart = sorted(set(changed) - set(live))
        if restart:
            log.warning("reload: %s changed; restart the service to apply", ", ".join(restart))
        try:
            result = self.reload_gallery()
        except JetkioskError as exc:
            log.error("reload: %s", exc)
            return
        self.reloads += 1
        AuditLog.from_config(self.config).note("config.reload", applied=live,
                                               needs_restart=restart,
                                               people=result.get("people"))
        log.info("reloaded: %s applied; gallery %s", ", ".join(live) or "no setting", result)

    def gallery_changed(self) -> None:
        """The gallery file changed (``GalleryWatch``): load it again; a bad file leaves the
        running gallery in use."""
        try:
            result = self.reload_gallery()
        except JetkioskError as exc:
            log.error("gallery file changed, not reloaded (the running gallery stays): %s", exc)
            return
        log.info("gallery file changed: reloaded; %s", result)


class GalleryWatch:
    """Calls ``changed`` (on a thread of its own) when the gallery file is replaced or
    changed: its inode, size or modification time differ from the last look, taken every
    ``interval`` seconds. Writers replace the file whole (``Gallery.save`` renames a
    complete file over it), so what ``changed`` then reads is never half a file."""

    def __init__(self, path: Callable[[], Path], changed: Callable[[], None],
                 interval: float = WATCH_INTERVAL):
        """``path`` is asked at each look (a reload may change ``gallery.path``); the file as
        it is now is the one already loaded."""
        self.path = path
        self.changed = changed
        self.interval = interval
        self.seen = _identity(path())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gallery-watch", daemon=True)

    def start(self) -> GalleryWatch:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            now = _identity(self.path())
            if now != self.seen:
                self.seen = now
                self.changed()


def _identity(path: Path) -> Optional[Tuple[int, int, int]]:
    """Inode, size and modification time (ns) of ``path``; None when there is no file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns

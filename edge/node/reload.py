"""SIGHUP: read the configuration again, apply what can change while running, reload the
gallery; what needs a restart is named in the log. A bad file changes nothing."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List

from ..core.config import Config, settings
from ..core.errors import JetkioskError
from ..core.log_format import setup_logging

log = logging.getLogger(__name__)

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
        log.info("reloaded: %s applied; gallery %s", ", ".join(live) or "no setting", result)

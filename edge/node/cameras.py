"""Which cameras a node runs: the one rule from the configuration (``run.source`` and
``run.camera``, or ``[[run.cameras]]`` tables) and ``--source [NAME=]URI`` flags to a list of
(name, URI)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple

from ..capture.sources import check_uri
from ..core.config import CameraConfig, Config, RunConfig
from ..core.errors import ConfigError
from ..mqtt.topics import check_level


def camera_sources(run: RunConfig) -> List[Tuple[str, str]]:
    """(name, URI) of each camera, in order: ``run.source`` named ``run.camera``, or the
    ``[[run.cameras]]`` tables; none when neither is set. Both set, a missing or repeated
    name, a name that is not one MQTT topic level, a missing source or an unknown scheme is
    a ConfigError naming the key (``run.cameras[1].name``)."""
    if run.source and run.cameras:
        raise ConfigError("run.cameras: give either run.source (one camera) or [[run.cameras]] "
                          "tables, not both")
    if run.source:
        return [(check_level(run.camera, "run.camera"), check_uri(run.source, "run.source"))]
    seen: Set[str] = set()
    for index, camera in enumerate(run.cameras):
        key = f"run.cameras[{index}]"
        for field, value in (("name", camera.name), ("source", camera.source)):
            if not value:
                raise ConfigError(f"{key}.{field}: missing")
        check_level(camera.name, f"{key}.name")
        if camera.name in seen:
            raise ConfigError(f"{key}.name: {camera.name!r} names another camera too")
        seen.add(camera.name)
        check_uri(camera.source, f"{key}.source")
    return [(camera.name, camera.source) for camera in run.cameras]


def parse_source(text: str) -> Tuple[Optional[str], str]:
    """``NAME=URI`` or ``URI`` (None: unnamed); a URI's own ``=`` come after its ``://``."""
    name, sep, uri = text.partition("=")
    return (name, uri) if sep and "://" not in name else (None, text)


def with_sources(config: Config, flags: Optional[Sequence[str]]) -> Config:
    """``config`` with the ``--source [NAME=]URI`` flags, when any, in place of its cameras:
    one plain URI is ``run.source`` (named ``run.camera``, as before); otherwise each is a
    camera, an unnamed one named ``run.camera`` when it is the first flag and ``cam<N>``
    (``N``: its position among the flags, from 0) otherwise."""
    if not flags:
        return config
    named = [parse_source(text) for text in flags]
    if len(named) == 1 and named[0][0] is None:
        config.run.source, config.run.cameras = named[0][1], ()
        return config
    config.run.source = ""
    config.run.cameras = tuple(
        CameraConfig(name or (config.run.camera if index == 0 else f"cam{index}"), uri)
        for index, (name, uri) in enumerate(named))
    return config

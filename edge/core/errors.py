"""Errors a user can act on; each message says what was wrong and where."""

from __future__ import annotations

from typing import Type


class JetkioskError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ConfigError(JetkioskError):
    """A configuration file or override is invalid (the message names the key path)."""


class ModelError(JetkioskError):
    """A model file or its manifest is missing, corrupt or inconsistent."""


class ImageError(JetkioskError):
    """An input image cannot be used (unreadable, wrong shape, too small)."""


class GalleryError(JetkioskError):
    """A gallery file is corrupt, foreign, or an operation on it is invalid."""


class SourceError(JetkioskError):
    """A capture source cannot be opened or has failed."""


class OutputError(JetkioskError):
    """A kiosk output (window, HTTP server, video file) cannot be opened or written."""


class StyleError(JetkioskError):
    """A style is unknown, or a frame size its network cannot take."""


def missing_extra(what: str, extra: str, detail: object = "",
                  kind: Type[JetkioskError] = JetkioskError) -> JetkioskError:
    """The one message for an optional dependency that is not installed."""
    return kind(f"{what} needs the {extra} extra (pip install 'jetkiosk[{extra}]')"
                + (f": {detail}" if detail else ""))

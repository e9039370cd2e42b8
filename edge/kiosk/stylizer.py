"""The kiosk's per-frame transform: resize, canvas grain, stylize, flicker control, colours,
blend.

The style can be changed from any thread (keys, timer, MQTT); the change is checked and
the network loaded at once, in the caller's thread, and takes effect at the next frame.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from ..core.errors import ConfigError
from .catalog import StyleCatalog
from .flicker import FlickerFilter
from .model import StyleModel


def keep_colors(stylized: np.ndarray, original: np.ndarray) -> np.ndarray:
    """The stylized luminance with the original's chrominance (Gatys et al. 2016)."""
    y = cv2.cvtColor(stylized, cv2.COLOR_BGR2YCrCb)[..., :1]
    crcb = cv2.cvtColor(original, cv2.COLOR_BGR2YCrCb)[..., 1:]
    return cv2.cvtColor(np.concatenate([y, crcb], axis=2), cv2.COLOR_YCrCb2BGR)


def canvas_grain(height: int, width: int, amplitude: float) -> np.ndarray:
    """A fixed paper grain (H x W x 1 float32, standard deviation ``amplitude`` grey levels,
    smoothed over about a pixel), the same for every frame of a size.

    A translation-invariant network maps an input that does not change along a direction to
    an output that does not either: a smooth wall or a horizontal gradient comes out as
    vertical streaks, and one grey level of banding is drawn as a hard stripe. Two grey levels
    of grain give the network texture to paint there instead; being fixed, it adds no flicker.
    """
    noise = np.random.default_rng(0).normal(0.0, 1.0, (height, width)).astype(np.float32)
    grain = np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.0), np.float32)
    return (grain * np.float32(amplitude / max(float(grain.std()), 1e-6)))[..., None]


class Stylizer:
    def __init__(self, catalog: StyleCatalog, style: str, width: int, blend: float = 1.0,
                 colors: bool = False, flicker: Optional[FlickerFilter] = None,
                 canvas: float = 0.0):
        if not 0.0 <= blend <= 1.0:
            raise ConfigError(f"kiosk.blend: must be between 0 and 1, got {blend}")
        if width <= 0:
            raise ConfigError(f"kiosk.width: must be positive, got {width}")
        if canvas < 0:
            raise ConfigError(f"kiosk.canvas: must be 0 or more, got {canvas}")
        self.catalog = catalog
        self.width = width
        self.blend = blend
        self.colors = colors
        self.flicker = flicker
        self.canvas = canvas
        self._grain: Optional[np.ndarray] = None
        self._lock = threading.Lock()
        self._model: StyleModel = catalog.get(style)
        self._pending: Optional[StyleModel] = None
        self._sizes: Dict[Tuple[int, int], Tuple[int, int]] = {}

    @property
    def style(self) -> str:
        with self._lock:
            return (self._pending or self._model).name

    def set_style(self, name: str) -> str:
        """Switch at the next frame; an unknown or corrupt style raises and changes nothing."""
        model = self.catalog.get(name)
        with self._lock:
            self._pending = model
        return model.name

    def size_for(self, width: int, height: int) -> Tuple[int, int]:
        """Processing size for a frame: ``width`` wide, the frame's aspect ratio."""
        key = (width, height)
        if key not in self._sizes:
            target_h = max(1, round(self.width * height / width))
            self._sizes[key] = self._model.check_size(self.width, target_h)
        return self._sizes[key]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._pending is not None:
                self._model, self._pending = self._pending, None
                self._sizes.clear()
                if self.flicker is not None:
                    self.flicker.reset()
        size = self.size_for(frame.shape[1], frame.shape[0])
        small = frame if (frame.shape[1], frame.shape[0]) == size else \
            cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out = self._model(self._grained(small))
        if self.flicker is not None:
            out = self.flicker(small, out)
        if self.colors:
            out = keep_colors(out, small)
        if self.blend < 1.0:
            out = cv2.addWeighted(out, self.blend, small, 1.0 - self.blend, 0.0)
        return out

    def _grained(self, small: np.ndarray) -> np.ndarray:
        if not self.canvas:
            return small
        if self._grain is None or self._grain.shape[:2] != small.shape[:2]:
            self._grain = canvas_grain(small.shape[0], small.shape[1], self.canvas)
        return np.clip(small + self._grain, 0, 255).astype(np.uint8)

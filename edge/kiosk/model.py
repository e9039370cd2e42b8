"""One style network: loaded through the backend interface, fed as its manifest says."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import cv2
import numpy as np

from ..core.config import Config
from ..core.errors import ModelError, StyleError
from ..runtime.backend import Backend, load_backend
from ..runtime.manifest import Manifest

TASK = "style-transfer"
MIN_SIDE, MAX_SIDE = 32, 4096


class StyleModel:
    """Turns a BGR uint8 frame into its stylized BGR uint8 version, same size."""

    def __init__(self, manifest: Manifest, backend: Union[str, Backend] = "auto",
                 config: Optional[Config] = None):
        """``backend``: a backend name, or a backend already loaded with ``manifest``."""
        if manifest.task != TASK:
            raise ModelError(f"{manifest.path}: task {manifest.task!r} is not {TASK!r}")
        pre = manifest.preprocess
        if (pre.get("color"), pre.get("layout")) != ("RGB", "NCHW") or \
                list(pre.get("range", ())) != [0.0, 1.0]:
            raise ModelError(f"{manifest.path}: unsupported preprocessing {pre} "
                             "(style networks take RGB NCHW in 0..1)")
        self.manifest = manifest
        self.name = manifest.name[len("style-"):] if manifest.name.startswith("style-") \
            else manifest.name
        self.multiple_of = int(pre.get("multiple_of", 1))
        self.backend: Backend = load_backend(backend, manifest, config) \
            if isinstance(backend, str) \
            else backend
        self.input = manifest.inputs[0].name
        self.output = manifest.outputs[0].name

    def check_size(self, width: int, height: int) -> Tuple[int, int]:
        """The processing size for a requested one: rounded down to the network's multiple;
        StyleError for a size the network cannot take."""
        shape = self.manifest.inputs[0].shape
        fixed_h, fixed_w = shape[2], shape[3]
        if isinstance(fixed_h, int) and isinstance(fixed_w, int) and \
                (fixed_h, fixed_w) != (height, width):
            raise StyleError(f"style {self.name}: the network takes only {fixed_w}x{fixed_h}, "
                             f"not {width}x{height}")
        if min(width, height) < MIN_SIDE or max(width, height) > MAX_SIDE:
            raise StyleError(f"style {self.name}: {width}x{height} is not supported (each side "
                             f"must be {MIN_SIDE} to {MAX_SIDE} px)")
        m = self.multiple_of
        return width - width % m, height - height % m

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        if self.check_size(width, height) != (width, height):
            raise StyleError(f"style {self.name}: {width}x{height} is not a multiple of "
                             f"{self.multiple_of}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        blob = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        blob *= 1.0 / 255.0
        try:
            out = self.backend.run({self.input: blob})[self.output][0]
        except Exception as exc:  # a backend failure on this size or model
            raise StyleError(f"style {self.name}: the network failed on {width}x{height} "
                             f"({exc})") from exc
        image = np.clip(out.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def close(self) -> None:
        self.backend.close()

"""Training augmentation for aligned faces, each switchable, all from one seeded generator.

- mirror: horizontal flip (faces are near-symmetric; the template is symmetric about x);
- crop: a random crop of the aligned canvas (a jittered alignment); off: the centre crop;
- color: random per-channel gain and offset (colour shifting);
- pca: AlexNet's PCA colour augmentation, adding sum_i a_i * lambda_i * p_i with
  a_i ~ N(0, sigma), where p_i, lambda_i are the eigenvectors and eigenvalues of the colour
  covariance of the training pixels scaled to 0..1 (as fb.resnet.torch does for ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Optional, Tuple

import numpy as np

NAMES = ("mirror", "crop", "color", "pca")


@dataclass
class AugmentSettings:
    mirror: bool = True
    crop: bool = True
    color: bool = True
    pca: bool = True
    color_gain: float = 0.1  # per-channel gain in 1 +- this
    color_offset: float = 10.0  # per-channel offset in +- this (0..255)
    pca_sigma: float = 0.1

    @classmethod
    def only(cls, names: List[str]) -> AugmentSettings:
        """Exactly the named switches on (``[]`` or ``["none"]``: all off)."""
        unknown = set(names) - set(NAMES) - {"none"}
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; choose from {NAMES}")
        return cls(**{n: n in names for n in NAMES})

    def enabled(self) -> List[str]:
        return [f.name for f in fields(self) if f.name in NAMES and getattr(self, f.name)]


def pca_basis(canvases: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors (columns) of the BGR pixel covariance, pixels in 0..1."""
    pixels = canvases.reshape(-1, 3)[:: max(1, canvases.size // 3 // 200_000)] / 255.0
    values, vectors = np.linalg.eigh(np.cov(pixels, rowvar=False))
    return np.maximum(values, 0.0), vectors


class Augmenter:
    """Turns aligned canvases (pad px each side) into training crops of the encoder's size."""

    def __init__(self, settings: AugmentSettings, pad: int, seed: int,
                 basis: Optional[Tuple[np.ndarray, np.ndarray]] = None):
        if settings.pca and basis is None:
            raise ValueError("PCA colour augmentation needs the training pixels' basis")
        self.settings = settings
        self.pad = pad
        self.rng = np.random.default_rng(seed)
        self.basis = basis

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        s, rng, p = self.settings, self.rng, self.pad
        h, w = canvas.shape[0] - 2 * p, canvas.shape[1] - 2 * p
        y, x = (rng.integers(0, 2 * p + 1, size=2) if s.crop and p else (p, p))
        out = canvas[y:y + h, x:x + w].astype(np.float32)
        if s.mirror and rng.random() < 0.5:
            out = out[:, ::-1]
        if s.color:
            gain = 1.0 + rng.uniform(-s.color_gain, s.color_gain, 3)
            out = out * gain + rng.uniform(-s.color_offset, s.color_offset, 3)
        if s.pca:
            values, vectors = self.basis  # type: ignore[misc]
            out = out + 255.0 * (vectors @ (rng.normal(0.0, s.pca_sigma, 3) * values))
        return np.clip(out, 0, 255).astype(np.uint8)

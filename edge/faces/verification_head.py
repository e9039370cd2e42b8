"""A learned verification head: p(same) = sigmoid(sum_k w_k * phi_k(f_i, f_j) + b).

``phi`` is |f_i - f_j| (``abs``, the binary-classification view of DeepFace/Siamese nets)
or the chi-square form (f_i - f_j)^2 / (|f_i| + |f_j|) (``chi2``; the absolute values keep
it defined for encodings with negative components). A gallery can decide with a head
instead of a distance threshold; the head is bound to the encoder it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np

from ..core.errors import GalleryError

KINDS = ("abs", "chi2")
EPS = 1e-6


def pair_features(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """phi(a, b) row by row (a, b broadcast: N x D)."""
    if kind == "abs":
        return np.abs(a - b)
    if kind == "chi2":
        return (a - b) ** 2 / (np.abs(a) + np.abs(b) + EPS)
    raise GalleryError(f"verification head kind {kind!r}: choose from {KINDS}")


@dataclass
class VerificationHead:
    """Weights over pair features; accepts a pair when p(same) >= ``threshold``."""

    kind: str
    weights: np.ndarray
    bias: float
    fingerprint: str  # the encoder whose encodings it was trained on
    threshold: float = 0.5

    def probability(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        logits = pair_features(self.kind, a, b) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))

    def as_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "weights": [float(w) for w in self.weights],
                "bias": float(self.bias), "fingerprint": self.fingerprint,
                "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, data: Any, dim: int, what: str = "verification head") -> VerificationHead:
        """Validate and build; every problem is a ``GalleryError`` naming the field."""
        if not isinstance(data, dict):
            raise GalleryError(f"{what}: expected a JSON object")
        for key in ("kind", "weights", "bias", "fingerprint"):
            if key not in data:
                raise GalleryError(f"{what}: missing {key!r}")
        if data["kind"] not in KINDS:
            raise GalleryError(f"{what}: kind {data['kind']!r}, expected one of {KINDS}")
        try:
            weights = np.asarray(data["weights"], np.float32)
            bias, threshold = float(data["bias"]), float(data.get("threshold", 0.5))
        except (TypeError, ValueError) as exc:
            raise GalleryError(f"{what}: weights, bias and threshold must be numbers") from exc
        if weights.shape != (dim,) or not np.isfinite(weights).all() or not np.isfinite(bias):
            raise GalleryError(f"{what}: needs {dim} finite weights, got shape {weights.shape}")
        if not 0.0 < threshold < 1.0:
            raise GalleryError(f"{what}: threshold {threshold} must be a probability in (0, 1)")
        return cls(data["kind"], weights, bias, str(data["fingerprint"]), threshold)

"""Decisions against the gallery: 1:1 verification and 1:K identification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from .gallery import Gallery
from .search import TemplateIndex


@dataclass
class Decision:
    """Outcome for one encoding. ``name`` is None for unknown.

    ``distance`` is the squared L2 distance, or 1 - p(same) when the gallery decides with a
    verification head (``method`` says which); either way a match is distance <= threshold.
    """

    name: Optional[str]
    distance: float
    threshold: float
    candidate: Optional[str] = None  # nearest enrolled person, even when above threshold
    method: str = "distance"

    @property
    def matched(self) -> bool:
        return self.name is not None

    def as_dict(self) -> Dict[str, object]:
        return {"name": self.name, "match": self.matched, "distance": round(self.distance, 4),
                "threshold": self.threshold, "nearest": self.candidate, "method": self.method}


class Matcher:
    """Compares encodings with a gallery using d = ||f(a) - f(b)||^2 against thresholds, or
    with the gallery's verification head (p(same) against the head's threshold)."""

    def __init__(self, gallery: Gallery, default_threshold: float):
        self.gallery = gallery
        self.names = gallery.names
        self.head = gallery.head
        self.index = TemplateIndex(gallery.templates())
        base = gallery.threshold if gallery.threshold is not None else default_threshold
        self.thresholds = np.array(
            [gallery.people[n]["threshold"] or base for n in self.names], np.float32)
        self.default = base

    def threshold_for(self, name: str) -> float:
        return float(self.gallery.people[name]["threshold"] or self.default)

    def identify(self, encodings: np.ndarray) -> List[Decision]:
        """1:K: the nearest enrolled person per encoding, or unknown beyond their threshold."""
        encodings = np.asarray(encodings, np.float32).reshape(-1, self.gallery.dim)
        if not len(encodings):
            return []
        if self.head is not None:
            return [self._by_head(e, None) for e in encodings]
        best, dist = self.index.nearest(encodings)
        out = []
        for i, d in zip(best, dist):
            if i < 0:
                out.append(Decision(None, float("inf"), self.default))
                continue
            name, tau = self.names[i], float(self.thresholds[i])
            out.append(Decision(name if d <= tau else None, float(d), tau, name))
        return out

    def verify(self, encoding: np.ndarray, name: str) -> Decision:
        """1:1: is this encoding the claimed person?"""
        if self.head is not None:
            return self._by_head(np.asarray(encoding, np.float32), name)
        d = float(np.sum((np.asarray(encoding, np.float32) - self.gallery.template(name)) ** 2))
        tau = self.threshold_for(name)
        return Decision(name if d <= tau else None, d, tau, name)

    def _by_head(self, encoding: np.ndarray, claimed: Optional[str]) -> Decision:
        """The head's decision against ``claimed``, or against the most likely person."""
        assert self.head is not None
        tau = 1.0 - self.head.threshold
        if claimed is not None:
            names, templates = [claimed], self.gallery.template(claimed)[None, :]
        else:
            names, templates = self.names, self.index.templates
        if not names:
            return Decision(None, float("inf"), tau, method="head")
        p = self.head.probability(encoding[None, :], templates)
        best = int(p.argmax())
        d = float(1.0 - p[best])
        return Decision(names[best] if d <= tau else None, d, tau, names[best], "head")

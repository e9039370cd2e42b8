"""Decisions against the gallery: 1:1 verification and 1:K identification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .gallery import Gallery
from .open_set import ThresholdRule
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
    rule: str = ""  # why the threshold is what it is

    @property
    def matched(self) -> bool:
        return self.name is not None

    def as_dict(self) -> Dict[str, object]:
        return {"name": self.name, "match": self.matched, "distance": round(self.distance, 4),
                "threshold": round(float(self.threshold), 4), "nearest": self.candidate,
                "method": self.method,
                "rule": self.rule}


class Matcher:
    """Compares encodings with a gallery using d = ||f(a) - f(b)||^2 against thresholds, or
    with the gallery's verification head (p(same) against the head's threshold).

    ``rule`` gives the base threshold (a number is a fixed one): for 1:K with the gallery's
    size, for 1:1 with one comparison. A person's own threshold replaces it for that person.
    A person with rejections (``gallery reject``) refuses every encoding as close to their
    template as the closest rejected one: their threshold is tightened below it.
    """

    def __init__(self, gallery: Gallery, rule: Union[float, ThresholdRule]):
        self.gallery = gallery
        self.names = gallery.names
        self.head = gallery.head
        self.index = TemplateIndex(gallery.templates())
        if not isinstance(rule, ThresholdRule):
            rule = ThresholdRule(float(rule), 0.0, None)
        self._rule = rule
        base, self.rule = rule.base(gallery.threshold, len(self.names))
        self.one_to_one, self.one_to_one_rule = rule.base(gallery.threshold, 1)
        self.default = base
        self._sizes: Dict[Tuple[bool, int], float] = {}
        self._limits = {n: self._rejection_limit(n) for n in self.names}
        self.thresholds = np.array([self._threshold(n) for n in self.names], np.float32)

    def _own(self, name: str) -> Optional[float]:
        return self.gallery.person(name).threshold

    def _rejection_limit(self, name: str) -> Optional[float]:
        """Just below the distance from ``name``'s template to the closest rejected encoding."""
        rejected = self.gallery.rejections(name)
        if not len(rejected):
            return None
        closest = float(np.min(np.sum((rejected - self.gallery.template(name)) ** 2, axis=1)))
        return closest * (1.0 - 1e-4)

    def _base(self, one_to_one: bool) -> float:
        return self.one_to_one if one_to_one else self.default

    def _threshold(self, name: str, one_to_one: bool = False, rejections: bool = True
                   ) -> float:
        """``name``'s own threshold, else the rule's for the template's size; then tightened
        below any rejection."""
        own = self._own(name)
        tau = float(own) if own else self._for_photos(one_to_one,
                                                      len(self.gallery.encodings(name)))
        limit = self._limits[name] if rejections else None
        return tau if limit is None else min(tau, limit)

    def _for_photos(self, one_to_one: bool, photos: int) -> float:
        """The rule's threshold for a template of ``photos`` photos (one lookup per size)."""
        key = (one_to_one, photos)
        if key not in self._sizes:
            self._sizes[key] = self._rule.for_photos(
                self.gallery.threshold, self._base(one_to_one),
                1 if one_to_one else len(self.names), photos)
        return self._sizes[key]

    def threshold_for(self, name: str, rejections: bool = True) -> float:
        """``name``'s 1:K threshold; ``rejections=False``: before any rejection tightened it."""
        return self._threshold(name, rejections=rejections)

    def rule_for(self, name: Optional[str], one_to_one: bool = False) -> str:
        """Why ``name``'s decisions use the threshold they do."""
        if self.head is not None:
            return "verification head"
        if name is None or name not in self.gallery:
            return self.rule
        unrejected = self._threshold(name, one_to_one, rejections=False)
        limit = self._limits[name]
        if limit is not None and limit < unrejected:
            return "tightened by a rejection (gallery reject)"
        if self._own(name):
            return "set for this person"
        why = self.one_to_one_rule if one_to_one else self.rule
        if unrejected < self._base(one_to_one):
            why += f"; for a template of {len(self.gallery.encodings(name))} photos"
        return why

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
                out.append(Decision(None, float("inf"), self.default, rule=self.rule))
                continue
            name, tau = self.names[i], float(self.thresholds[i])
            out.append(Decision(name if d <= tau else None, float(d), tau, name,
                                rule=self.rule_for(name)))
        return out

    def verify(self, encoding: np.ndarray, name: str) -> Decision:
        """1:1: is this encoding the claimed person?"""
        if self.head is not None:
            return self._by_head(np.asarray(encoding, np.float32), name)
        d = float(np.sum((np.asarray(encoding, np.float32) - self.gallery.template(name)) ** 2))
        tau = self._threshold(name, one_to_one=True)
        return Decision(name if d <= tau else None, d, tau, name,
                        rule=self.rule_for(name, one_to_one=True))

    def _by_head(self, encoding: np.ndarray, claimed: Optional[str]) -> Decision:
        """The head's decision against ``claimed``, or against the most likely person."""
        assert self.head is not None
        tau = 1.0 - self.head.threshold
        if claimed is not None:
            names, templates = [claimed], self.gallery.template(claimed)[None, :]
        else:
            names, templates = self.names, self.index.templates
        if not names:
            return Decision(None, float("inf"), tau, method="head", rule="verification head")
        p = self.head.probability(encoding[None, :], templates)
        best = int(p.argmax())
        d = float(1.0 - p[best])
        return Decision(names[best] if d <= tau else None, d, tau, names[best], "head",
                        "verification head")

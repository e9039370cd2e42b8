"""Thresholds that stay right as the gallery grows: a target false-positive identification
rate (FPIR, the share of strangers given a name) turned into the distance threshold for a
gallery of K people.

The encoder's manifest carries, as ``open_set``, what was measured on real photos
(``jetkiosk encoder calibrate``): the per-comparison false-accept rate p(tau) of impostor
pairs, and the open-set curves FPIR(K, tau) for galleries of up to about a thousand people.
The rule reads tau(K) off the measured curves. Beyond the largest measured gallery it
extends them with the per-comparison model

    FPIR(K, tau) = 1 - (1 - p(tau))^K,

anchored on the largest measured K; where even that needs rates below what was measured,
it falls back to p(tau) itself, whose tail is extrapolated log-linearly from its last
measured decades. Treating comparisons as independent and the log-linear tail both
over-estimate FPIR, so each step of extrapolation errs on the side of refusing
(``bench/open_set.py`` shows by how much).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..core.errors import ModelError
from ..runtime.manifest import Manifest


@dataclass(frozen=True)
class RateCurve:
    """log10 P(impostor distance <= tau) on ascending thresholds, measured where enough
    pairs lie below; below ``tau[0]`` extrapolated log-linearly with ``slope``."""

    tau: np.ndarray
    log10_rate: np.ndarray
    slope: float

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str) -> RateCurve:
        try:
            made = cls(np.asarray(data["tau"], np.float64),
                       np.asarray(data["log10_far"], np.float64), float(data["tail"]["slope"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed score calibration ({exc})") from exc
        if len(made.tau) < 2 or len(made.tau) != len(made.log10_rate) \
                or np.any(np.diff(made.tau) <= 0) or np.any(np.diff(made.log10_rate) < 0) \
                or made.slope <= 0:
            raise ModelError(f"{where}: score calibration is not monotone")
        return made

    def far(self, tau: float) -> float:
        """Per-comparison false-accept rate at threshold ``tau``."""
        if tau < self.tau[0]:
            return float(10.0 ** (self.log10_rate[0] - self.slope * (self.tau[0] - tau)))
        return float(10.0 ** np.interp(tau, self.tau, self.log10_rate))

    def tau_for_far(self, p: float) -> float:
        """The threshold whose per-comparison false-accept rate is ``p``."""
        level = math.log10(max(p, 1e-300))
        if level < self.log10_rate[0]:
            return max(0.0, float(self.tau[0]) - (self.log10_rate[0] - level) / self.slope)
        # Flat stretches of the measured curve: take the lowest tau that reaches ``level``.
        rising = np.concatenate([[True], np.diff(self.log10_rate) > 0])
        return float(np.interp(level, self.log10_rate[rising], self.tau[rising]))


@dataclass(frozen=True)
class Family:
    """What was measured for templates of one size: the per-comparison impostor rate and the
    open-set curves, tau at each FPIR level (columns) for each gallery size K (rows)."""

    rate: RateCurve
    k: np.ndarray  # ascending
    levels: np.ndarray  # log10 FPIR, ascending
    tau: np.ndarray  # len(k) x len(levels); NaN where not measurable

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str) -> Family:
        rate = RateCurve.from_dict(data, where)
        try:
            curves = data["curves"]
            made = cls(rate, np.asarray(curves["k"], np.float64),
                       np.asarray(curves["log10_fpir"], np.float64),
                       np.array(curves["tau"], np.float64))  # null: not measurable
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed score calibration ({exc})") from exc
        if made.tau.shape != (len(made.k), len(made.levels)) or np.any(np.diff(made.k) <= 0) \
                or np.any(np.diff(made.levels) <= 0):
            raise ModelError(f"{where}: open-set curves do not fit their axes")
        return made

    def _curve(self, row: int, target: float) -> Optional[float]:
        """tau at FPIR ``target`` on measured curve ``row``; None below its lowest level."""
        level = math.log10(target)
        measured = ~np.isnan(self.tau[row])
        levels, taus = self.levels[measured], self.tau[row][measured]
        if not len(levels) or level < levels[0]:
            return None
        return float(np.interp(level, levels, taus))

    def tau_for_fpir(self, target: float, k: int) -> Tuple[float, str]:
        """Threshold that keeps FPIR at ``target`` with ``k`` enrolled, and how it was found."""
        k = max(int(k), 1)
        if k > self.k[-1]:  # extend the largest measured curve by the per-comparison model
            anchored = -math.expm1(self.k[-1] * math.log1p(-_far_for_fpir(target, k)))
            tau = self._curve(len(self.k) - 1, anchored)
            if tau is not None:
                return tau, f"measured curve for K={int(self.k[-1])}, extended"
        else:
            above = int(np.searchsorted(self.k, k))
            below = above if self.k[above] == k else max(above - 1, 0)
            lo, hi = self._curve(below, target), self._curve(above, target)
            if lo is not None and hi is not None:
                if above == below:
                    return lo, "measured curve"
                w = (math.log(k) - math.log(self.k[below])) / (
                    math.log(self.k[above]) - math.log(self.k[below]))
                return lo + w * (hi - lo), "measured curves"
        return self.rate.tau_for_far(_far_for_fpir(target, k)), "per-comparison tail"


def _far_for_fpir(target: float, k: float) -> float:
    """The per-comparison rate that gives FPIR ``target`` over ``k`` independent ones."""
    return -math.expm1(math.log1p(-target) / max(k, 1.0))


@dataclass(frozen=True)
class ScoreCalibration:
    """An encoder's impostor and genuine squared-distance distributions on real photos, and
    its open-set curves, for one-photo templates and for means of several photos."""

    encoder: str
    fingerprint: str
    dataset: str
    families: Dict[int, Family]  # photos per template -> what was measured
    tar: np.ndarray  # P(genuine distance <= tau) on the one-photo rate curve's thresholds

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str) -> ScoreCalibration:
        families = {1: Family.from_dict(data, where)}
        try:
            families.update({int(t["photos"]): Family.from_dict(t, where)
                             for t in data.get("templates", [])})
            made = cls(str(data["encoder"]), str(data["fingerprint"]), str(data["dataset"]),
                       families, np.asarray(data["tar"], np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: malformed score calibration ({exc})") from exc
        if len(made.tar) != len(families[1].rate.tau):
            raise ModelError(f"{where}: score calibration is not monotone")
        return made

    @property
    def impostor(self) -> RateCurve:
        return self.families[1].rate

    def far(self, tau: float) -> float:
        """Per-comparison false-accept rate at threshold ``tau`` (one-photo templates)."""
        return self.impostor.far(tau)

    def tau_for_far(self, p: float) -> float:
        return self.impostor.tau_for_far(p)

    def fpir(self, tau: float, k: int) -> float:
        """FPIR with ``k`` enrolled at ``tau`` under the per-comparison model alone."""
        return -math.expm1(k * math.log1p(-min(self.far(tau), 1 - 1e-12)))

    def tau_for_fpir(self, target: float, k: int, photos: int = 1) -> Tuple[float, str]:
        """Threshold that keeps FPIR at ``target`` with ``k`` enrolled, for templates of
        ``photos`` photos (the largest measured size at most that), and how it was found.
        Never looser than for one photo."""
        size = max(n for n in self.families if n <= max(photos, 1))
        tau, how = self.families[size].tau_for_fpir(target, k)
        if size == 1:
            return tau, how
        single, _ = self.families[1].tau_for_fpir(target, k)
        return min(tau, single), f"{how}, {size}-photo templates"

    def tpir(self, tau: float) -> float:
        """Share of genuine comparisons within ``tau`` on the calibration photos."""
        return float(np.interp(tau, self.impostor.tau, self.tar))


def calibration_of(manifest: Manifest) -> Optional[ScoreCalibration]:
    """The manifest's score calibration; None when it has none or it was measured on another
    encoder (a fine-tuned model keeps its base's manifest fields but not its numbers)."""
    if not manifest.open_set:
        return None
    calibration = ScoreCalibration.from_dict(manifest.open_set, f"{manifest.path}: open_set")
    return calibration if calibration.fingerprint == manifest.fingerprint else None


@dataclass(frozen=True)
class ThresholdRule:
    """Where the base threshold comes from, in order: the gallery file's own threshold, a
    fixed ``gallery.threshold`` setting, else ``gallery.target_fpir`` through the encoder's
    score calibration for the gallery's current size."""

    fixed: Optional[float]
    target_fpir: float
    calibration: Optional[ScoreCalibration]

    def base(self, gallery_threshold: Optional[float], k: int) -> Tuple[float, str]:
        """The threshold for a gallery of ``k`` people, and why it is that."""
        if gallery_threshold is not None:
            return float(gallery_threshold), "fixed in the gallery file"
        if self.fixed is not None:
            return self.fixed, "fixed by gallery.threshold"
        if self.calibration is None:
            raise ModelError(
                "gallery.target_fpir needs the encoder's score calibration, and its manifest "
                "has none for these weights (`jetkiosk models prepare` installs the shipped "
                "one, `jetkiosk encoder calibrate` measures one); or set a fixed threshold "
                "(gallery.threshold, or `jetkiosk encoder evaluate --write-threshold`)")
        tau, how = self.calibration.tau_for_fpir(self.target_fpir, k)
        return round(tau, 4), (f"target FPIR {self.target_fpir:g} with {max(k, 1)} enrolled "
                               f"({how}, {self.calibration.dataset})")

    def for_photos(self, gallery_threshold: Optional[float], tau: float, k: int,
                   photos: int) -> float:
        """``tau`` from ``base`` for a person enrolled with ``photos`` encodings: a mean
        template of several photos sits nearer to everyone and gets the threshold measured
        for templates of its size; a fixed threshold stays as it is."""
        if gallery_threshold is not None or self.fixed is not None or self.calibration is None \
                or photos <= 1:
            return tau
        return round(min(tau, self.calibration.tau_for_fpir(self.target_fpir, k, photos)[0]), 4)


def threshold_rule(gallery_settings: Any, manifest: Manifest) -> ThresholdRule:
    """The rule from the ``[gallery]`` settings and the encoder's manifest."""
    fixed = gallery_settings.threshold or None
    return ThresholdRule(fixed, gallery_settings.target_fpir, calibration_of(manifest))

"""Verification figures from encodings: genuine and impostor pairs -> ROC, EER, TAR at FAR,
the best-accuracy threshold (balanced accuracy, the mean of TAR and 1 - FAR, so it does not
depend on how many impostor pairs were drawn), and PNG plots.

Scores are *distances*: a pair is accepted when score <= threshold. For the squared L2
distance that is the runtime's rule; a verification head's probability p enters as 1 - p.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (A: N x D, B: N x D) -> N scores
FARS = (1e-2, 1e-3)


def squared_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a - b) ** 2).sum(-1)


def pairs(labels: np.ndarray, impostors: Optional[int], seed: int = 0,
          ) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs (M x 2): every genuine pair, and ``impostors`` impostor pairs drawn without
    replacement by a seeded generator (None: every impostor pair)."""
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    genuine = np.stack([i[same], j[same]], 1)
    others = np.stack([i[~same], j[~same]], 1)
    if impostors is not None and impostors < len(others):
        pick = np.random.default_rng(seed).choice(len(others), impostors, replace=False)
        others = others[np.sort(pick)]
    return genuine, others


@dataclass
class VerificationReport:
    """What a threshold does on a set of pairs."""

    genuine_pairs: int
    impostor_pairs: int
    eer: float
    eer_threshold: float
    tar_at_far: Dict[str, float]
    threshold_at_far: Dict[str, float]
    best_accuracy: float
    best_threshold: float
    genuine_mean: float
    impostor_mean: float
    roc: Dict[str, List[float]] = field(repr=False, default_factory=dict)

    def recommended(self, rule: str = "accuracy") -> float:
        """The threshold to write into a gallery: ``accuracy``, ``eer`` or ``far=1e-3``."""
        if rule == "accuracy":
            return self.best_threshold
        if rule == "eer":
            return self.eer_threshold
        if rule.startswith("far=") and f"{float(rule[4:]):g}" in self.threshold_at_far:
            return self.threshold_at_far[f"{float(rule[4:]):g}"]
        raise ValueError(f"threshold rule {rule!r}: accuracy, eer or far=<one of {FARS}>")

    def summary(self) -> str:
        far = ", ".join(f"TAR@FAR={k} {v:.3f}" for k, v in self.tar_at_far.items())
        return (f"{self.genuine_pairs} genuine / {self.impostor_pairs} impostor pairs: "
                f"EER {self.eer:.2%} at {self.eer_threshold:.3f}; {far}; best accuracy "
                f"{self.best_accuracy:.2%} at {self.best_threshold:.3f}")

    def as_dict(self, with_roc: bool = False) -> Dict[str, object]:
        data = asdict(self)
        if not with_roc:
            data.pop("roc")
        return data


def evaluate(genuine: np.ndarray, impostor: np.ndarray) -> VerificationReport:
    """ROC over every distinct score; EER where FAR and FRR cross."""
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    lowest = min(genuine[0], impostor[0])
    below = np.nextafter(lowest, -np.inf)  # "accept nothing", as a finite threshold
    thresholds = np.unique(np.concatenate([genuine, impostor, [below]]))
    tar = np.searchsorted(genuine, thresholds, side="right") / len(genuine)
    far = np.searchsorted(impostor, thresholds, side="right") / len(impostor)
    frr = 1 - tar
    k = int(np.argmin(np.abs(frr - far)))
    accuracy = (tar + 1 - far) / 2  # balanced: independent of how many impostors were drawn
    best = int(np.argmax(accuracy))
    tar_at, thr_at = {}, {}
    for target in FARS:
        ok = np.nonzero(far <= target)[0]  # far rises with the threshold: take the last
        tar_at[f"{target:g}"] = float(tar[ok[-1]])
        thr_at[f"{target:g}"] = float(thresholds[ok[-1]])
    return VerificationReport(
        len(genuine), len(impostor), float((frr[k] + far[k]) / 2), float(thresholds[k]),
        tar_at, thr_at, float(accuracy[best]), float(thresholds[best]),
        float(genuine.mean()), float(impostor.mean()),
        {"threshold": thresholds[1:].tolist(), "far": far[1:].tolist(), "tar": tar[1:].tolist()})


def verification_report(encodings: np.ndarray, labels: np.ndarray,
                        scorer: Scorer = squared_l2, impostors: Optional[int] = None,
                        seed: int = 0) -> Tuple[VerificationReport, np.ndarray, np.ndarray]:
    """All genuine pairs plus sampled impostor pairs of a labelled set of encodings."""
    same, diff = pairs(labels, impostors, seed)
    genuine = scorer(encodings[same[:, 0]], encodings[same[:, 1]])
    impostor = scorer(encodings[diff[:, 0]], encodings[diff[:, 1]])
    return evaluate(genuine, impostor), genuine, impostor


def plot(report: VerificationReport, genuine: np.ndarray, impostor: np.ndarray, out: Path,
         title: str, score: str = "squared L2 distance") -> List[Path]:
    """``roc.png`` and ``distances.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    far = np.maximum(np.asarray(report.roc["far"]), 1e-5)
    ax.semilogx(far, report.roc["tar"])
    ax.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(1e-4, 1),
           title=f"{title}: EER {report.eer:.2%}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(min(genuine.min(), impostor.min()), max(genuine.max(), impostor.max()), 60)
    ax.hist(impostor, bins, alpha=0.6, density=True, label=f"impostor ({len(impostor)})")
    ax.hist(genuine, bins, alpha=0.6, density=True, label=f"genuine ({len(genuine)})")
    ax.axvline(report.best_threshold, color="k", ls="--", label="best-accuracy threshold")
    ax.set(xlabel=score, ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "distances.png", dpi=100)
    plt.close(fig)
    return [out / "roc.png", out / "distances.png"]


def write_report(report: VerificationReport, path: Path, **extra: object) -> None:
    path.write_text(json.dumps({**extra, **report.as_dict()}, indent=2) + "\n")

"""Train a verification head on pairs of encodings (logistic regression on pair features).

Pairs are every genuine pair of a labelled set plus sampled impostor pairs; the two classes
are weighted equally whatever their counts. Full-batch L-BFGS with an L2 penalty: the
problem is convex and small (D + 1 parameters), so it converges in seconds on a CPU.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from jetkiosk.edge.faces.verification_head import KINDS, VerificationHead, pair_features
from jetkiosk.export.encoder.verification_eval import pairs


def train_head(encodings: np.ndarray, labels: np.ndarray, kind: str, fingerprint: str,
               impostors: Optional[int] = 20_000, l2: float = 1e-3, seed: int = 0,
               steps: int = 200) -> VerificationHead:
    """Fit p(same | phi(f_i, f_j)) on a labelled set of encodings."""
    if kind not in KINDS:
        raise ValueError(f"head kind {kind!r}: choose from {KINDS}")
    same, diff = pairs(labels, impostors, seed)
    index = np.concatenate([same, diff])
    x = torch.from_numpy(pair_features(kind, encodings[index[:, 0]], encodings[index[:, 1]])
                         .astype(np.float32))
    y = torch.cat([torch.ones(len(same)), torch.zeros(len(diff))])
    weight = torch.where(y > 0, 0.5 / len(same), 0.5 / len(diff))
    scale = x.std(0).mean().clamp_min(1e-6)  # condition the problem; folded back below
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = (x / scale) @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none") * weight).sum() + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return VerificationHead(kind, (w.detach() / scale).numpy().astype(np.float32),
                            float(b.detach()), fingerprint)

"""Triplet loss max(||f(A) - f(P)||^2 - ||f(A) - f(N)||^2 + alpha, 0) with online mining.

Batches hold P identities x K photos. Triplets are chosen inside the batch:
- ``batch-all``: every valid (A, P, N); the loss averages the active (non-zero) ones
  (Hermans et al. 2017, "In Defense of the Triplet Loss");
- ``batch-hard``: per anchor, the farthest positive and the nearest negative;
- ``semi-hard``: per (A, P) pair, the nearest negative farther than P, inside the margin or
  not (FaceNet, Schroff et al. 2015); when none is farther, the farthest negative (as
  TensorFlow's ``triplet_semihard_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch

MINING = ("batch-all", "batch-hard", "semi-hard")


@dataclass
class TripletStats:
    """What the mining saw in one batch (distances are squared L2 of unit vectors, 0..4)."""

    loss: float
    active: float  # fraction of mined triplets with a non-zero loss
    triplets: int  # triplets mined
    positive: float  # mean distance over all positive pairs in the batch
    negative: float  # mean distance over all negative pairs

    def as_dict(self) -> Dict[str, float]:
        return {"loss": self.loss, "active": self.active, "triplets": self.triplets,
                "d_pos": self.positive, "d_neg": self.negative}


def squared_distances(embeddings: torch.Tensor) -> torch.Tensor:
    dot = embeddings @ embeddings.T
    norms = dot.diagonal()
    return (norms[:, None] - 2 * dot + norms[None, :]).clamp_min(0.0)


class TripletLoss(torch.nn.Module):
    """Mined triplet loss; ``forward`` returns the loss and the batch's ``TripletStats``."""

    def __init__(self, margin: float = 0.2, mining: str = "semi-hard"):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"mining {mining!r}: choose from {MINING}")
        self.margin = margin
        self.mining = mining

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor):
        dist = squared_distances(embeddings)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos_mask, neg_mask = same & ~eye, ~same
        if not pos_mask.any() or not neg_mask.any():
            raise ValueError("a batch needs two photos of one identity and two identities")
        if self.mining == "batch-all":
            losses = self._batch_all(dist, pos_mask, neg_mask)
        elif self.mining == "batch-hard":
            losses = self._batch_hard(dist, pos_mask, neg_mask)
        else:
            losses = self._semi_hard(dist, pos_mask, neg_mask)
        active = losses > 0
        loss = losses[active].mean() if self.mining == "batch-all" and active.any() \
            else losses.mean()
        with torch.no_grad():
            stats = TripletStats(float(loss), float(active.float().mean()), int(losses.numel()),
                                 float(dist[pos_mask].mean()), float(dist[neg_mask].mean()))
        return loss, stats

    def _batch_all(self, dist, pos_mask, neg_mask) -> torch.Tensor:
        # [a, p, n]: d(a, p) - d(a, n) + margin over every valid combination
        valid = pos_mask[:, :, None] & neg_mask[:, None, :]
        return (dist[:, :, None] - dist[:, None, :] + self.margin)[valid].clamp_min(0.0)

    def _batch_hard(self, dist, pos_mask, neg_mask) -> torch.Tensor:
        anchors = pos_mask.any(1) & neg_mask.any(1)
        hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).max(1).values
        hardest_neg = dist.masked_fill(~neg_mask, float("inf")).min(1).values
        return (hardest_pos - hardest_neg + self.margin)[anchors].clamp_min(0.0)

    def _semi_hard(self, dist, pos_mask, neg_mask) -> torch.Tensor:
        a, p = pos_mask.nonzero(as_tuple=True)
        d_ap = dist[a, p][:, None]
        d_an = dist[a]  # one row of candidate negatives per (a, p)
        negs = neg_mask[a]
        farther = negs & (d_an > d_ap)
        nearest_farther = d_an.masked_fill(~farther, float("inf")).min(1).values
        farthest = d_an.masked_fill(~negs, float("-inf")).max(1).values
        d_neg = torch.where(farther.any(1), nearest_farther, farthest)
        return (d_ap[:, 0] - d_neg + self.margin).clamp_min(0.0)

"""Vectorised 1:K search over gallery templates, fast at 100,000 identities.

Small galleries are searched exactly. Large ones first rank every identity in a
PCA-reduced space (96 of 512 dimensions, under a fifth of the memory traffic), then
re-rank a shortlist exactly in full dimension, so every returned distance is exact.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

EXACT_LIMIT = 20_000
REDUCED_DIM = 96
SHORTLIST = 512


class TemplateIndex:
    """Nearest template for each query, with squared L2 distances (unit vectors)."""

    def __init__(self, templates: np.ndarray):
        self.templates = np.ascontiguousarray(templates, np.float32)
        self._basis: Optional[np.ndarray] = None
        self._reduced: Optional[np.ndarray] = None
        count, dim = self.templates.shape
        if count > EXACT_LIMIT and dim > REDUCED_DIM:
            # Principal axes of the templates themselves (uncentred: ranking uses dot products).
            _, vecs = np.linalg.eigh(self.templates.T @ self.templates)
            self._basis = np.ascontiguousarray(vecs[:, ::-1][:, :REDUCED_DIM])
            self._reduced = np.ascontiguousarray(self.templates @ self._basis)

    def nearest(self, queries: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Index of the nearest template and its squared distance for each query row."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        if not len(self.templates):
            return np.full(len(queries), -1), np.full(len(queries), np.inf, np.float32)
        if self._basis is None:
            sims = queries @ self.templates.T
            best = sims.argmax(1)
            top = sims[np.arange(len(queries)), best]
        else:
            best = np.empty(len(queries), np.int64)
            top = np.empty(len(queries), np.float32)
            coarse = (queries @ self._basis) @ self._reduced.T  # type: ignore[union-attr]
            for i, row in enumerate(coarse):
                short = np.argpartition(-row, SHORTLIST)[:SHORTLIST]
                exact = self.templates[short] @ queries[i]
                j = int(exact.argmax())
                best[i], top[i] = short[j], exact[j]
        return best, np.maximum(2.0 - 2.0 * top, 0.0).astype(np.float32)

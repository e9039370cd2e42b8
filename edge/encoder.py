"""Face encoder: aligned crops -> L2-normalised encodings f(x), batched."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .backend import Backend
from .errors import ModelError


class FaceEncoder:
    """Runs the encoder on BGR crops of the manifest's size; optional flip test-time augmentation."""

    def __init__(self, backend: Backend, flip: bool = False, max_batch: int = 16):
        self.backend = backend
        self.pre = backend.manifest.preprocess
        self.input_name = backend.manifest.inputs[0].name
        self.output_name = backend.manifest.outputs[0].name
        dim = backend.manifest.outputs[0].shape[-1]
        if not isinstance(dim, int):
            raise ModelError(f"{backend.manifest.name}: encoding size must be fixed, got {dim!r}")
        self.dim = dim
        self.flip = flip
        self.max_batch = max_batch
        self._mean = np.asarray(self.pre["mean"], np.float32)
        self._std = np.asarray(self.pre["std"], np.float32)

    def _blob(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack(crops).astype(np.float32)
        if self.pre["color"] == "RGB":
            batch = batch[..., ::-1]
        batch = (batch - self._mean) / self._std
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def _run(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.backend.run({self.input_name: self._blob(crops)})[self.output_name]

    def encode(self, crops: List[np.ndarray]) -> np.ndarray:
        """Encodings (N x dim, unit length) for N aligned BGR crops."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        parts = []
        step = self.max_batch // 2 if self.flip else self.max_batch
        for start in range(0, len(crops), step):
            chunk = crops[start:start + step]
            if self.flip:  # originals and mirror images in one batch, encodings summed
                emb = self._run(chunk + [c[:, ::-1] for c in chunk])
                emb = emb[:len(chunk)] + emb[len(chunk):]
            else:
                emb = self._run(chunk)
            parts.append(emb)
        out = np.concatenate(parts).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

"""Face encoder: aligned crops -> L2-normalised encodings f(x), batched."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ..core.errors import ModelError
from ..runtime.backend import Backend


def encoder_blob(crops: Sequence[np.ndarray], preprocess: Dict[str, Any]) -> np.ndarray:
    """BGR uint8 crops -> the encoder's NCHW float32 input (colour order, mean, std)."""
    batch = np.stack(crops).astype(np.float32)
    if preprocess["color"] == "RGB":
        batch = batch[..., ::-1]
    mean = np.asarray(preprocess["mean"], np.float32)
    std = np.asarray(preprocess["std"], np.float32)
    return np.ascontiguousarray(((batch - mean) / std).transpose(0, 3, 1, 2))


class FaceEncoder:
    """Runs the encoder on BGR crops of the manifest's size; optional flip test-time
    augmentation."""

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

    def _run(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return self.backend.run({self.input_name: encoder_blob(crops, self.pre)})[
            self.output_name]

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

"""TensorRT backend: the model's cached engine (built on first use when missing or stale),
run through the adapter with pinned buffers and async copies on one stream."""

from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional

import numpy as np

from ...core.config import Config
from ...core.errors import ModelError
from ..backend import Backend
from ..manifest import Manifest, engine_precision
from .adapter import EngineRunner, TensorRTError

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    """Loads ``manifest``'s engine at ``models.precision``; an engine that will not
    deserialize is rebuilt once."""

    def __init__(self, manifest: Manifest, config: Optional[Config] = None):
        from .build import ensure_engine

        super().__init__(manifest, config)
        path = ensure_engine(manifest, self.config)
        try:
            self.runner = EngineRunner(path.read_bytes(), str(path))
        except TensorRTError as exc:
            log.warning("%s; rebuilding it", exc)
            path = ensure_engine(manifest, self.config, force=True)
            self.runner = EngineRunner(path.read_bytes(), str(path))
        self.engine_path = path
        names = {t.name for t in self.runner.tensors if t.is_input}
        if names != {spec.name for spec in manifest.inputs}:
            self.runner.close()
            raise ModelError(f"{path}: engine inputs {sorted(names)} differ from manifest "
                             f"{sorted(s.name for s in manifest.inputs)}")

    @property
    def precision(self) -> str:  # type: ignore[override]
        return engine_precision(self.manifest, self.config.models.precision)

    def describe(self) -> str:
        return f"tensorrt ({self.engine_path.name})"

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            return self.runner.run(feeds)
        except TensorRTError as exc:
            raise ModelError(f"{self.manifest.name}: {exc}") from exc

    def close(self) -> None:
        self.runner.close()

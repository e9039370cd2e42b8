"""The inference backend interface and its registry of implementations, chosen by name.

A backend loads one model from its manifest, reports its input/output specs and runs a
batch. ONNX Runtime implements it here; TensorRT will implement it too. Backends register
under a name, like Frigate's detector plugins, and are imported only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Mapping

import numpy as np

from .errors import ConfigError
from .manifest import Manifest, TensorSpec


class Backend:
    """One loaded model. Subclasses implement ``run``."""

    precision = "fp32"

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    def describe(self) -> str:
        """Backend and device, for logs and ``stats``."""
        return type(self).__name__

    @property
    def inputs(self) -> List[TensorSpec]:
        return self.manifest.inputs

    @property
    def outputs(self) -> List[TensorSpec]:
        return self.manifest.outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one batch: input name -> array in, output name -> array out."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model's resources."""


# name -> "module:factory"; the module is imported lazily so a missing runtime only
# matters to those who ask for it.
_REGISTRY: Dict[str, str] = {
    "onnxruntime": "jetkiosk.edge.backend_onnxruntime:OnnxRuntimeBackend",
}


def backend_names() -> List[str]:
    return sorted(_REGISTRY) + ["auto"]


def _factory(name: str) -> Callable[[Manifest], Backend]:
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


def load_backend(name: str, manifest: Manifest) -> Backend:
    """Load ``manifest``'s model with the backend called ``name`` ("auto" picks the best)."""
    if name == "auto":
        name = "onnxruntime"
    if name not in _REGISTRY:
        raise ConfigError(f"backend: unknown {name!r}; choose one of {', '.join(backend_names())}")
    return _factory(name)(manifest)

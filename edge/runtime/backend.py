"""The inference backend interface and its registry of implementations, chosen by name.

A backend loads one model from its manifest, reports its input/output specs and runs a
batch. ONNX Runtime and TensorRT implement it. Backends register under a name, like
Frigate's detector plugins, and are imported only when asked for; "auto" picks TensorRT
when it (and pycuda) import, else ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
from typing import Callable, Dict, List, Mapping, Optional

import numpy as np

from ..core.config import Config
from ..core.errors import ConfigError, JetkioskError
from .manifest import Manifest, TensorSpec

log = logging.getLogger(__name__)


class Backend:
    """One loaded model. Subclasses implement ``run``."""

    precision = "fp32"
    fallback = ""  # why the configured backend could not run this model, when it could not

    def __init__(self, manifest: Manifest, config: Optional[Config] = None):
        self.manifest = manifest
        self.config = config or Config()

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
    "onnxruntime": "jetkiosk.edge.runtime.onnx_runtime:OnnxRuntimeBackend",
    "tensorrt": "jetkiosk.edge.runtime.tensorrt.backend:TensorRTBackend",
}


def backend_names() -> List[str]:
    return sorted(_REGISTRY) + ["auto"]


def _factory(name: str) -> Callable[[Manifest, Optional[Config]], Backend]:
    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> str:
    """A backend name, with "auto" made concrete: TensorRT when it imports, else ONNX Runtime."""
    if name == "auto":
        try:
            importlib.import_module("jetkiosk.edge.runtime.tensorrt.adapter")
        except ImportError as exc:
            log.debug("TensorRT not usable (%s); using ONNX Runtime", exc)
            return "onnxruntime"
        return "tensorrt"
    if name not in _REGISTRY:
        raise ConfigError(f"models.backend: unknown {name!r}; choose one of "
                          f"{', '.join(backend_names())}")
    return name


def load_backend(name: str, manifest: Manifest, config: Optional[Config] = None) -> Backend:
    """Load ``manifest``'s model with the backend called ``name`` ("auto" picks the best).

    A TensorRT engine that can be neither loaded nor rebuilt falls back to ONNX Runtime
    (``models.fallback``), logged as an error: the kiosk keeps working, slower.
    """
    chosen = resolve(name)
    try:
        return _factory(chosen)(manifest, config)
    except (JetkioskError, ImportError, RuntimeError) as exc:
        if chosen != "tensorrt" or config is None or not config.models.fallback:
            raise
        log.error("TensorRT cannot run %s (%s). FALLING BACK TO ONNX RUNTIME, which is slower. "
                  "Fix it (`jetkiosk build --force %s`) and restart; models.fallback=false "
                  "makes this fatal.", manifest.name, exc, manifest.name)
        precision = "fp32" if config.models.precision == "fp16" else config.models.precision
        cpu = dataclasses.replace(config, models=dataclasses.replace(config.models,
                                                                     precision=precision))
        backend = _factory("onnxruntime")(manifest, cpu)
        backend.fallback = str(exc)
        return backend

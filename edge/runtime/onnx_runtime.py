"""ONNX Runtime backend: CPU everywhere, the CUDA provider when the install has it."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np
import onnxruntime as ort

from ..core.config import Config
from ..core.errors import ConfigError, ModelError
from .backend import Backend
from .manifest import Manifest


def _providers() -> List[str]:
    available = ort.get_available_providers()
    preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in preferred if p in available] or available


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with ONNX Runtime; checks the file against its manifest first."""

    def __init__(self, manifest: Manifest, config: Optional[Config] = None):
        super().__init__(manifest, config)
        if self.config.models.precision == "fp16":
            raise ConfigError("models.precision: fp16 needs the tensorrt backend (ONNX Runtime "
                              "on the CPU runs fp32 or int8)")
        manifest.verify()
        options = ort.SessionOptions()
        # Detector and encoder alternate on few cores: a pool spinning after its run would
        # steal the cores the other model needs next (measured by bench/live_loop.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.config.models.threads:
            options.intra_op_num_threads = self.config.models.threads
        try:
            self.session = ort.InferenceSession(
                str(manifest.model_path), sess_options=options, providers=_providers()
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{manifest.model_path}: ONNX Runtime cannot load it ({exc})") from exc
        names = {i.name for i in self.session.get_inputs()}
        expected = {spec.name for spec in manifest.inputs}
        if names != expected:
            raise ModelError(
                f"{manifest.model_path}: inputs {sorted(names)} differ from manifest "
                f"{sorted(expected)}"
            )
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def precision(self) -> str:  # type: ignore[override]
        return "int8" if "quantized_from" in self.manifest.source else "fp32"

    def describe(self) -> str:
        fallback = ", fallback from tensorrt" if self.fallback else ""
        return f"onnxruntime ({self.session.get_providers()[0]}{fallback})"

    def run(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self.session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, results))

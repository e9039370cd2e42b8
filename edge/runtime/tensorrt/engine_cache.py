"""The TensorRT engine cache: one engine per (TensorRT version, GPU, ONNX file, precision,
build options), each with a JSON sidecar saying what it is, how and when it was built, and
the accuracy-gate result of the model it came from. Pure Python: no TensorRT needed to read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from ..manifest import Manifest, sha256_file


@dataclass(frozen=True)
class EngineKey:
    """Everything that makes one engine differ from another."""

    model: str
    onnx_sha256: str
    precision: str
    trt_version: str
    device: str
    options: str  # canonical JSON of profiles, DLA core, workspace, calibration cache digest

    @property
    def digest(self) -> str:
        blob = json.dumps([self.onnx_sha256, self.precision, self.trt_version, self.device,
                           self.options])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_dict(self) -> Dict[str, str]:
        return {"model": self.model, "onnx_sha256": self.onnx_sha256, "precision": self.precision,
                "trt_version": self.trt_version, "device": self.device, "options": self.options}


def key_for(manifest: Manifest, precision: str, trt_version: str, device: str,
            options: Dict[str, Any]) -> EngineKey:
    return EngineKey(manifest.name, manifest.sha256, precision, trt_version, device,
                     json.dumps(options, sort_keys=True))


@dataclass
class CachedEngine:
    path: Path
    sidecar: Path

    @classmethod
    def of(cls, root: Path, key: EngineKey) -> CachedEngine:
        stem = f"{key.model}.{key.precision}.{key.digest}"
        return cls(Path(root) / f"{stem}.engine", Path(root) / f"{stem}.json")

    def stale_reason(self, key: EngineKey) -> Optional[str]:
        """None when the engine can be used as it is; otherwise why it must be rebuilt."""
        if not self.path.is_file():
            return "no engine yet"
        try:
            meta = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return "sidecar missing or unreadable"
        if not isinstance(meta, dict) or meta.get("key") != key.as_dict():
            return "built for other inputs (TensorRT, GPU, model or options changed)"
        if meta.get("engine_sha256") != sha256_file(self.path):
            return "engine file changed since it was built (corrupt?)"
        return None

    def write(self, blob: bytes, key: EngineKey, how: Dict[str, Any],
              gate: Optional[Dict[str, Any]]) -> None:
        """Engine then sidecar, each via a temporary file and rename (never half-written)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((self.path, blob), (self.sidecar, None)):
            if data is None:
                meta = {"key": key.as_dict(), "engine_sha256": sha256_file(self.path),
                        "bytes": len(blob), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime()),
                        "how": how, "accuracy_gate": gate}
                data = (json.dumps(meta, indent=2) + "\n").encode()
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

    def discard(self) -> None:
        for path in (self.path, self.sidecar):
            path.unlink(missing_ok=True)

"""A trained encoder -> ONNX + manifest, in the same form ``jetkiosk models prepare`` gives the
pretrained FaceNet (input ``input`` NCHW float32 with a dynamic batch, output ``embeddings``),
so the runtime loads either the same way. The manifest's preprocessing is the one the
network was trained with, so inference aligns and standardises faces the same way.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

from jetkiosk.edge.manifest import Manifest

from .encoder_nets import EncoderNet
from .facenet import export_onnx
from .prepare import FACENET_PREPROCESS, save_manifest


def training_preprocess(size: int) -> Dict[str, Any]:
    """FaceNet's preprocessing with the alignment template scaled to ``size`` px."""
    pre = copy.deepcopy(FACENET_PREPROCESS)
    scale = size / pre["size"][0]
    pre["size"] = [size, size]
    pre["align"]["template"] = [[round(x * scale, 2), round(y * scale, 2)]
                                for x, y in pre["align"]["template"]]
    return pre


def export_encoder(net: EncoderNet, models_dir: Path, name: str, preprocess: Dict[str, Any],
                   source: Dict[str, Any]) -> Manifest:
    """Write ``<name>.onnx`` and ``<name>.json`` into ``models_dir`` (atomically)."""
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / f"{name}.onnx"
    fd, tmp = tempfile.mkstemp(dir=models_dir, suffix=".onnx.tmp")
    os.close(fd)
    try:
        export_onnx(net.eval(), Path(tmp), preprocess["size"][0])
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    base = ("davidsandberg/facenet 20180408-102900, fine-tuned"
            if net.spec["backbone"] == "facenet" else "trained from scratch")
    return save_manifest(final, name, "face-encoder", preprocess, "MIT", {
        "trained_by": "jetkiosk export/encoder_train.py", "upstream": base, "net": net.spec,
        **source})

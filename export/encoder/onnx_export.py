"""A trained encoder -> ONNX + manifest, in the same form ``jetkiosk models prepare`` gives the
pretrained FaceNet (input ``input`` NCHW float32 with a dynamic batch, output ``embeddings``),
so the runtime loads either the same way. The manifest's preprocessing is the one the
network was trained with, so inference aligns and standardises faces the same way.
A trained encoder is a new encoder: its manifest carries none of its base model's source
checksum, converter or score calibration, so its fingerprint is its own (file + preprocessing).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from jetkiosk.edge.runtime.manifest import Manifest
from jetkiosk.export.encoder.nets import EncoderNet
from jetkiosk.export.models.facenet import export_onnx
from jetkiosk.export.models.prepare import FACENET_PREPROCESS, save_manifest

# What the base model's manifest has and a trained encoder must not: they would give it the
# base's fingerprint (``Manifest.fingerprint``) for different encodings.
BASE_ONLY = ("weights_sha256", "converter", "quantized_from")
UPSTREAM = {"facenet": ("davidsandberg/facenet 20180408-102900, fine-tuned", "MIT"),
            "face-reid": ("Open Model Zoo face-reidentification-retail-0095, fine-tuned",
                          "Apache-2.0")}


def training_preprocess(size: int, base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``base``'s preprocessing (a recipe's; default FaceNet's) with the alignment template
    scaled to ``size`` px."""
    pre = copy.deepcopy(base or FACENET_PREPROCESS)
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
    base, license = UPSTREAM.get(net.spec["backbone"], ("trained from scratch", "MIT"))
    return save_manifest(final, name, "face-encoder", preprocess, license, {
        "trained_by": "jetkiosk export/encoder_train.py", "upstream": base, "net": net.spec,
        **{k: v for k, v in source.items() if k not in BASE_ONLY}}, open_set={})

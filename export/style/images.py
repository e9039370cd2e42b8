"""Images for stylization: loading as RGB tensors, the default content set.

Everything here is on a fresh machine offline: scikit-image's and matplotlib's sample
photos, Debian's opencv-doc samples, the face photos in ../shared when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import torch

from jetkiosk.edge.core.config import ImagesConfig
from jetkiosk.edge.core.errors import ImageError
from jetkiosk.edge.core.images import load_image

OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def read_rgb(path: Path, limits: Optional[ImagesConfig] = None) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB, read by the package's one loader."""
    return cv2.cvtColor(load_image(path, min_side=1, limits=limits), cv2.COLOR_BGR2RGB)


def to_tensor(rgb: np.ndarray, max_side: Optional[int] = None) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float in 0..1, long side at most ``max_side``."""
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    return tensor.float().contiguous() / 255.0


def to_rgb(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(
        np.uint8)


def default_content(shared: Optional[Path] = None) -> List[np.ndarray]:
    """Photos a fresh machine has offline: scikit-image, matplotlib, opencv-doc, ../shared."""
    import matplotlib.cbook
    from skimage import data

    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(),
              cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB)]
    images.append(read_rgb(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg",
                                                                 asfileobj=False))))
    paths: List[Path] = []
    if OPENCV_SAMPLES.is_dir():
        paths += [p for p in sorted(OPENCV_SAMPLES.glob("*.jpg")) if p.name != "starry_night.jpg"]
    if shared is not None and shared.is_dir():
        paths += sorted(p for p in shared.rglob("*") if p.suffix.lower() in {".jpg", ".png"}
                        and "orl" not in p.parts)
    for path in paths:
        try:
            image = read_rgb(path)
        except ImageError:
            continue
        if min(image.shape[:2]) >= 128:
            images.append(image)
    return images


def folder_images(folder: Path) -> List[np.ndarray]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{folder}: no images")
    return [read_rgb(p) for p in files]

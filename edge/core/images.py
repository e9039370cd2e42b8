"""Reading photos into BGR uint8 arrays, with a specific error for every bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

MIN_SIDE = 32
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}
TIGHT_CROP_SIDE = 160  # photos smaller than this are tight face crops (ORL): see load_photo


def to_bgr(image: np.ndarray, what: str = "image", min_side: int = MIN_SIDE) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; 8 or 16 bit) as BGR uint8."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{what}: unsupported pixel type {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ImageError(f"{what}: unsupported image shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"{what}: {w}x{h} is too small to hold a face (min side {min_side} px)")
    return image


def load_image(path: Path, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode a photo file (JPEG, PNG, PGM, ...) into BGR uint8."""
    path = Path(path)
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)  # a pipe too
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    if data.size == 0:
        raise ImageError(f"{path}: file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    return to_bgr(image, str(path), min_side)


def load_photo(path: Path) -> np.ndarray:
    """A photo as the detector needs it. Tight face crops (short side under 160 px, like
    ORL's) are upscaled 4x and bordered so the detector sees a whole head."""
    image = load_image(path, min_side=8)
    if min(image.shape[:2]) < TIGHT_CROP_SIDE:
        image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        pad_y, pad_x = image.shape[0] // 8, image.shape[1] // 8
        image = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    return image

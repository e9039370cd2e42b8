"""The one photo loader: every image file the package reads comes through ``load_image``.

It refuses, before decoding, what it cannot afford, each time with a one-line ImageError
naming the file: anything but a regular file (a FIFO only where the caller allows one), more
than ``images.max_bytes`` bytes (never read past the bound), a format whose size it cannot
read from the header, and more pixels than ``images.max_pixels``. The width and height come
from the header as OpenCV's own readers find them (JPEG SOFn, PNG IHDR, BMP, PNM P1-P6, WebP,
TIFF), so a decompression bomb is refused without allocating; whatever the decoder then
rejects or raises is an ImageError too.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import struct
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .config import ImagesConfig
from .errors import ImageError

MIN_SIDE = 32
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}
TIGHT_CROP_SIDE = 160  # photos smaller than this are tight face crops (ORL): see load_photo
# 8-bit BGR always (3 bytes a pixel, whatever the file holds), turned upright as the EXIF
# orientation of a phone's or camera's photo says
DECODE_FLAGS = cv2.IMREAD_COLOR
INT_MAX = 2 ** 31 - 1
CHUNK = 1 << 20
FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe (FIFO)"),
              (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in FILE_KINDS if test(mode)), "a special file")


def _field(data: bytes, offset: int, fmt: str) -> Tuple[int, ...]:
    """``struct.unpack_from``, with a ValueError when the header ends first."""
    if offset + struct.calcsize(fmt) > len(data):
        raise ValueError("its header is truncated")
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> Tuple[int, int]:
    if data[8:16] != b"\0\0\0\x0dIHDR":
        raise ValueError("PNG whose first chunk is not IHDR")
    width, height = _field(data, 16, ">II")
    return width, height


JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}  # the frame types libjpeg decodes
JPEG_SEGMENTS = {0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xFE, *range(0xE0, 0xF0)}  # skipped by length
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length
JPEG_MARKER = re.compile(rb"\xff[\x01-\xfe]")  # after fill 0xFFs; 0xFF 0x00 is stuffing
JPEG_MAX_MARKERS = 1000  # before the first scan; photos have a few dozen


def _jpeg(data: bytes) -> Tuple[int, int]:
    """The frame size, walking the markers as libjpeg's ``read_markers`` does up to the first
    scan (bytes between segments skipped, as its ``next_marker`` does)."""
    pos, size = 2, None
    for _ in range(JPEG_MAX_MARKERS):
        found = JPEG_MARKER.search(data, pos)
        if not found:
            raise ValueError("JPEG header is truncated")
        marker, pos = data[found.end() - 1], found.end()
        if marker == 0xDA:  # start of scan: the header is over
            if size is None:
                raise ValueError("JPEG scan before its frame header")
            if data.find(b"\xff\xd9", pos) < 0:
                raise ValueError("JPEG is truncated: no end-of-image marker")
            return size
        if marker in JPEG_SOF:
            if size is not None:
                raise ValueError("JPEG with two frame headers")
            height, width = _field(data, pos + 3, ">HH")
            size = (width, height)
        elif marker not in JPEG_SEGMENTS and marker not in JPEG_STANDALONE:
            raise ValueError(f"JPEG marker 0x{marker:02X} is not one libjpeg decodes")
        if marker not in JPEG_STANDALONE:
            pos += max(2, _field(data, pos, ">H")[0])
    raise ValueError(f"JPEG with over {JPEG_MAX_MARKERS} markers before its first scan")


def _bmp(data: bytes) -> Tuple[int, int]:
    (header,) = _field(data, 14, "<i")
    if header == 12:  # OS/2 BITMAPCOREHEADER
        width, height = _field(data, 18, "<HH")
    elif header < 36:
        raise ValueError(f"BMP with a {header}-byte info header")
    else:
        width, height = _field(data, 18, "<ii")
    return width, abs(height)  # negative: rows top-down


PNM_NUMBER = re.compile(rb"(?:[ \t\n\v\f\r]|#[^\n\r]*[\n\r])*([0-9]+)")
PNM_MAX_GAP = 4096  # bytes of spaces and comments before a header number


def _pnm(data: bytes) -> Tuple[int, int]:
    """Width and height read as OpenCV's PxM reader does (each number ends at a byte it
    consumes; '#' starts a comment only where a number may start); a file too short for
    the pixels its header claims is refused here."""
    kind, pos, numbers = data[1] - ord("0"), 2, []
    for _ in range(2 if kind in (1, 4) else 3):
        end = min(len(data), pos + PNM_MAX_GAP)
        match = PNM_NUMBER.match(data, pos, end)
        if not match or match.end() >= end or len(match.group(1)) > 10:
            raise ValueError("PNM header is truncated, too long or not numbers")
        numbers.append(int(match.group(1)))
        pos = match.end() + 1
    width, height, maxval = (numbers + [1])[:3]
    if max(width, height, maxval) > INT_MAX or not 0 < maxval < 1 << 16:
        raise ValueError("PNM header numbers are out of range")
    depth = 2 if maxval > 255 else 1
    need = {1: width * height, 2: width * height, 3: 3 * width * height,  # text: a byte a value
            4: (width + 7) // 8 * height, 5: depth * width * height,
            6: 3 * depth * width * height}[kind]
    if len(data) - pos < need:
        raise ValueError(f"PNM header says {width}x{height} but the file is too short for it")
    return width, height


def _webp(data: bytes) -> Tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas
        low_w, high_w, low_h, high_h = _field(data, 24, "<HBHB")
        return 1 + low_w + (high_w << 16), 1 + low_h + (high_h << 16)
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one
        signature, bits = _field(data, 20, "<BI")
        if signature != 0x2F:
            raise ValueError("WebP lossless stream without its signature")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":  # lossy: key frame start code, then 14 bits each
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("WebP lossy stream without a key frame")
        width, height = _field(data, 26, "<HH")
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError("WebP whose first chunk is not VP8, VP8L or VP8X")


def _tiff(data: bytes) -> Tuple[int, int]:
    """ImageWidth and ImageLength of the first directory (the page OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    (directory,) = _field(data, 4, order + "I")
    (count,) = _field(data, directory, order + "H")
    size: Dict[int, int] = {}
    for entry in range(directory + 2, directory + 2 + 12 * count, 12):
        tag, kind, values = _field(data, entry, order + "HHI")
        if tag in (256, 257):
            if tag in size or values != 1 or kind not in (3, 4):
                raise ValueError("TIFF whose image size is repeated or not one number")
            size[tag] = _field(data, entry + 8, order + ("H" if kind == 3 else "I"))[0]
    if len(size) < 2:
        raise ValueError("TIFF without an image width and length")
    return size[256], size[257]


def _format(data: bytes) -> Tuple[str, Callable[[bytes], Tuple[int, int]]]:
    """The format, by the signature OpenCV chooses its decoder by, and its header reader."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", _png
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG", _jpeg
    if data.startswith(b"BM"):
        return "BMP", _bmp
    if re.match(rb"P[1-6][ \t\n\v\f\r]", data):
        return "PNM", _pnm
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp
    if data[:4] in (b"II*\0", b"MM\0*"):
        return "TIFF", _tiff
    raise ValueError("not a JPEG, PNG, BMP, PNM, WebP or TIFF file")


def image_size(data: bytes) -> Tuple[str, int, int]:
    """Format, width and height from the header of an image file's bytes, without decoding;
    a ValueError says why not (other formats are refused: their size is not read)."""
    name, read_size = _format(data)
    width, height = read_size(data)
    if width <= 0 or height <= 0:
        raise ValueError(f"{name} header says {width}x{height}")
    return name, width, height


def _open_error(path: Path, exc: OSError) -> ImageError:
    why = {errno.ENOENT: "no such file", errno.ELOOP: "symbolic link loop",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(
               exc.errno or 0, f"cannot open ({exc.strerror})")
    if exc.errno == errno.ENXIO:  # a socket, or a device file with no device behind it
        try:
            why = f"is {_kind(os.stat(path).st_mode)}, not an image file"
        except OSError:
            pass
    return ImageError(f"{path}: {why}")


def _open(path: Path, allow_fifo: bool) -> int:
    """A descriptor on a regular file, or on an allowed FIFO once its writer has written or
    closed (as a blocking open and read would wait); never blocks on a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise _open_error(path, exc) from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return fd
    if allow_fifo and stat.S_ISFIFO(mode):
        os.set_blocking(fd, True)
        writer = select.poll()  # before a writer comes, a read would see the end at once
        writer.register(fd, select.POLLIN)
        writer.poll()
        return fd
    os.close(fd)
    raise ImageError(f"{path}: is {_kind(mode)}, not an image file")


def read_limited(path: Path, max_bytes: int, allow_fifo: bool = False) -> bytes:
    """The bytes of a regular file (or of a FIFO, when allowed) up to ``max_bytes``; more is
    an ImageError, a file known to be larger refused unread."""
    fd = _open(path, allow_fifo)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise ImageError(f"{path}: {size} bytes is over images.max_bytes ({max_bytes}); "
                             "refused unread")
        chunks: List[bytes] = []
        total = 0
        while total <= max_bytes:  # the size may lie (procfs) or grow; a pipe has none
            chunk = os.read(fd, min(CHUNK, max_bytes + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    raise ImageError(f"{path}: more than images.max_bytes ({max_bytes}) bytes; refused")


def load_image(path: Path, min_side: int = MIN_SIDE, limits: Optional[ImagesConfig] = None,
               allow_fifo: bool = False) -> np.ndarray:
    """Decode a photo file into BGR uint8 within ``limits`` (``config.images``; the defaults
    when None). FIFOs are refused unless ``allow_fifo`` (read then up to the byte limit)."""
    path = Path(path)
    limits = ImagesConfig() if limits is None else limits
    data = read_limited(path, limits.max_bytes, allow_fifo)
    if not data:
        raise ImageError(f"{path}: file is empty")
    try:
        name, width, height = image_size(data)
    except ValueError as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    if width * height > limits.max_pixels:
        raise ImageError(f"{path}: {name} of {width}x{height} is over images.max_pixels "
                         f"({limits.max_pixels}); refused before decoding")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), DECODE_FLAGS)
    except cv2.error as exc:
        raise ImageError(f"{path}: not a readable image ({name} decoder: "
                         f"{exc.err})") from None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt {name} data)")
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise ImageError(f"{path}: {width}x{height} is too small to hold a face "
                         f"(min side {min_side} px)")
    return image


def load_photo(path: Path, limits: Optional[ImagesConfig] = None) -> np.ndarray:
    """A photo as the detector needs it. Tight face crops (short side under 160 px, like
    ORL's) are upscaled 4x and bordered so the detector sees a whole head."""
    image = load_image(path, min_side=8, limits=limits)
    if min(image.shape[:2]) < TIGHT_CROP_SIDE:
        image = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
        pad_y, pad_x = image.shape[0] // 8, image.shape[1] // 8
        image = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_REPLICATE)
    return image

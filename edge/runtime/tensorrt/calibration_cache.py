"""TensorRT's INT8 calibration cache, read and written without TensorRT.

The file is text: a header ``TRT-<version>-<algorithm>`` (version as NV_TENSORRT_VERSION:
major*1000 + minor*100 + patch before TensorRT 10, major*10000 + minor*100 + patch since),
then one ``<tensor>: <8 hex digits>`` line per tensor, the digits being the float32 scale
(amax / 127) as big-endian IEEE-754 bits. TensorRT recalibrates when the header's version
or algorithm differs from its own, so a cache is written for one TensorRT version.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

from ...core.errors import ModelError

ALGORITHMS = {"entropy": "EntropyCalibration2", "minmax": "MinMaxCalibration"}


def version_number(version: str) -> int:
    """"8.6.1" -> 8601, "10.3.0" -> 100300 (TensorRT's NV_TENSORRT_VERSION)."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


@dataclass
class CalibrationCache:
    """Per-tensor scales (float32) for one TensorRT version and calibration algorithm."""

    version: int
    algorithm: str  # as in the header: EntropyCalibration2, MinMaxCalibration, ...
    scales: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_ranges(cls, trt_version: str, algorithm: str,
                    amax: Dict[str, float]) -> CalibrationCache:
        """From per-tensor absolute maxima (symmetric int8: scale = amax / 127)."""
        return cls(version_number(trt_version), ALGORITHMS[algorithm],
                   {name: float(value) / 127.0 for name, value in amax.items()})

    def dumps(self) -> str:
        lines = [f"TRT-{self.version}-{self.algorithm}"]
        for name, scale in self.scales.items():
            bits = struct.unpack(">I", struct.pack(">f", scale))[0]
            lines.append(f"{name}: {bits:08x}")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dumps())


def loads(text: str, where: str = "calibration cache") -> CalibrationCache:
    """Parse a cache; ModelError naming the line when it is not one."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("TRT-") or lines[0].count("-") < 2:
        raise ModelError(f"{where}: line 1 must be TRT-<version>-<algorithm>, "
                         f"got {lines[0][:60] if lines else 'an empty file'!r}")
    _, version, algorithm = lines[0].split("-", 2)
    if not version.isdigit():
        raise ModelError(f"{where}: line 1: version {version!r} is not a number")
    cache = CalibrationCache(int(version), algorithm)
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, digits = line.rpartition(": ")
        digits = digits.strip()
        if not sep or not name or len(digits) != 8:
            raise ModelError(f"{where}: line {number}: expected '<tensor>: <8 hex digits>', "
                             f"got {line[:80]!r}")
        try:
            cache.scales[name] = struct.unpack(">f", bytes.fromhex(digits))[0]
        except ValueError:
            raise ModelError(f"{where}: line {number}: {digits!r} is not hexadecimal") from None
    return cache


def load(path: Path) -> CalibrationCache:
    try:
        return loads(Path(path).read_text(), str(path))
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a text calibration cache") from None

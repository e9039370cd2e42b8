"""What the CPU offers INT8 inference, read from its flags (``/proc/cpuinfo``)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import FrozenSet, Optional

# x86 instructions that multiply and add int8 in one step: ONNX Runtime's QLinear kernels use
# them, and only with one does an int8 model pay on a CPU (bench/int8.py: 1.6x at batch 8
# with AVX2 alone, 4.5x with AVX-512 VNNI for FaceNet).
INT8_DOT_PRODUCT = ("amx_int8", "avx512_vnni", "avx_vnni")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> FrozenSet[str]:
    """The first processor's flags (x86 ``flags``, Arm ``Features``); empty when unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=None)
def int8_dot_product(cpuinfo: Path = Path("/proc/cpuinfo")) -> Optional[str]:
    """The int8 dot-product instruction set this CPU has (``avx512_vnni``, ...), or None."""
    flags = cpu_flags(cpuinfo)
    return next((name for name in INT8_DOT_PRODUCT if name in flags), None)


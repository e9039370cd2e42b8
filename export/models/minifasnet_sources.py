"""The released MiniFASNet anti-spoofing weights that jetkiosk converts (no torch needed:
``models prepare`` reads these too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

SIZE = 80  # both networks take 80x80 crops
OUTPUT = "logits"


@dataclass(frozen=True)
class Source:
    """One released .pth: our model name, its architecture, crop scale and sha256."""

    file: str
    name: str
    scale: float
    se: bool  # squeeze-excitation (MiniFASNetV1SE)
    # Bottleneck widths of the three residual stages (64, 128 and 128 channels).
    stages: Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]
    sha256: str


# The files of resources/anti_spoof_models/ at upstream commit b6d5f04a.
SOURCES = (
    Source("2.7_80x80_MiniFASNetV2.pth", "minifasnet-v2", 2.7, False,
           ((13, 13, 13, 13), (231, 52, 26, 77, 26, 26), (26, 26)),
           "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0"),
    Source("4_0_0_80x80_MiniFASNetV1SE.pth", "minifasnet-v1se", 4.0, True,
           ((13, 26, 13, 52), (154, 52, 26, 52, 26, 26), (26, 26)),
           "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990"),
)

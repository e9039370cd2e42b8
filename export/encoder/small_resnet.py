"""A small residual face encoder for training from scratch (tests, small devices).

ResNet-style basic blocks (two 3x3 convolutions with batch norm and an identity or 1x1
shortcut), a strided stem, global average pooling and a linear embedding, L2-normalised.
1.26 M parameters at the default widths; any square input size divisible by 16.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class SmallResNetConfig:
    widths: Tuple[int, ...] = (32, 64, 128, 256)
    blocks: int = 1  # basic blocks per stage
    embedding: int = 128

    def as_dict(self) -> Dict[str, object]:
        return {**asdict(self), "widths": list(self.widths)}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """Standardised NCHW image -> L2-normalised embedding."""

    def __init__(self, config: SmallResNetConfig):
        super().__init__()
        self.config = config
        first = config.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(3, first, 3, 2, 1, bias=False),
                                  nn.BatchNorm2d(first), nn.ReLU(inplace=True))
        layers = []
        cin = first
        for i, width in enumerate(config.widths):
            for j in range(config.blocks):
                layers.append(BasicBlock(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.embed = nn.Linear(cin, config.embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = self.embed(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return F.normalize(x, p=2.0, dim=1, eps=1e-5)

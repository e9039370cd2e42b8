"""InceptionResnetV1 (FaceNet), laid out module for module like facenet-pytorch's.

Batch norm is folded into each convolution's bias, as it is in the frozen TensorFlow graph
we convert from, so a ``BasicConv2d`` is conv(bias) + ReLU. Every convolution knows its
TensorFlow scope (``tf_scope``) so the converter can fill it by name and prove that every
weight in the graph found a home.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F


class BasicConv2d(nn.Module):
    """Convolution with folded batch norm, then ReLU."""

    def __init__(self, tf_scope: str, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.tf_scope = tf_scope
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class _Residual(nn.Module):
    """Shared shape of Block35/17/8: branches -> concat -> 1x1 up -> scaled residual."""

    def __init__(self, scope: str, channels: int, concat: int, scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        self.relu = relu
        self.up = nn.Conv2d(concat, channels, 1, bias=True)
        self.up.tf_scope = f"{scope}/Conv2d_1x1"  # type: ignore[assignment]
        self.branches = nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], 1)
        out = x + self.scale * self.up(mixed)
        return F.relu(out) if self.relu else out


class Block35(_Residual):
    def __init__(self, scope: str, scale: float = 0.17):
        super().__init__(scope, 256, 96, scale)
        b = f"{scope}/Branch_"
        self.branches.extend([
            BasicConv2d(f"{b}0/Conv2d_1x1", 256, 32, 1),
            nn.Sequential(
                BasicConv2d(f"{b}1/Conv2d_0a_1x1", 256, 32, 1),
                BasicConv2d(f"{b}1/Conv2d_0b_3x3", 32, 32, 3, padding=1),
            ),
            nn.Sequential(
                BasicConv2d(f"{b}2/Conv2d_0a_1x1", 256, 32, 1),
                BasicConv2d(f"{b}2/Conv2d_0b_3x3", 32, 32, 3, padding=1),
                BasicConv2d(f"{b}2/Conv2d_0c_3x3", 32, 32, 3, padding=1),
            ),
        ])


class Block17(_Residual):
    def __init__(self, scope: str, scale: float = 0.10):
        super().__init__(scope, 896, 256, scale)
        b = f"{scope}/Branch_"
        self.branches.extend([
            BasicConv2d(f"{b}0/Conv2d_1x1", 896, 128, 1),
            nn.Sequential(
                BasicConv2d(f"{b}1/Conv2d_0a_1x1", 896, 128, 1),
                BasicConv2d(f"{b}1/Conv2d_0b_1x7", 128, 128, (1, 7), padding=(0, 3)),
                BasicConv2d(f"{b}1/Conv2d_0c_7x1", 128, 128, (7, 1), padding=(3, 0)),
            ),
        ])


class Block8(_Residual):
    def __init__(self, scope: str, scale: float = 0.20, relu: bool = True):
        super().__init__(scope, 1792, 384, scale, relu)
        b = f"{scope}/Branch_"
        self.branches.extend([
            BasicConv2d(f"{b}0/Conv2d_1x1", 1792, 192, 1),
            nn.Sequential(
                BasicConv2d(f"{b}1/Conv2d_0a_1x1", 1792, 192, 1),
                BasicConv2d(f"{b}1/Conv2d_0b_1x3", 192, 192, (1, 3), padding=(0, 1)),
                BasicConv2d(f"{b}1/Conv2d_0c_3x1", 192, 192, (3, 1), padding=(1, 0)),
            ),
        ])


class _Concat(nn.Module):
    """Reduction blocks (Mixed_6a, Mixed_7a): parallel branches concatenated."""

    def __init__(self, branches: List[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


def _mixed_6a(s: str) -> _Concat:
    return _Concat([
        BasicConv2d(f"{s}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, stride=2),
        nn.Sequential(
            BasicConv2d(f"{s}/Branch_1/Conv2d_0a_1x1", 256, 192, 1),
            BasicConv2d(f"{s}/Branch_1/Conv2d_0b_3x3", 192, 192, 3, padding=1),
            BasicConv2d(f"{s}/Branch_1/Conv2d_1a_3x3", 192, 256, 3, stride=2),
        ),
        nn.MaxPool2d(3, stride=2),
    ])


def _mixed_7a(s: str) -> _Concat:
    return _Concat([
        nn.Sequential(
            BasicConv2d(f"{s}/Branch_0/Conv2d_0a_1x1", 896, 256, 1),
            BasicConv2d(f"{s}/Branch_0/Conv2d_1a_3x3", 256, 384, 3, stride=2),
        ),
        nn.Sequential(
            BasicConv2d(f"{s}/Branch_1/Conv2d_0a_1x1", 896, 256, 1),
            BasicConv2d(f"{s}/Branch_1/Conv2d_1a_3x3", 256, 256, 3, stride=2),
        ),
        nn.Sequential(
            BasicConv2d(f"{s}/Branch_2/Conv2d_0a_1x1", 896, 256, 1),
            BasicConv2d(f"{s}/Branch_2/Conv2d_0b_3x3", 256, 256, 3, padding=1),
            BasicConv2d(f"{s}/Branch_2/Conv2d_1a_3x3", 256, 256, 3, stride=2),
        ),
        nn.MaxPool2d(3, stride=2),
    ])


class InceptionResnetV1(nn.Module):
    """FaceNet encoder: NCHW float image (standardised) -> L2-normalised embedding."""

    ROOT = "InceptionResnetV1"

    def __init__(self, embedding_size: int = 512):
        super().__init__()
        r = self.ROOT
        self.stem = nn.Sequential(
            BasicConv2d(f"{r}/Conv2d_1a_3x3", 3, 32, 3, stride=2),
            BasicConv2d(f"{r}/Conv2d_2a_3x3", 32, 32, 3),
            BasicConv2d(f"{r}/Conv2d_2b_3x3", 32, 64, 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            BasicConv2d(f"{r}/Conv2d_3b_1x1", 64, 80, 1),
            BasicConv2d(f"{r}/Conv2d_4a_3x3", 80, 192, 3),
            BasicConv2d(f"{r}/Conv2d_4b_3x3", 192, 256, 3, stride=2),
        )
        self.repeat_1 = nn.Sequential(*[Block35(f"{r}/Repeat/block35_{i}") for i in range(1, 6)])
        self.mixed_6a = _mixed_6a(f"{r}/Mixed_6a")
        self.repeat_2 = nn.Sequential(
            *[Block17(f"{r}/Repeat_1/block17_{i}") for i in range(1, 11)]
        )
        self.mixed_7a = _mixed_7a(f"{r}/Mixed_7a")
        self.repeat_3 = nn.Sequential(*[Block8(f"{r}/Repeat_2/block8_{i}") for i in range(1, 6)])
        self.block8 = Block8(f"{r}/Block8", scale=1.0, relu=False)
        self.last_linear = nn.Linear(1792, embedding_size, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_size, eps=0.001, affine=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1792-d pooled features before the bottleneck."""
        x = self.stem(x)
        x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
        x = self.block8(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_bn(self.last_linear(self.features(x)))
        return F.normalize(x, p=2.0, dim=1, eps=1e-5)

    def tf_convs(self) -> Iterator[Tuple[str, nn.Conv2d]]:
        """Every convolution with the TensorFlow scope its weights come from."""
        for module in self.modules():
            if isinstance(module, BasicConv2d):
                yield module.tf_scope, module.conv
            elif isinstance(module, _Residual):
                yield module.up.tf_scope, module.up  # type: ignore[misc]

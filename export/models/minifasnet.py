"""MiniFASNet passive face anti-spoofing (minivision-ai/Silent-Face-Anti-Spoofing) -> ONNX.

The two released networks, MiniFASNetV2 (crop = face box scaled 2.7x) and MiniFASNetV1SE
(4.0x, squeeze-excitation in the last block of each stage), are written here from their state
dicts' names and shapes: a MobileFaceNet-style stem, three stride-2 inverted bottlenecks each
followed by a stage of residual ones, a 5x5 depthwise head, a 128-d embedding with batch norm
and a 3-way linear classifier (class 1 = live). Dropout is left out: it does nothing in eval.
Upstream feeds the 80x80 crop as BGR float 0-255, not normalised (its ToTensor leaves out the
division by 255).

Usage: ``python -m jetkiosk.export.models.minifasnet SRC_DIR OUT_DIR``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.runtime.manifest import sha256_file
from jetkiosk.export.models.minifasnet_sources import OUTPUT, SIZE, SOURCES, Source

CONVERTER_VERSION = 1
OPSET = 17
INPUT = "input"


class ConvBlock(nn.Module):
    """Convolution without bias, batch norm, and PReLU unless ``act`` is False."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 padding: Optional[int] = None, act: bool = True):
        super().__init__()
        pad = (kernel - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Channel gate: global average, 1x1 conv + BN down by 4, ReLU, back up + BN, sigmoid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.relu(self.bn1(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(self.bn2(self.fc2(gate)))


class Bottleneck(nn.Module):
    """1x1 expand, 3x3 depthwise, linear 1x1 project; a shortcut when the stride is 1."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, se: bool = False):
        super().__init__()
        self.conv = ConvBlock(cin, mid)
        self.conv_dw = ConvBlock(mid, mid, 3, stride, groups=mid)
        self.project = ConvBlock(mid, cout, act=False)
        self.residual = stride == 1
        self.se_module = SqueezeExcite(cout) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se_module(self.project(self.conv_dw(self.conv(x))))
        return x + y if self.residual else y


class Stage(nn.Module):
    """Residual bottlenecks at ``channels``; with ``se``, the last one has a channel gate."""

    def __init__(self, channels: int, widths: Sequence[int], se: bool):
        super().__init__()
        self.model = nn.Sequential(*(Bottleneck(channels, w, channels, se=se and i == len(widths)
                                                - 1) for i, w in enumerate(widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNetV2 / V1SE for 80x80 input: logits of (spoof, live, spoof) per crop."""

    def __init__(self, source: Source):
        super().__init__()
        stage3, stage4, stage5 = source.stages
        self.conv1 = ConvBlock(3, 32, 3, 2)
        self.conv2_dw = ConvBlock(32, 32, 3, groups=32)
        self.conv_23 = Bottleneck(32, 103, 64, stride=2)
        self.conv_3 = Stage(64, stage3, source.se)
        self.conv_34 = Bottleneck(64, 231, 128, stride=2)
        self.conv_4 = Stage(128, stage4, source.se)
        self.conv_45 = Bottleneck(128, 308, 128, stride=2)
        self.conv_5 = Stage(128, stage5, source.se)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = ConvBlock(512, 512, 5, groups=512, padding=0, act=False)  # 5x5 -> 1x1
        self.linear = nn.Linear(512, 128, bias=False)
        self.bn = nn.BatchNorm1d(128)
        self.prob = nn.Linear(128, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34,
                      self.conv_4, self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        return self.prob(self.bn(self.linear(torch.flatten(x, 1))))


def source_for(path: Path) -> Source:
    """The known release named like ``path``, after checking its sha256."""
    path = Path(path)
    source = next((s for s in SOURCES if s.file == path.name), None)
    if source is None:
        raise ModelError(f"{path}: not a known MiniFASNet release "
                         f"({', '.join(s.file for s in SOURCES)})")
    if not path.is_file():
        raise ModelError(f"{path}: missing")
    digest = sha256_file(path)
    if digest != source.sha256:
        raise ModelError(f"{path}: sha256 {digest} does not match the expected {source.sha256} "
                         "(corrupt or a different release)")
    return source


def load_minifasnet(path: Path) -> MiniFASNet:
    """The network of ``path`` (a checked release) with its weights, in eval mode. Every key
    of the state dict must fill a parameter or buffer and none may be left over."""
    source = source_for(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged pickle or zip surfaces as anything
        raise ModelError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    prefix = "module."  # saved from a DataParallel wrapper
    model = MiniFASNet(source)
    try:
        model.load_state_dict({k[len(prefix):] if k.startswith(prefix) else k: v
                               for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"{path}: does not fit {source.name}: {exc}") from exc
    return model.eval()


def export_onnx(model: MiniFASNet, path: Path) -> None:
    """ONNX opset 17 with a dynamic batch: ``input`` [batch, 3, 80, 80] BGR 0-255,
    ``logits`` [batch, 3]."""
    torch.onnx.export(
        model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=[INPUT],
        output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=OPSET, dynamo=False)


def convert(src_dir: Path, out_dir: Path) -> Dict[str, Path]:
    """Convert both releases in ``src_dir`` to ``out_dir/<name>.onnx`` (each written to a
    temporary name first, so a failed export leaves no half-written model); {name: path}."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}
    for source in SOURCES:
        model = load_minifasnet(Path(src_dir) / source.file)
        out = Path(out_dir) / f"{source.name}.onnx"
        partial = out.with_name(out.name + ".partial")
        try:
            with torch.no_grad():
                export_onnx(model, partial)
            partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
        written[source.name] = out
    return written


def main(argv: Optional[List[str]] = None) -> int:
    """``SRC_DIR OUT_DIR``: convert both models, print what was written; 1 on a ModelError."""
    parser = argparse.ArgumentParser(prog="python -m jetkiosk.export.models.minifasnet",
                                     description="MiniFASNet anti-spoofing .pth -> ONNX")
    for arg in ("SRC_DIR", "OUT_DIR"):
        parser.add_argument(arg.lower(), type=Path, metavar=arg)
    args = parser.parse_args(argv)
    try:
        for name, path in convert(args.src_dir, args.out_dir).items():
            print(f"wrote {path} ({name}, converter version {CONVERTER_VERSION}, "
                  f"sha256 {sha256_file(path)})")
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

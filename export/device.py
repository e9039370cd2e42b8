"""The PyTorch device a trainer runs on: CUDA when asked for (or available), else the CPU."""

from __future__ import annotations

import torch

from jetkiosk.edge.core.errors import JetkioskError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise JetkioskError("--device cuda: no CUDA device is visible to PyTorch")
    if name == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return torch.device(name)

"""Resumable training checkpoints, shared by the encoder and style trainers: written
atomically (temporary file, rename), and refused when they were made for another network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from jetkiosk.edge.core.errors import JetkioskError


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, identity: Dict[str, Any], extra: Dict[str, Any]) -> None:
    """Weights, optimizer, step, what network it is (``identity``) and the trainer's own
    state (``extra``: random states, history) in one file that is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, **identity, **extra}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    identity: Dict[str, Any], device: Any) -> Optional[Dict[str, Any]]:
    """Restore ``model`` and ``optimizer`` from ``path`` and return the whole state (for the
    trainer's own fields); None when there is no checkpoint yet."""
    if not path.is_file():
        return None
    state = torch.load(str(path), map_location=device, weights_only=False)
    found = {key: state.get(key) for key in identity}
    if found != identity:
        raise JetkioskError(f"{path}: made for {found}, not {identity}; remove it to start "
                            "again")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state

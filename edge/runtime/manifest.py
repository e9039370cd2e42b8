"""Model manifests: the JSON file beside every model that says how to feed it.

The runtime takes every preprocessing constant (size, colour order, mean/std, alignment)
from here, so a model and the way it is fed travel together.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..core.errors import ModelError

log = logging.getLogger(__name__)
SCHEMA = 1
Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (str for a dynamic axis) and dtype."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: str = "float32"


@dataclass
class Manifest:
    """Everything the runtime needs to know about one model file."""

    name: str
    task: str
    file: str
    sha256: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    preprocess: Dict[str, Any]
    source: Dict[str, Any]
    license: str
    postprocess: Dict[str, Any] = field(default_factory=dict)
    # Face encoders: score distributions measured on real photos (edge/open_set.py reads them).
    open_set: Dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA
    path: Optional[Path] = field(default=None, compare=False, repr=False)
    # How models.precision was settled for this model (``load_precision``); never saved.
    why: str = field(default="", compare=False, repr=False)

    @property
    def model_path(self) -> Path:
        if self.path is None:
            raise ModelError(f"manifest {self.name} was not loaded from disk")
        return self.path.parent / self.file

    @property
    def fingerprint(self) -> str:
        """Identity of the encodings this model makes: the source weights, the converter that
        turned them into a model, and the preprocessing; never the bytes of one export, which
        change with the exporter's version while the numbers stay the same."""
        quantized = self.source.get("quantized_from", {})
        if "fingerprint" in quantized:  # a variant that passed its accuracy gate
            return str(quantized["fingerprint"])
        if "weights_sha256" not in self.source:  # a model we trained and exported ourselves
            return self.legacy_fingerprint
        blob = json.dumps({"weights": self.source["weights_sha256"],
                           "converter": self.source.get("converter"),
                           "preprocess": self.preprocess}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def legacy_fingerprint(self) -> str:
        """The fingerprint of earlier releases: the exported file's bytes plus preprocessing.
        Galleries that carry it are still read (and rebound) by ``load_gallery``."""
        sha = self.source.get("quantized_from", {}).get("sha256", self.sha256)
        blob = json.dumps({"sha256": sha, "preprocess": self.preprocess}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def chosen(self) -> str:
        """The precision ``load_precision`` chose (``why`` up to its colon)."""
        return self.why.partition(": ")[0]

    @property
    def reason(self) -> str:
        """Why ``load_precision`` chose it (``why`` after the colon)."""
        return self.why.partition(": ")[2]

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        data.pop("why")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())
        self.path = path

    def verify(self) -> None:
        """Check that the model file exists and matches the recorded sha256."""
        model = self.model_path
        if not model.is_file():
            raise ModelError(f"{model}: model file missing (named by {self.path})")
        digest = sha256_file(model)
        if digest != self.sha256:
            fix = ("export the style again or reinstall jetkiosk" if self.task == "style-transfer"
                   else "run `jetkiosk models prepare --force`")
            raise ModelError(f"{model}: sha256 {digest[:12]}... does not match manifest "
                             f"{self.sha256[:12]}... (corrupt or replaced; {fix})")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _specs(raw: Any, where: str) -> List[TensorSpec]:
    if not isinstance(raw, list) or not raw:
        raise ModelError(f"{where}: must be a non-empty list of tensor specs")
    try:
        return [TensorSpec(t["name"], tuple(t["shape"]), t.get("dtype", "float32")) for t in raw]
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{where}: malformed tensor spec ({exc})") from exc


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: manifest missing (run `jetkiosk models prepare`)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: manifest must be a JSON object")
    if data.get("schema") != SCHEMA:
        raise ModelError(f"{path}: manifest schema {data.get('schema')!r}, expected {SCHEMA}")
    required = ("name", "task", "file", "sha256", "preprocess", "source", "license")
    missing = [key for key in required if key not in data]
    if missing:
        raise ModelError(f"{path}: manifest lacks {', '.join(missing)}")
    return Manifest(
        name=data["name"], task=data["task"], file=data["file"], sha256=data["sha256"],
        inputs=_specs(data.get("inputs"), f"{path}: inputs"),
        outputs=_specs(data.get("outputs"), f"{path}: outputs"),
        preprocess=data["preprocess"], postprocess=data.get("postprocess", {}),
        open_set=data.get("open_set", {}), source=data["source"], license=data["license"],
        path=path,
    )


def manifest_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.json"


PRECISIONS = ("auto", "fp32", "fp16", "int8")
# models.precision "auto" takes an int8-cpu variant only where it was measured this much faster
# than FP32 (at batch 8 for encoders, else batch 1; on a CPU with an int8 dot product); a
# variant without a measurement (made with `jetkiosk quantize`) is taken on such a CPU.
PAYS = 1.5


def variant_path(path: Path, form: str) -> Path:
    """``x.json`` -> ``x.<form>.json`` (``int8``, ``int8-cpu``); fp32/fp16 use ``x.json``."""
    path = Path(path)
    return path if form in ("fp32", "fp16") else path.with_name(f"{path.stem}.{form}.json")


def _missing(variant: Path) -> str:
    """Why there is no INT8 variant at ``variant``."""
    report = variant.with_name(variant.stem + ".gate.json")
    stem = variant.name.split(".")[0]
    name = stem[len("style-"):] if stem.startswith("style-") else stem
    return f"its int8 variant failed the accuracy gate ({report})" if report.is_file() else \
        f"there is no int8 variant (`jetkiosk quantize {name}` makes one if it passes the gate)"


def _chosen(manifest: Manifest, why: str) -> Manifest:
    manifest.why = why
    return manifest


def _auto(path: Path, backend: str) -> Manifest:
    """``models.precision = "auto"``: INT8 where a gated variant exists and pays, else FP16
    under TensorRT and FP32 on ONNX Runtime."""
    from .cpu_features import INT8_DOT_PRODUCT, int8_dot_product

    if backend == "tensorrt":
        variant = variant_path(path, "int8")
        if variant.is_file():
            return _chosen(load_manifest(variant), "int8: its int8 variant passed the accuracy "
                                                   "gate")
        return _chosen(load_manifest(path), f"fp16: {_missing(variant)}")
    variant = variant_path(path, "int8-cpu")
    if not variant.is_file():
        return _chosen(load_manifest(path), f"fp32: {_missing(variant)}")
    dot = int8_dot_product()
    if dot is None:
        return _chosen(load_manifest(path), "fp32: this CPU has no int8 dot product ("
                       f"{', '.join(INT8_DOT_PRODUCT)}), without which int8 does not pay")
    manifest = load_manifest(variant)
    measured = manifest.source.get("speed", {})
    batch = "batch8" if "batch8" in measured else "batch1"
    speed = measured.get(batch)
    if speed is not None and speed < PAYS:
        return _chosen(load_manifest(path), f"fp32: its int8 variant was measured only "
                       f"{speed:.2f}x as fast at {batch[:5]} {batch[5:]} on {measured['cpu']} "
                       f"(auto needs {PAYS}x)")
    figure = "" if speed is None else f", measured {speed:.2f}x as fast at batch {batch[5:]}"
    return _chosen(manifest, f"int8: its int8 variant passed the accuracy gate{figure}, and "
                             f"this CPU has {dot}")


def load_precision(path: Path, precision: str, backend: str) -> Manifest:
    """The manifest to run ``path``'s model at ``precision`` on ``backend``: INT8 on ONNX
    Runtime is the ``int8-cpu`` QDQ variant, on TensorRT the ``int8`` one; "auto" decides per
    model. ``why`` on the result says what was chosen and why."""
    if precision not in PRECISIONS:
        raise ModelError(f"models.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        manifest = _auto(path, backend)
    elif precision == "int8":
        form = "int8" if backend == "tensorrt" else "int8-cpu"
        variant = variant_path(path, form)
        instead = "fp16" if backend == "tensorrt" else "fp32"
        if variant.is_file():
            manifest = _chosen(load_manifest(variant), "int8: as configured"
                               + _without_dot_product(backend))
        else:
            manifest = _chosen(load_manifest(path), f"{instead}: {_missing(variant)}")
            log.warning("%s: models.precision is int8 but %s; running %s instead",
                        Path(path).stem, _missing(variant), instead)
    else:
        manifest = _chosen(load_manifest(path), f"{precision}: as configured")
    log.info("%s: %s", manifest.name, manifest.why)
    return manifest


def _without_dot_product(backend: str) -> str:
    """A warning for INT8 on ONNX Runtime on a CPU without an int8 dot product, where its
    int8 kernels saturate intermediate sums (and run no faster): encodings drift from FP32
    far more than the gate, run with one, measured."""
    from .cpu_features import int8_dot_product

    if backend == "tensorrt" or int8_dot_product():
        return ""
    log.warning("models.precision is int8 on a CPU without an int8 dot product (VNNI, AMX): "
                "ONNX Runtime's int8 kernels here saturate and lose accuracy; use auto")
    return "; this CPU has no int8 dot product: less accurate than the gate measured"


def engine_precision(manifest: Manifest, configured: str) -> str:
    """The TensorRT precision for ``manifest`` (from ``load_precision``): "auto" is int8 for
    a gated variant, else fp16."""
    if configured != "auto":
        return configured
    return "int8" if "quantized_from" in manifest.source else "fp16"

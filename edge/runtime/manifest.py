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

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
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


PRECISIONS = ("fp32", "fp16", "int8")


def variant_path(path: Path, form: str) -> Path:
    """``x.json`` -> ``x.<form>.json`` (``int8``, ``int8-cpu``); fp32/fp16 use ``x.json``."""
    path = Path(path)
    return path if form in ("fp32", "fp16") else path.with_name(f"{path.stem}.{form}.json")


def load_precision(path: Path, precision: str, backend: str) -> Manifest:
    """The manifest to run ``path``'s model at ``precision`` on ``backend``: INT8 on ONNX
    Runtime is the ``int8-cpu`` QDQ variant, on TensorRT the ``int8`` one."""
    if precision not in PRECISIONS:
        raise ModelError(f"models.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        form = "int8" if backend == "tensorrt" else "int8-cpu"
        variant = variant_path(path, form)
        if variant.is_file():
            return load_manifest(variant)
        instead = "fp16" if backend == "tensorrt" else "fp32"
        report = variant.with_name(variant.stem + ".gate.json")
        name = Path(path).stem[len("style-"):] if Path(path).stem.startswith("style-") \
            else Path(path).stem
        why = f"it failed its accuracy gate ({report})" if report.is_file() else \
            f"there is none (`jetkiosk quantize {name}` makes it if it passes the gate)"
        log.warning("%s: no %s variant, %s; running %s instead", Path(path).stem, form, why,
                    instead)
    return load_manifest(path)

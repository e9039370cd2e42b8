"""MiniFASNet anti-spoofing: .pth -> ONNX, checked against PyTorch on real face crops; the
shipped files against a fresh conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.faces.liveness import liveness_crop
from jetkiosk.edge.runtime.manifest import load_manifest, sha256_file
from jetkiosk.export.models.minifasnet import (
    CONVERTER_VERSION,
    SOURCES,
    convert,
    load_minifasnet,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "edge" / "faces" / "antispoof"
SAMPLES = ("image_T1", "image_F1", "image_F2")


@pytest.fixture(scope="module")
def src_dir(shared) -> Path:
    return shared / "models" / "antispoof"


@pytest.fixture(scope="module")
def converted(src_dir, tmp_path_factory) -> Dict[str, Path]:
    return convert(src_dir, tmp_path_factory.mktemp("minifasnet"))


@pytest.fixture(scope="module")
def sample_boxes(analyzer, src_dir):
    """Each sample photo (BGR) and the box of the one face our detector finds in it."""
    import cv2

    out = {}
    for name in SAMPLES:
        photo = cv2.imread(str(src_dir / "samples" / f"{name}.jpg"))
        faces = analyzer.detector.detect(photo)
        assert len(faces) == 1, name
        out[name] = (photo, faces[0].box)
    return out


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _blob(sample_boxes, scale: float) -> np.ndarray:
    crops = [liveness_crop(photo, box, scale, (80, 80)) for photo, box in sample_boxes.values()]
    return np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)  # BGR 0-255, as upstream


def test_state_dicts_fill_the_networks(src_dir):
    """Strict loading: every key of each .pth fills a parameter or buffer, none is missing."""
    for source in SOURCES:
        model = load_minifasnet(src_dir / source.file)
        params = sum(p.numel() for p in model.parameters())
        assert 430_000 < params < 440_000, (source.name, params)


def test_parity_with_pytorch_on_real_crops(src_dir, sample_boxes):
    import torch

    worst = 0.0
    for source in SOURCES:
        model = load_minifasnet(src_dir / source.file)
        x = _blob(sample_boxes, source.scale)
        with torch.no_grad():
            want = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
        logits = _session(SHIPPED / f"{source.name}.onnx").run(None, {"input": x})[0]
        z = np.exp(logits - logits.max(1, keepdims=True))
        got = z / z.sum(1, keepdims=True)
        assert got.shape == (len(SAMPLES), 3)  # one batch of all three photos
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"worst softmax difference PyTorch vs ONNX Runtime: {worst:.1e}")
    assert worst < 1e-4


def test_shipped_models_give_the_outputs_of_a_fresh_conversion(converted, sample_boxes):
    rng = np.random.default_rng(0)
    for source in SOURCES:
        x = np.concatenate([_blob(sample_boxes, source.scale),
                            rng.uniform(0, 255, (2, 3, 80, 80)).astype(np.float32)])
        shipped = _session(SHIPPED / f"{source.name}.onnx").run(None, {"input": x})[0]
        fresh = _session(converted[source.name]).run(None, {"input": x})[0]
        assert np.abs(shipped - fresh).max() < 1e-5


def test_shipped_models_are_byte_identical_to_a_fresh_conversion(converted):
    """The exporter's bytes depend on the torch version: compared only with the one that wrote
    the shipped files (outputs are compared with any, above)."""
    import onnx
    import torch

    written_by = onnx.load(str(SHIPPED / f"{SOURCES[0].name}.onnx")).producer_version
    if written_by != torch.__version__.split("+")[0]:
        pytest.skip(f"shipped files written by torch {written_by}, this is {torch.__version__}")
    for source in SOURCES:
        assert converted[source.name].read_bytes() == (
            SHIPPED / f"{source.name}.onnx").read_bytes(), source.name


def test_shipped_files_and_manifests(models_dir):
    notice = (SHIPPED / "NOTICE-minifasnet.md").read_text()
    assert "Apache License" in (SHIPPED / "LICENSE-minifasnet.txt").read_text()
    assert "Notice of changes" in notice and "No retraining" in notice
    for source in SOURCES:
        assert source.sha256 in notice and source.file in notice
        path = SHIPPED / f"{source.name}.onnx"
        assert path.stat().st_size < 2 * 1024 * 1024
        manifest = load_manifest(models_dir / f"{source.name}.json")
        assert manifest.task == "face-liveness" and manifest.license == "Apache-2.0"
        assert manifest.sha256 == sha256_file(path)
        assert manifest.preprocess["crop"] == {"method": "box-scale", "scale": source.scale}
        assert manifest.preprocess["size"] == [80, 80] and manifest.preprocess["color"] == "BGR"
        assert manifest.source["weights_sha256"] == source.sha256
        assert manifest.source["converter"] == f"jetkiosk.export.minifasnet/{CONVERTER_VERSION}"
        assert manifest.inputs[0].shape == ("batch", 3, 80, 80)
        assert manifest.outputs[0].shape == ("batch", 3)


def test_wrong_or_damaged_weights_are_refused(src_dir, tmp_path, capsys):
    dst = tmp_path / "src"
    dst.mkdir()
    good, bad = SOURCES
    (dst / good.file).write_bytes((src_dir / good.file).read_bytes())
    with pytest.raises(ModelError, match=f"{bad.file}: missing"):
        convert(dst, tmp_path / "out")
    data = (src_dir / bad.file).read_bytes()
    (dst / bad.file).write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelError, match=f"{bad.file}: sha256 .* does not match the expected "
                                         f"{bad.sha256}"):
        convert(dst, tmp_path / "out")
    assert main([str(dst), str(tmp_path / "out")]) == 1
    assert "does not match" in capsys.readouterr().err
    assert not (tmp_path / "out" / f"{bad.name}.onnx").exists()
    with pytest.raises(ModelError, match="not a known MiniFASNet release"):
        load_minifasnet(dst / "other.pth")

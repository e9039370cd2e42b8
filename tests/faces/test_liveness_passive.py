"""The passive liveness check: upstream's crops, batched scores, the sample photos through our
own detector, and clear errors for missing or corrupt models."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.core.errors import ModelError
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.liveness import LIVENESS_MODELS, LivenessCheck, scaled_box


@pytest.fixture(scope="module")
def check(models_dir) -> LivenessCheck:
    return LivenessCheck.load(load_config(overrides=[f"models.dir={models_dir}"]))


def _face(box) -> Detection:
    return Detection(np.asarray(box, np.float32), 0.99, np.zeros((5, 2), np.float32))


def test_scaled_box_is_upstreams_crop_box():
    # Inside the frame: scaled about the centre (100x100 box, 2.7x -> 270x270).
    assert scaled_box(np.array([300, 200, 400, 300]), 2.7, 1000, 800) == (215, 115, 485, 385)
    # Past the left and top edges: shifted back inside, size kept.
    assert scaled_box(np.array([10, 20, 110, 120]), 2.7, 1000, 800) == (0, 0, 270, 270)
    # Past the right and bottom edges: shifted so the last pixel is width-1 / height-1.
    assert scaled_box(np.array([900, 700, 1000, 800]), 2.7, 1000, 800) == (729, 529, 999, 799)
    # Too large for the frame: the scale shrinks to what fits ((800-1)/100 = 7.99).
    assert scaled_box(np.array([450, 350, 550, 450]), 10.0, 1000, 800) == (100, 0, 899, 799)


def test_sample_photos_through_our_detector(analyzer, check, shared):
    scores = {}
    for name in ("image_T1", "image_F1", "image_F2"):
        photo = cv2.imread(str(shared / "models" / "antispoof" / "samples" / f"{name}.jpg"))
        faces = analyzer.detector.detect(photo)
        assert len(faces) == 1, name
        scores[name] = check.scores(photo, faces)[0]
    print("live scores:", {k: round(v, 4) for k, v in scores.items()})
    assert scores["image_T1"] > 0.9  # live
    assert max(scores["image_F1"], scores["image_F2"]) < 0.5  # spoofs


def test_faces_of_a_frame_are_scored_in_one_batch(check):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), np.uint8)
    faces = [_face([100, 100, 200, 220]), _face([400, 50, 520, 190]), _face([0, 300, 90, 470])]
    together = check.scores(frame, faces)
    alone = [check.scores(frame, [face])[0] for face in faces]
    assert np.allclose(together, alone, atol=1e-6)
    assert all(0.0 <= s <= 1.0 for s in together)
    assert check.scores(frame, []) == []


def _models_copy(models_dir, tmp_path):
    for name in LIVENESS_MODELS:
        for suffix in (".json", ".onnx"):
            shutil.copy(models_dir / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return load_config(overrides=[f"models.dir={tmp_path}", "models.backend=onnxruntime"])


def test_missing_model_is_named(models_dir, tmp_path):
    config = _models_copy(models_dir, tmp_path)
    (tmp_path / "minifasnet-v1se.onnx").unlink()
    with pytest.raises(ModelError, match="minifasnet-v1se.onnx: model file missing"):
        LivenessCheck.load(config)
    (tmp_path / "minifasnet-v2.json").unlink()
    with pytest.raises(ModelError, match="minifasnet-v2.json: manifest missing"):
        LivenessCheck.load(config)


def test_corrupt_model_is_named(models_dir, tmp_path):
    config = _models_copy(models_dir, tmp_path)
    with open(tmp_path / "minifasnet-v2.onnx", "r+b") as fh:
        fh.seek(5000)
        fh.write(b"\0\0\0\0")
    with pytest.raises(ModelError, match="minifasnet-v2.onnx: sha256 .* does not match"):
        LivenessCheck.load(config)


def test_other_models_are_refused(models_dir):
    config = load_config(overrides=[f"models.dir={models_dir}"])
    with pytest.raises(ModelError, match="is a face-encoder, expected a face-liveness"):
        LivenessCheck.load(config, ["face-reid-0095"])

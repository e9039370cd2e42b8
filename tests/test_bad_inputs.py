"""Bad inputs get clear, specific errors (or, where a user would expect it, just work)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.errors import ImageError, ModelError
from jetkiosk.edge.core.images import load_image
from jetkiosk.edge.faces.analyzer import FaceAnalyzer


def test_corrupt_image(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(bad)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_tiny_image(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ImageError, match="30x20 is too small"):
        load_image(tmp_path / "tiny.png")


def test_four_channel_png_and_greyscale_are_converted_and_identified(
        analyzer, people_gallery, shared, tmp_path):
    from jetkiosk.edge.faces.decisions import Matcher

    matcher = Matcher(people_gallery, 1.0)
    rgba = shared / "faces/people/probes/obama_rgba_32bit.png"
    assert cv2.imread(str(rgba), cv2.IMREAD_UNCHANGED).shape[2] == 4
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), cv2.imread(str(shared / "faces/people/probes/obama1.jpg"), 0))
    for photo in (rgba, grey):
        image = load_image(photo)
        assert image.shape[2] == 3
        (face,) = analyzer.analyze(image)
        assert matcher.identify(face.encoding)[0].name == "obama"


def test_no_face(config, people_gallery, tmp_path, capsys):
    people_gallery.save(config.gallery_path)
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 400, 3), 128, np.uint8))
    args = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    assert main(["identify", str(blank), *args]) == 0
    assert "no face found" in capsys.readouterr().out
    assert main(["verify", str(blank), "--as", "obama", *args]) == 2
    assert "no usable face found" in capsys.readouterr().err


def test_models_directory_missing_a_file(models_dir, tmp_path, config):
    partial = tmp_path / "models"
    shutil.copytree(models_dir, partial)
    (partial / "face-reid-0095.onnx").unlink()
    config.models.dir = str(partial)
    with pytest.raises(ModelError, match="face-reid-0095.onnx: model file missing"):
        FaceAnalyzer(config)
    (partial / "retinaface-mnet025.json").unlink()
    with pytest.raises(ModelError, match="retinaface-mnet025.json: manifest missing"):
        FaceAnalyzer(config)
    config.models.dir = str(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="models directory missing"):
        FaceAnalyzer(config)

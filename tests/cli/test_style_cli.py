"""The style commands end to end: `styles list`, `styles train` (a tiny run, then the kiosk
uses the new style from the models folder), `stylize-image` with Gatys and a network."""

from __future__ import annotations

import json

import cv2
import numpy as np
from skimage import data

from conftest import BUNDLED_STYLES
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.kiosk.catalog import BUNDLED, StyleCatalog


def test_styles_list(capsys, tmp_path):
    assert main(["styles", "list", "--json", "--models", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["style"] for r in rows} == set(BUNDLED_STYLES)
    assert all(r["license"] and r["source"] for r in rows)


def test_styles_train_exports_a_style_the_kiosk_can_use(tmp_path, capsys):
    content = tmp_path / "content"
    content.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(content / f"{name}.png"), getattr(data, name)()[..., ::-1])
    style = tmp_path / "hubble.png"
    cv2.imwrite(str(style), data.hubble_deep_field()[:300, :300, ::-1])
    models = tmp_path / "models"
    assert main(["styles", "train", "--style", str(style), "--name", "tiny", "--content",
                 str(content), "--out", str(models), "--steps", "2", "--batch", "1",
                 "--width", "8", "--blocks", "1", "--device", "cpu", "--license", "CC0-1.0",
                 "--origin", "scikit-image hubble_deep_field"]) == 0
    assert "style-tiny.json" in capsys.readouterr().out
    manifest = json.loads((models / "style-tiny.json").read_text())
    assert manifest["source"]["train"]["steps"] == 2 and manifest["license"] == "CC0-1.0"
    model = StyleCatalog([models]).get("tiny")
    assert model(np.zeros((64, 96, 3), np.uint8)).shape == (64, 96, 3)


def test_styles_train_from_a_named_style_image_and_a_shipped_styles_weights(tmp_path, capsys):
    content = tmp_path / "content"
    content.mkdir()
    cv2.imwrite(str(content / "coffee.png"), data.coffee()[..., ::-1])
    models = tmp_path / "models"
    common = ["styles", "train", "--style", "seigaiha", "--content", str(content), "--out",
              str(models), "--steps", "1", "--batch", "1", "--crop", "64", "--device", "cpu",
              "--init", str(BUNDLED / "style-mosaic.onnx")]
    assert main([*common, "--name", "waves"]) == 0
    assert "starting from the weights of" in capsys.readouterr().out
    manifest = json.loads((models / "style-waves.json").read_text())
    assert manifest["license"] == "CC0-1.0" and manifest["source"]["init"] == "style-mosaic.onnx"
    assert "seigaiha()" in manifest["source"]["style_image"]
    assert manifest["source"]["train"]["crop"] == 64
    assert main([*common, "--name", "thin", "--width", "8"]) == 2
    assert "style-mosaic.onnx: not a style network of width 8 with 3 blocks" \
        in capsys.readouterr().err


def test_stylize_image_with_gatys_and_with_a_network(tmp_path, capsys):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), data.astronaut()[..., ::-1])
    out = tmp_path / "gatys.png"
    assert main(["stylize-image", "--style", "halftone", str(photo), "--steps", "20",
                 "--size", "64", "--device", "cpu", "--out", str(out)]) == 0
    assert "step 20/20: cost" in capsys.readouterr().err
    gatys = cv2.imread(str(out))
    assert gatys.shape == (64, 64, 3)
    small = cv2.resize(cv2.imread(str(photo)), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(gatys.astype(np.float32) - small).mean() > 3  # it changed the picture
    assert main(["stylize-image", "--method", "network", "--style", "mosaic", str(photo),
                 "--size", "256"]) == 0
    assert cv2.imread(str(tmp_path / "astronaut-mosaic.png")).shape == (256, 256, 3)
    assert main(["stylize-image", "--style", "nowhere.jpg", str(photo)]) == 2
    assert "style nowhere.jpg: no such image file, and not one of halftone, marble, mosaic" \
        in capsys.readouterr().err

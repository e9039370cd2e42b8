"""`jetkiosk encoder train | evaluate | head` end to end, and the runtime using what they make."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
from test_cli import run

from jetkiosk.edge.faces.gallery import load_gallery
from jetkiosk.edge.runtime.manifest import load_manifest

HELD_OUT = ",".join(f"s{i}" for i in range(31, 41))
TRAIN = ",".join(f"s{i}" for i in range(1, 31))


def test_train_small_encoder_and_use_it_in_the_runtime(models_dir, shared, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for f in models_dir.glob("retinaface-mnet025.*"):
        shutil.copy(f, models)
    orl = str(shared / "faces/orl")
    code, _, err = run(capsys, "encoder", "train", "--data", orl, "--only", "s1,s2,s3,s4",
                       "--name", "tiny", "--backbone", "small", "--size", "32", "--widths",
                       "8,16", "--steps", "6", "--models", str(models))
    assert code == 0, err
    assert "wrote" in err and "4 identities" in err and "images/s" in err
    manifest = load_manifest(models / "tiny.json")
    assert manifest.task == "face-encoder" and manifest.preprocess["size"] == [32, 32]
    assert manifest.source["augment"] == ["mirror", "crop", "color", "pca"]
    assert (models / "tiny.ckpt").is_file()  # resumable
    photo = str(shared / "faces/people/probes/two_people.jpg")
    code, out, err = run(capsys, "embed", photo, "--models", str(models), "--set",
                         "models.encoder=tiny", "--json")
    assert code == 0, err
    encodings = np.array([r["encoding"] for r in out])
    assert encodings.shape == (2, 128)
    code, _, err = run(capsys, "encoder", "train", "--data", orl, "--name", "x", "--backbone",
                       "small", "--augment", "rotate", "--models", str(models))
    assert code == 2 and "--augment: unknown augmentation ['rotate']" in err


def test_evaluate_writes_figures_and_threshold_and_a_head_decides(config, shared, tmp_path,
                                                                  capsys):
    people = shared / "faces/people"
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    assert run(capsys, "enroll", "--folder", str(people / "gallery"), *common)[0] == 0
    orl = str(shared / "faces/orl")
    report_dir = tmp_path / "report"
    code, _, err = run(capsys, "encoder", "evaluate", "--data", orl, "--only", HELD_OUT,
                       "--report", str(report_dir), "--write-threshold", "--rule", "eer",
                       *common)
    assert code == 0, err
    report = json.loads((report_dir / "report.json").read_text())
    assert report["genuine_pairs"] == 10 * 45 and report["impostor_pairs"] == 4500
    assert report["eer"] < 0.05 and set(report["tar_at_far"]) == {"0.01", "0.001"}
    for png in ("roc.png", "distances.png"):
        assert cv2.imread(str(report_dir / png)) is not None
    gallery = load_gallery(config.gallery_path)
    assert gallery.threshold == report["eer_threshold"]

    head_file = tmp_path / "head.json"
    code, out, err = run(capsys, "encoder", "head", "--data", orl, "--only", TRAIN,
                         "--kind", "chi2", "--out", str(head_file), "--install", *common)
    assert code == 0, err
    assert load_gallery(config.gallery_path).head.kind == "chi2"
    code, _, err = run(capsys, "encoder", "evaluate", "--data", orl, "--only", HELD_OUT,
                       "--head", str(head_file), "--report", str(tmp_path / "h"), *common)
    assert code == 0 and json.loads((tmp_path / "h/report.json").read_text())["eer"] < 0.05

    with open(people / "probes/labels.csv") as fh:
        labels = {row["file"]: row["people"] for row in csv.DictReader(fh)}
    photo = "obama_and_biden.jpg"
    code, out, err = run(capsys, "identify", str(people / "probes" / photo), "--json", *common)
    assert code == 0, err
    assert all(r["method"] == "head" for r in out)
    assert {r["name"] for r in out} - {None} == set(labels[photo].split(";"))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(head_file.read_text()), "fingerprint": "0" * 16}))
    code, _, err = run(capsys, "encoder", "evaluate", "--data", orl, "--only", HELD_OUT,
                       "--head", str(bad), *common)
    assert code == 2 and "trained on encoder fingerprint 0000000000000000" in err
    bad.write_text("{not json")
    code, _, err = run(capsys, "encoder", "evaluate", "--data", orl, "--head", str(bad), *common)
    assert code == 2 and "not a readable verification head" in err
    code, _, err = run(capsys, "encoder", "evaluate", "--data", str(tmp_path / "nope"), *common)
    assert code == 2 and "no such folder" in err

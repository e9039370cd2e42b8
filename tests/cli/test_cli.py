"""The command line end to end: enroll, gallery management, verify, identify, embed."""

from __future__ import annotations

import json

import numpy as np

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.faces.gallery import Gallery


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_enroll_verify_identify_embed_and_manage(config, shared, capsys):
    people = shared / "faces/people"
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path), "--json"]
    code, out, _ = run(capsys, "enroll", "--folder", str(people / "gallery"), *common)
    assert code == 0 and sum(1 for r in out if "photos" in r and "status" not in r) == 5
    code, out, _ = run(capsys, "enroll", "obama", str(people / "probes/obama3.jpg"), *common)
    assert out[-2] == {"name": "obama", "enrolled": 1, "photos": 3}
    assert out[-1] == {"summary": True, "enrolled": 1, "skipped_photos": 0,
                       "without_encoding": []}

    code, out, _ = run(capsys, "verify", str(people / "probes/obama1.jpg"), "--as", "obama",
                       *common)
    assert code == 0 and out[0]["match"] and out[0]["distance"] < out[0]["threshold"]
    code, out, _ = run(capsys, "verify", str(people / "probes/obama1.jpg"), "--as", "biden",
                       *common)
    assert code == 1 and not out[0]["match"]

    code, out, _ = run(capsys, "identify", str(people / "probes/obama_and_biden.jpg"), *common)
    assert sorted(r["name"] or "unknown" for r in out) == ["biden", "obama", "unknown"]
    assert all(len(r["box"]) == 4 and len(r["landmarks"]) == 5 for r in out)

    code, out, _ = run(capsys, "embed", str(people / "probes/two_people.jpg"), *common)
    encodings = np.array([r["encoding"] for r in out])
    assert encodings.shape == (2, 256)
    assert np.allclose(np.linalg.norm(encodings, axis=1), 1.0, atol=1e-4)

    assert run(capsys, "gallery", "rename", "obama", "barack", *common)[0] == 0
    assert run(capsys, "gallery", "remove", "biden", *common)[0] == 0
    assert run(capsys, "gallery", "threshold", "0.8", "--person", "barack", *common)[0] == 0
    code, out, _ = run(capsys, "gallery", "list", *common)
    assert [(r["name"], r["photos"]) for r in out] == [
        ("alex_lacamoire", 1), ("barack", 3), ("kit_harington", 2), ("rose_leslie", 2)]
    assert out[1]["threshold"] == 0.8 and out[1]["rule"] == "set for this person"
    assert "target FPIR 0.003 with 4 enrolled" in out[0]["rule"]


def test_errors_are_one_line_with_exit_code_2(config, analyzer, shared, capsys):
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    photo = str(shared / "faces/people/probes/two_people.jpg")
    assert main(["enroll", "obama", photo, *common]) == 1  # skipped, and nobody enrolled
    out = capsys.readouterr().out
    assert "2 faces found and none is clearly the subject" in out
    assert "no usable photo for: obama" in out
    code, _, err = run(capsys, "identify", photo, *common)
    assert code == 2 and "no gallery here" in err
    Gallery("other-encoder", "0123456789abcdef", 512).save(config.gallery_path)
    code, _, err = run(capsys, "identify", photo, *common)
    assert code == 2 and "cannot be compared" in err
    code, _, err = run(capsys, "run", *common)
    assert code == 2 and "no source" in err
    code, _, err = run(capsys, "identify", photo, *common, "--set", "detector.nope=1")
    assert code == 2 and "detector.nope: unknown key" in err


def test_each_command_maps_only_its_own_flags_to_configuration_keys(tmp_path):
    from jetkiosk.edge.cli.common import config_from_args
    from jetkiosk.edge.cli.main import build_parser

    def config(*argv):
        return config_from_args(build_parser().parse_args(list(argv)))

    # calibrate's --source is a list of folders, not the capture loop's source
    assert config("calibrate", "face-reid-0095", "--source", str(tmp_path)).run.source == ""
    assert config("enroll", "ann", "--source", "v4l2:///dev/video0").run.source == ""
    # run's --source (repeatable, [NAME=]URI) is applied by `run` itself: node.cameras
    run = config("run", "--source", "file://a.mp4", "--broker", "mqtt://h", "--sink", "mqtt")
    assert (run.run.source, run.mqtt.broker, run.run.sink) == ("", "mqtt://h", "mqtt")
    kiosk = config("kiosk", "--source", "csi://0", "--style", "mosaic", "--broker", "mqtt://h")
    assert (kiosk.kiosk.source, kiosk.kiosk.style, kiosk.kiosk.mqtt, kiosk.run.source) == (
        "csi://0", "mosaic", True, "")
    assert config("stylize-image", "a.jpg", "--style", "x.jpg").kiosk.style != "x.jpg"
    assert config("gallery", "list", "--models", str(tmp_path)).models.dir == str(tmp_path)


def test_a_missing_extra_is_named_with_its_install_command(tmp_path, monkeypatch, capsys):
    import sys

    photo = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(photo), np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "jetkiosk.export.style.gatys", None)  # as without torch
    assert main(["stylize-image", str(photo), "--style", "starry_night"]) == 2
    err = capsys.readouterr().err
    assert "stylize-image --method gatys needs the export extra " \
           "(pip install 'jetkiosk[export]')" in err


def test_gallery_style_sets_lists_and_clears_a_persons_style(config, capsys):
    from jetkiosk.edge.faces.gallery import load_gallery

    gallery = Gallery(config.models.encoder, "fp", 4)
    gallery.add("ann", np.eye(4, dtype=np.float32)[:1])
    gallery.save(config.gallery_path)
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    code, out, _ = run(capsys, "gallery", "style", "ann", "mosaic", *common, "--json")
    assert code == 0 and out == [{"ok": True, "action": "style", "name": "ann",
                                  "style": "mosaic"}]
    assert load_gallery(config.gallery_path).person("ann").style == "mosaic"
    code, out, _ = run(capsys, "gallery", "list", *common, "--json")
    assert code == 0 and out[0]["name"] == "ann" and out[0]["style"] == "mosaic"
    assert main(["gallery", "list", *common]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith("\tstyle mosaic")

    before = config.gallery_path.read_bytes()
    code, _, err = run(capsys, "gallery", "style", "ann", "cubism", *common)
    assert code == 2 and "unknown style 'cubism' (available: halftone, marble, mosaic" in err
    code, _, err = run(capsys, "gallery", "style", "bob", "halftone", *common)
    assert code == 2 and "no person named 'bob' in the gallery" in err
    assert config.gallery_path.read_bytes() == before

    code, out, _ = run(capsys, "gallery", "style", "ann", "none", *common, "--json")
    assert code == 0 and out[0]["style"] is None
    assert load_gallery(config.gallery_path).person("ann").style is None
    code, out, _ = run(capsys, "gallery", "list", *common, "--json")
    assert out[0]["style"] is None

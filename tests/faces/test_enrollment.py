"""Enrollment that does not stop at the first awkward photo, the subject of a photo with a
bystander, and the corrections (`gallery reject`, `gallery audit`) through the CLI."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.faces.detection import Detection
from jetkiosk.edge.faces.gallery import load_gallery
from jetkiosk.edge.faces.subject import subject


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def _det(x1, y1, x2, y2):
    return Detection(np.array([x1, y1, x2, y2], np.float32), 0.99, np.zeros((5, 2), np.float32))


def test_subject_rule():
    shape = (400, 600, 3)
    assert subject([], shape) is None
    assert subject([_det(0, 0, 50, 50)], shape) == 0  # the only face, wherever it is
    big, small = _det(220, 120, 380, 300), _det(10, 10, 60, 70)
    assert subject([small, big], shape) == 1
    assert subject([big, _det(400, 100, 540, 260)], shape) is None  # two of a size
    assert subject([_det(440, 200, 600, 380), small], shape) is None  # largest far off centre


def _with_bystander(main_photo, bystander_photo, out):
    """The main photo with a small copy of another face pasted into a corner."""
    image = cv2.imread(str(main_photo))
    other = cv2.imread(str(bystander_photo))
    w = image.shape[1]
    small = cv2.resize(other, (w // 5, round(other.shape[0] * (w // 5) / other.shape[1])))
    image[:small.shape[0], w - small.shape[1]:] = small
    cv2.imwrite(str(out), image)
    return out


def test_folder_enrollment_skips_awkward_photos_and_reports(config, shared, tmp_path, capsys):
    people = shared / "faces/people"
    folder = tmp_path / "people"
    for name in ("obama", "biden"):
        shutil.copytree(people / "gallery" / name, folder / name)
    shutil.copy(people / "probes/two_people.jpg", folder / "obama/group.jpg")  # no clear subject
    (folder / "obama/notes.txt").write_text("not a photo")
    _with_bystander(people / "gallery/biden/biden.jpg", people / "probes/obama1.jpg",
                    folder / "biden/with_bystander.jpg")
    (folder / "nobody").mkdir()
    shutil.copy(people / "probes/two_people.jpg", folder / "nobody/group.jpg")
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path), "--json"]
    code, out, _ = run(capsys, "enroll", "--folder", str(folder), *common)
    assert code == 1  # "nobody" ended up with no encoding
    skipped = {(r["name"], r["photo"].split("/")[-1]): r["reason"] for r in out
               if r.get("status") == "skipped"}
    assert "none is clearly the subject" in skipped[("obama", "group.jpg")]
    assert "not a readable image" in skipped[("obama", "notes.txt")]
    assert ("biden", "with_bystander.jpg") not in skipped
    assert out[-1] == {"summary": True, "enrolled": 2, "skipped_photos": 3,
                       "without_encoding": ["nobody"]}
    gallery = load_gallery(config.gallery_path)
    assert gallery.names == ["biden", "obama"]
    biden = gallery.encodings("biden")
    assert len(biden) == len(list((people / "gallery/biden").iterdir())) + 1
    # The bystander's face was not the one enrolled: it agrees with biden's other photos.
    assert all(float(np.sum((biden[-1] - other) ** 2)) < 0.8 for other in biden[:-1])


def test_reject_tightens_one_person_and_audit_finds_trouble(config, shared, capsys):
    people = shared / "faces/people"
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path), "--json"]
    assert run(capsys, "enroll", "--folder", str(people / "gallery"), *common)[0] == 0
    probe = str(people / "probes/obama1.jpg")
    code, out, _ = run(capsys, "identify", probe, *common)
    assert [r["name"] for r in out] == ["obama"] and "target FPIR" in out[0]["rule"]
    first = out[0]

    code, out, _ = run(capsys, "gallery", "reject", "obama", probe, *common)
    assert code == 0 and out[0]["rejections"] == 1
    assert out[0]["threshold"] <= first["distance"]  # just below it (both rounded)
    code, out, _ = run(capsys, "identify", probe, *common)
    assert [r["name"] for r in out] == [None] and out[0]["nearest"] == "obama"
    assert "rejection" in out[0]["rule"]
    code, out, _ = run(capsys, "verify", probe, "--as", "obama", *common)
    assert code == 1
    # Other people keep their thresholds; the rejection survives a rename.
    assert run(capsys, "gallery", "rename", "obama", "barack", *common)[0] == 0
    code, out, _ = run(capsys, "gallery", "list", *common)
    rows = {r["name"]: r for r in out}
    assert rows["barack"]["rejections"] == 1 and "rejection" in rows["barack"]["rule"]
    assert "target FPIR" in rows["biden"]["rule"]

    code, out, _ = run(capsys, "gallery", "audit", *common)
    assert code == 0 and out[-1]["findings"] == 0
    # Biden's photo added to kit_harington, and biden's own photo enrolled again as "joe".
    biden = str(people / "gallery/biden/biden.jpg")
    assert run(capsys, "enroll", "kit_harington", biden, *common)[0] == 0
    assert run(capsys, "enroll", "joe", biden, *common)[0] == 0
    code, out, _ = run(capsys, "gallery", "audit", *common)
    assert code == 1
    assert any(r.get("finding") == "too_close" and r["people"] == ["biden", "joe"] for r in out)
    assert any(r.get("finding") == "disagrees" and r["name"] == "kit_harington" for r in out)

"""A person's kiosk style: stored in their header record, format version 4 only when set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.gallery import archive_bytes, load_gallery, locked_update
from jetkiosk.edge.faces.verification_head import VerificationHead


def header(path: Path) -> dict:
    with np.load(io.BytesIO(archive_bytes(path))) as data:
        return json.loads(str(data["header"]))


def rewrite_header(path: Path, change) -> None:
    """Write ``path`` again with ``change`` applied to its JSON header, arrays as they were."""
    with np.load(io.BytesIO(archive_bytes(path))) as data:
        arrays = {k: data[k] for k in data.files}
    text = json.loads(str(arrays["header"]))
    change(text)
    arrays["header"] = np.array(json.dumps(text))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def test_a_style_round_trips_through_rename_and_clearing_restores_the_version(small, tmp_path):
    path = tmp_path / "g.npz"
    small.save(path)
    assert header(path)["version"] == 1 and "style" not in header(path)["people"]["bob"]
    small.set_style("bob", "mosaic")
    small.save(path)
    assert header(path)["version"] == 4
    assert header(path)["people"]["bob"]["style"] == "mosaic"
    assert "style" not in header(path)["people"]["ann"]
    loaded = load_gallery(path)
    assert (loaded.person("bob").style, loaded.person("ann").style) == ("mosaic", None)
    loaded.rename("bob", "robert")
    loaded.save(path)
    again = load_gallery(path)
    assert again.person("robert").style == "mosaic" and header(path)["version"] == 4
    again.set_style("robert", None)
    again.save(path)
    assert header(path)["version"] == 1 and load_gallery(path).person("robert").style is None


@pytest.mark.parametrize("extra, version", [("none", 1), ("head", 2), ("reject", 3)])
def test_version_4_is_written_only_while_someone_has_a_style(small, tmp_path, extra, version):
    if extra == "head":
        small.set_head(VerificationHead("abs", np.ones(8, np.float32), 0.0, "fp-1"))
    elif extra == "reject":
        small.reject("bob", small.encodings("ann")[:1])
    path = tmp_path / "g.npz"
    small.save(path)
    assert header(path)["version"] == version
    small.set_style("ann", "starry_night")
    small.save(path)
    assert header(path)["version"] == 4
    small.remove("ann")  # their style goes with them
    small.save(path)
    assert header(path)["version"] == version


@pytest.mark.parametrize("style", ["", "a b", "../x", "é", "x" * 65, 3, True, ["mosaic"],
                                   {"name": "mosaic"}])
def test_a_bad_style_in_the_header_is_refused_and_the_file_left_unchanged(small, tmp_path,
                                                                          style):
    path = tmp_path / "g.npz"
    small.set_style("ann", "mosaic")
    small.save(path)

    def bad(text: dict) -> None:
        text["people"]["bob"]["style"] = style

    rewrite_header(path, bad)
    before = path.read_bytes()
    message = r"person 'bob': style .* is not a style name \(1 to 64 letters"
    with pytest.raises(GalleryError, match=message):
        load_gallery(path)
    with pytest.raises(GalleryError, match=message), locked_update(path) as gallery:
        gallery.set_style("ann", None)
    assert path.read_bytes() == before


def test_the_longest_style_name_and_a_null_style_are_read(small, tmp_path):
    path = tmp_path / "g.npz"
    small.set_style("ann", "a-Z_9" + "x" * 59)
    small.save(path)
    rewrite_header(path, lambda text: text["people"]["bob"].update(style=None))
    loaded = load_gallery(path)
    assert loaded.person("ann").style == "a-Z_9" + "x" * 59
    assert loaded.person("bob").style is None


def test_setting_a_bad_style_or_one_for_nobody_is_refused(small):
    with pytest.raises(GalleryError, match="style 'a/b' is not a style name"):
        small.set_style("ann", "a/b")
    with pytest.raises(GalleryError, match="no person named 'carl'"):
        small.set_style("carl", "mosaic")
    assert small.person("ann").style is None

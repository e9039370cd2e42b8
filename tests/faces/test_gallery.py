"""Gallery file: round trip, 0600, atomic writes, foreign/corrupt files refused; search."""

from __future__ import annotations

import io
import stat

import numpy as np
import pytest

from conftest import unit
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces import gallery as gallery_mod
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, archive_bytes, load_gallery
from jetkiosk.edge.faces.search import EXACT_LIMIT, TemplateIndex


def test_round_trip_mode_and_operations(small, tmp_path):
    path = tmp_path / "g.npz"
    small.set_threshold(0.8)
    small.set_threshold(0.5, "bob")
    small.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_gallery(path, "fp-1")
    assert loaded.names == ["ann", "bob"] and loaded.threshold == 0.8
    assert np.array_equal(loaded.encodings("ann"), small.encodings("ann"))
    assert Matcher(loaded, 1.0).threshold_for("bob") == 0.5
    loaded.rename("bob", "robert")
    loaded.remove("ann")
    loaded.save(path)
    again = load_gallery(path)
    assert again.names == ["robert"] and again.person("robert").threshold == 0.5
    with pytest.raises(GalleryError, match="no person named 'ann'"):
        again.remove("ann")
    with pytest.raises(GalleryError, match="out of range"):
        again.set_threshold(7.0)


def test_a_person_keeps_their_record_through_rename_and_save(small, tmp_path):
    small.set_threshold(0.5, "bob")
    small.reject("bob", small.encodings("ann")[:1])
    enrolled = small.person("bob").enrolled
    small.rename("bob", "robert")
    small.save(tmp_path / "g.npz")
    robert = load_gallery(tmp_path / "g.npz").person("robert")
    assert (robert.threshold, robert.enrolled) == (0.5, enrolled)
    assert np.array_equal(robert.rejected, small.encodings("ann")[:1])
    assert "bob" not in small and "robert" in small


@pytest.mark.parametrize("record, message", [
    ({"threshold": "0.5", "enrolled": 1.0}, "person 'bob': threshold '0.5' out of range"),
    ({"threshold": 9.0, "enrolled": 1.0}, "person 'bob': threshold 9.0 out of range"),
    ({"threshold": None, "enrolled": "yesterday"}, "enrollment time 'yesterday' is not a"),
    (None, "person 'bob': missing from the header")])
def test_a_bad_person_record_in_the_header_is_refused(small, tmp_path, monkeypatch, record,
                                                      message):
    def record_of(person):
        return record if person.name == "bob" else {"threshold": None, "enrolled": 1.0}

    monkeypatch.setattr(gallery_mod.Person, "record", record_of)
    small.save(tmp_path / "g.npz")
    with pytest.raises(GalleryError, match=message):
        load_gallery(tmp_path / "g.npz")


def test_photos_are_never_stored(small, tmp_path):
    small.save(tmp_path / "g.npz")
    with np.load(io.BytesIO(archive_bytes(tmp_path / "g.npz"))) as data:
        assert sorted(data.files) == ["encodings", "header", "names", "owner"]
        assert data["encodings"].shape == (3, 8)


def test_a_crash_mid_write_leaves_the_old_gallery_intact(small, tmp_path, monkeypatch):
    path = tmp_path / "g.npz"
    small.save(path)
    before = path.read_bytes()

    def crash(fd):  # the temporary file is half written when the disk fills up
        raise OSError("disk full")

    monkeypatch.setattr(gallery_mod.os, "fsync", crash)
    small.add("carl", unit(np.ones((1, 8))))
    with pytest.raises(GalleryError, match=r"cannot save the gallery \(disk full\); the file "
                       "on disk is unchanged"):
        small.save(path)
    assert path.read_bytes() == before
    # no temporary file left behind: the gallery and its key only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "gallery.key"]


def test_foreign_truncated_and_alien_files_are_refused(small, tmp_path):
    path = tmp_path / "g.npz"
    small.save(path)
    with pytest.raises(GalleryError, match="made by encoder enc .*fingerprint fp-1.*cannot be "
                                           "compared"):
        load_gallery(path, "fp-2")
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(GalleryError, match="changed or truncated after it was written"):
        load_gallery(truncated)
    alien = tmp_path / "a.npz"
    np.savez(alien, weights=np.zeros(3))
    with pytest.raises(GalleryError, match="not a jetkiosk gallery"):
        load_gallery(alien)
    text = tmp_path / "x.npz"
    text.write_text("hello")
    with pytest.raises(GalleryError):
        load_gallery(text)
    with pytest.raises(GalleryError, match="no gallery here"):
        load_gallery(tmp_path / "none.npz")


def test_large_index_gives_the_exact_nearest_template():
    """The PCA shortlist must return exactly what a full scan returns."""
    rng = np.random.default_rng(7)
    # Realistic anisotropy: identities share a low-rank structure plus noise.
    basis = rng.normal(size=(64, 512))
    templates = unit(rng.normal(size=(EXACT_LIMIT + 10_000, 64)) @ basis
                     + 3.0 * rng.normal(size=(EXACT_LIMIT + 10_000, 512)))
    index = TemplateIndex(templates)
    assert index._basis is not None
    targets = rng.choice(len(templates), 50, replace=False)
    noise = [0.3, 0.6, 0.9] * 17
    queries = unit(templates[targets] + np.array(noise[:50])[:, None]
                   * unit(rng.normal(size=(50, 512))))
    queries = np.concatenate([queries, unit(rng.normal(size=(10, 512)))])  # strangers
    best, dist = index.nearest(queries)
    exact = queries @ templates.T
    assert np.array_equal(best, exact.argmax(1))
    assert np.allclose(dist, 2 - 2 * exact.max(1), atol=1e-5)


def test_empty_gallery_answers_unknown():
    matcher = Matcher(Gallery("e", "f", 4), 1.0)
    (decision,) = matcher.identify(np.ones((1, 4), np.float32) / 2)
    assert decision.name is None and not decision.matched

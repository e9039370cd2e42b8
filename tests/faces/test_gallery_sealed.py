"""The gallery at rest: sealed with AES-256-GCM, refused whole when anything about it is
wrong (the key, one byte, its length), plaintext galleries sealed once, keys changed."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat

import numpy as np
import pytest

from conftest import unit
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import GalleryConfig
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.core.sealing import KEY_ENV, MAGIC, Key, header, write_key
from jetkiosk.edge.faces.gallery import Gallery, load_gallery, locked_update, reseal

PLAIN = GalleryConfig(encrypt=False)


def people() -> Gallery:
    gallery = Gallery("enc", "fp-1", 8)
    gallery.add("Ada Lovelace", unit(np.random.default_rng(0).normal(size=(2, 8))))
    gallery.add("bob", unit(np.random.default_rng(1).normal(size=(1, 8))))
    return gallery


def same(a: Gallery, b: Gallery) -> bool:
    return a.names == b.names and all(np.array_equal(a.encodings(n), b.encodings(n))
                                      for n in a.names)


@pytest.fixture
def sealed(tmp_path):
    path = tmp_path / "g.npz"
    people().save(path)
    return path


def test_a_saved_gallery_is_sealed_readable_with_its_key_and_shows_nothing(sealed, tmp_path):
    data = sealed.read_bytes()
    assert data.startswith(MAGIC)
    public, _ = header(data, "g")
    assert public["format"] == "jetkiosk-gallery-sealed" and public["cipher"] == "AES-256-GCM"
    assert public["fingerprint"] == "fp-1" and public["encoder"] == "enc"
    for secret in (b"Ada", b"bob", b"encodings", b"PK\x03\x04"):  # no name, no archive inside
        assert secret not in data
    key = tmp_path / "gallery.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400 and len(key.read_bytes()) == 32
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert same(load_gallery(sealed, "fp-1"), people())
    people().save(sealed)  # a fresh nonce every write
    assert header(sealed.read_bytes(), "g")[0]["nonce"] != header(data, "g")[0]["nonce"]


def test_a_wrong_or_missing_key_is_named_and_the_file_left_as_it_was(sealed, tmp_path,
                                                                     monkeypatch):
    before = sealed.read_bytes()
    monkeypatch.setenv(KEY_ENV, "11" * 32)
    with pytest.raises(GalleryError, match=r"sealed with key [0-9a-f]{16}, but the key found is "
                                           rf"[0-9a-f]{{16}} \(\${KEY_ENV}\)"):
        load_gallery(sealed)
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / "gallery.key").unlink()
    with pytest.raises(GalleryError, match="the key found is none"):
        load_gallery(sealed)
    assert sealed.read_bytes() == before and not (tmp_path / "gallery.key").exists()


def test_every_flipped_byte_and_every_cut_is_refused_and_changes_nothing(sealed):
    data = sealed.read_bytes()
    _, start = header(data, "g")
    # every byte of the magic, length and header; the ciphertext's first, middle and tag
    positions = list(range(start)) + list(range(start, len(data), max(1, len(data) // 97))) \
        + list(range(len(data) - 16, len(data)))
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        sealed.write_bytes(bytes(damaged))
        with pytest.raises(GalleryError):
            load_gallery(sealed)
        assert sealed.read_bytes() == bytes(damaged), position  # not "repaired" or migrated
    for length in (0, 5, len(MAGIC) + 3, start - 1, start, start + 10, len(data) - 1):
        sealed.write_bytes(data[:length])
        with pytest.raises(GalleryError):
            load_gallery(sealed)
        assert sealed.read_bytes() == data[:length]


def test_the_header_is_authenticated_a_swapped_fingerprint_is_refused(sealed, tmp_path):
    data = sealed.read_bytes()
    forged = data.replace(b'"fingerprint": "fp-1"', b'"fingerprint": "fp-2"')
    assert forged != data
    sealed.write_bytes(forged)
    with pytest.raises(GalleryError, match="fails its authentication check"):
        load_gallery(sealed, "fp-2")


def test_a_plaintext_gallery_is_sealed_once_when_read(tmp_path, caplog):
    path = tmp_path / "g.npz"
    people().save(path, encrypt=False)
    assert path.read_bytes().startswith(b"PK")
    with caplog.at_level(logging.WARNING):
        loaded = load_gallery(path)
    assert same(loaded, people()) and path.read_bytes().startswith(MAGIC)
    assert "the plaintext gallery is now encrypted" in caplog.text
    before = path.read_bytes()
    load_gallery(path)
    assert path.read_bytes() == before  # once: a sealed file is not written again by a read
    assert same(load_gallery(path, limits=PLAIN), people())  # encrypt off still reads it


def test_with_encryption_off_plaintext_stays_plaintext(tmp_path):
    path = tmp_path / "g.npz"
    people().save(path, encrypt=False)
    load_gallery(path, limits=PLAIN)
    with locked_update(path, limits=PLAIN) as gallery:
        gallery.remove("bob")
    assert path.read_bytes().startswith(b"PK") and not (tmp_path / "gallery.key").exists()


def test_a_systemd_credential_or_the_environment_gives_the_key(tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    key = write_key(credentials / "gallery.key", Key.generate("x"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv(KEY_ENV, "22" * 32)  # the credential wins
    path = tmp_path / "g.npz"
    people().save(path)
    assert header(path.read_bytes(), "g")[0]["key_id"] == key.key_id
    assert not (tmp_path / "gallery.key").exists()  # no key file made beside the gallery
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(GalleryError, match="sealed with key"):
        load_gallery(path)
    monkeypatch.setenv(KEY_ENV, key.secret.hex())
    assert same(load_gallery(path), people())
    monkeypatch.setenv(KEY_ENV, "not hex")
    with pytest.raises(GalleryError, match="not a key"):
        load_gallery(path)


def test_rekey_replaces_the_key_and_the_old_one_no_longer_opens_it(sealed, tmp_path):
    old = (tmp_path / "gallery.key").read_bytes()
    key = reseal(sealed, GalleryConfig(), True, tmp_path / "gallery.key")
    assert (tmp_path / "gallery.key").read_bytes() == key.secret != old
    assert not (tmp_path / "gallery.key.new").exists()
    assert same(load_gallery(sealed), people())
    os.environ[KEY_ENV] = old.hex()
    try:
        with pytest.raises(GalleryError, match="sealed with key"):
            load_gallery(sealed)
    finally:
        del os.environ[KEY_ENV]


def test_a_reader_during_a_key_change_opens_it_with_the_next_key(sealed, tmp_path):
    nxt = write_key(tmp_path / "gallery.key.new", Key.generate("n"))
    people().save(sealed, nxt)  # sealed with the next key, the key file not replaced yet
    assert same(load_gallery(sealed), people())


def test_the_commands_encrypt_decrypt_and_rekey(tmp_path, capsys):
    path = tmp_path / "g.npz"
    people().save(path, encrypt=False)
    args = ["--gallery", str(path)]
    assert main(["gallery", "encrypt", *args]) == 0
    assert path.read_bytes().startswith(MAGIC) and "sealed with key" in capsys.readouterr().out
    assert main(["gallery", "decrypt", *args]) == 2
    assert "gallery.encrypt is on" in capsys.readouterr().err
    assert main(["gallery", "rekey", *args, "--json"]) == 0
    assert '"action": "rekey"' in capsys.readouterr().out
    other = tmp_path / "elsewhere.key"
    assert main(["gallery", "rekey", *args, "--new-key", str(other)]) == 0
    assert header(path.read_bytes(), "g")[0]["key_id"] == Key(other.read_bytes(), "").key_id
    capsys.readouterr()
    assert main(["gallery", "decrypt", *args, "--set", "gallery.encrypt=false",
                 "--set", f"gallery.key_file={other}"]) == 0
    assert path.read_bytes().startswith(b"PK")
    loaded = load_gallery(path, limits=dataclasses.replace(GalleryConfig(), encrypt=False))
    assert same(loaded, people())


def _writer(kind: str, index: int, path: str, start) -> None:
    """One process's change to the sealed gallery, started with the others."""
    from pathlib import Path

    from jetkiosk.edge.faces.gallery import enroll_encodings, locked_update

    start.wait(30)
    limits = GalleryConfig()
    if kind == "enroll":
        manifest = type("M", (), {"name": "enc", "fingerprint": "fp-1",
                                  "legacy_fingerprint": None})()
        rows = unit(np.random.default_rng(index).normal(size=(1, 8)))
        enroll_encodings(Path(path), manifest, 8, limits, {f"p{index}": rows})
    elif kind == "remove":
        with locked_update(Path(path), limits=limits) as gallery:
            gallery.remove(f"old{index}")
    else:
        reseal(Path(path), limits, True, Path(path).parent / "gallery.key")


def test_enroll_remove_and_rekey_from_many_processes_at_once_lose_nothing(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    path = tmp_path / "g.npz"
    gallery = Gallery("enc", "fp-1", 8)
    for j in range(3):
        gallery.add(f"old{j}", unit(np.random.default_rng(50 + j).normal(size=(1, 8))))
    gallery.save(path)
    start = context.Event()
    jobs = [("enroll", i) for i in range(6)] + [("remove", j) for j in range(3)] + \
        [("rekey", k) for k in range(3)]
    processes = [context.Process(target=_writer, args=(kind, i, str(path), start))
                 for kind, i in jobs]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * len(jobs)
    assert load_gallery(path).names == [f"p{i}" for i in range(6)]
    assert not (tmp_path / "gallery.key.new").exists()
    assert header(path.read_bytes(), "g")[0]["key_id"] == \
        Key((tmp_path / "gallery.key").read_bytes(), "").key_id

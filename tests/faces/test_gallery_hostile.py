"""Hostile gallery files and concurrent writers, with real files and real processes.

Every damaged or hostile file is a GalleryError naming what is wrong (``jetkiosk gallery
list``: exit 2, one line) and is left as it was; nothing is allocated from a size the file
merely claims. Ten enrollments at once all land (the gallery's lock), and a running node
picks up a changed gallery file without a signal.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetkiosk.edge.core.config import GalleryConfig
from jetkiosk.edge.core.errors import GalleryError
from jetkiosk.edge.faces.decisions import Matcher
from jetkiosk.edge.faces.gallery import Gallery, load_gallery, locked_update

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")
Members = Dict[str, bytes]  # "encodings" -> the bytes of encodings.npy


def npy(array) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def claiming(shape, dtype) -> bytes:
    """A .npy header declaring ``shape`` with no data after it: nothing is allocated here."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": shape})
    return out.getvalue()


def unit(rows: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


HEADER = {"format": "jetkiosk-gallery", "version": 1, "encoder": "enc", "fingerprint": "fp",
          "dim": 4, "threshold": None, "people": {"ann": {"threshold": None, "enrolled": 1.0},
                                                  "bob": {"threshold": None, "enrolled": 2.0}}}


def header(**changes) -> bytes:
    """The header above with ``changes`` (``...``: the key removed), as header.npy."""
    fields = {**HEADER, **changes}
    return npy(json.dumps({k: v for k, v in fields.items() if v is not ...}))


def valid() -> Members:
    """ann (2 encodings) and bob (1)."""
    return {"header": header(), "names": npy(np.array(["ann", "bob"])),
            "owner": npy(np.array([0, 0, 1], np.int32)), "encodings": npy(unit(3))}


def write(path: Path, members: Members) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path.read_bytes()


def test_a_valid_crafted_file_loads(tmp_path):
    """The baseline each hostile case below changes one thing of."""
    write(tmp_path / "g.npz", valid())
    gallery = load_gallery(tmp_path / "g.npz", "fp")
    assert gallery.names == ["ann", "bob"] and len(gallery.encodings("ann")) == 2


ONE_PERSON = {"names": npy(np.array(["ann"])),
              "header": header(people={"ann": {"threshold": None, "enrolled": 1.0}})}
HOSTILE = {
    "string dim": ({"header": header(dim="4")}, r"header dim '4' is not a whole number"),
    "missing fingerprint": ({"header": header(fingerprint=...)},
                            r"the header has no 'fingerprint'"),
    "100k nested arrays": (
        {"header": npy('{"format": "jetkiosk-gallery", "version": 1, "people": '
                       + "[" * 100_000 + "]" * 100_000 + "}")},
        r"the header is nested too deeply"),
    "NaN in the header": ({"header": npy(json.dumps(HEADER).replace("1.0", "NaN"))},
                          r"the header is not JSON \(NaN is not a number"),
    "a 400-digit number in the header": (
        {"header": header(head={"kind": "abs", "weights": [10 ** 400] * 4, "bias": 0,
                                "fingerprint": "fp"})},
        r"the header is not JSON \(integer 10+\.\.\. out of range\)"),
    "string encodings": ({"encodings": npy(np.full((3, 4), "a"))},
                         r"encodings is a 2-dimensional array of <U1, not a float32 matrix"),
    "float64 encodings": ({"encodings": npy(unit(3).astype(np.float64))},
                         r"array of <f8, not a float32 matrix"),
    "512e9 values claimed": (
        {"encodings": claiming((1_000_000_000, 512), np.float32)},
        r"encodings claims shape \(1000000000, 512\) \(2048000000128 bytes\) but holds 128"),
    "a nested .npy header": (
        {"owner": npy(np.zeros(3, np.int32)).replace(b"'shape': (3,)", b"'shape': ((((3))))")},
        r"owner: unreadable array header \(not numpy's header of a number or text array\)"),
    "code in a .npy header": (
        {"owner": npy(np.zeros(3, np.int32)).replace(b"(3,)", b"(len(__import__('os').sep),)")},
        r"owner: unreadable array header \(not numpy's header"),
    "300,000 encodings for one person": (
        {**ONE_PERSON, "owner": npy(np.zeros(300_000, np.int32)),
         "encodings": npy(np.repeat(unit(1), 300_000, axis=0))},
        r"300000 encodings for 1 person\(s\), more than gallery.max_encodings \(100\) each"),
    "150 encodings for one of two people": (
        {"owner": npy(np.r_[np.zeros(150, np.int32), 1]),
         "encodings": npy(np.repeat(unit(1), 151, axis=0))},
        r"'ann' has 150 encodings, more than gallery.max_encodings \(100\)"),
    "NaN encodings": ({"encodings": npy(np.where(np.eye(3, 4) > 0, np.nan, unit(3)))},
                      r"encodings: NaN or infinite values"),
    "infinite encodings": ({"encodings": npy(np.full((3, 4), np.inf, np.float32))},
                           r"encodings: NaN or infinite values"),
    "non-unit encodings": ({"encodings": npy(unit(3) * 3)},
                           r"encodings: encoding 1 has length 3, not 1"),
    "a zero encoding": ({"encodings": npy(np.zeros((3, 4), np.float32))},
                        r"encodings: encoding 1 has length 0, not 1"),
    "negative owner index": ({"owner": npy(np.array([0, -1, 1], np.int32))},
                             r"owner index -1 is not one of the 2 people"),
    "owner index past the names": ({"owner": npy(np.array([0, 0, 2], np.int32))},
                                   r"owner index 2 is not one of the 2 people"),
    "fewer owners than encodings": (
        {"owner": npy(np.array([0, 1], np.int32))},
        r"3 x 4 encodings and 2 owner, expected 4 columns and one owner per row"),
    "a name without encodings": ({"owner": npy(np.array([0, 0, 0], np.int32))},
                                 r"'bob' has no encodings"),
    "a name twice": ({"names": npy(np.array(["ann", "ann"]))},
                     r"'ann' is in the gallery twice"),
    "a header record without encodings": (
        {**ONE_PERSON, "header": header(), "owner": npy(np.zeros(3, np.int32))},
        r"the header has a record of 'bob' but no encodings"),
    "no header": ({"header": b""}, r"header: unreadable array header"),
    "pickled names": ({"names": claiming((2,), object) + b"\x80\x04junk"},
                      r"names: unreadable array header \(not numpy's header"),
}


@pytest.mark.parametrize("change, message", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_file_is_refused_with_one_line_and_left_as_it_was(tmp_path, change,
                                                                    message):
    path = tmp_path / "gallery.npz"
    before = write(path, {**valid(), **change})
    tracemalloc.start()
    try:
        with pytest.raises(GalleryError, match=message):
            load_gallery(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # nothing sized by what the file claims (300,000 rows: 9.6 MB)
    cli = subprocess.run([JETKIOSK, "gallery", "list", "--gallery", str(path), "--models",
                          str(tmp_path)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert cli.returncode == 2 and cli.stdout == ""
    assert len(cli.stderr.splitlines()) == 1, cli.stderr
    assert cli.stderr.startswith(f"jetkiosk: error: {path}: ")
    assert path.read_bytes() == before


def test_the_limits_are_the_configured_ones(tmp_path, capsys):
    from jetkiosk.edge.cli.main import main

    path = tmp_path / "gallery.npz"
    write(path, valid())
    with pytest.raises(GalleryError, match=r"2 people, more than gallery.max_people \(1\)"):
        load_gallery(path, limits=GalleryConfig(max_people=1))
    with pytest.raises(GalleryError, match=r"3 encodings for 2 person\(s\), more than "
                                           r"gallery.max_encodings \(1\) each"):
        load_gallery(path, limits=GalleryConfig(max_encodings=1))
    assert main(["gallery", "remove", "bob", "--gallery", str(path),
                 "--set", "gallery.max_encodings=1"]) == 2
    assert "more than gallery.max_encodings (1)" in capsys.readouterr().err
    assert load_gallery(path).names == ["ann", "bob"]


def test_a_person_cannot_grow_beyond_max_encodings(tmp_path):
    gallery = Gallery("enc", "fp", 4, GalleryConfig(max_people=2, max_encodings=3))
    assert gallery.add("ann", unit(2)) == 2
    with pytest.raises(GalleryError, match=r"'ann' would have 4 encodings, more than "
                                           r"gallery.max_encodings \(3\)"):
        gallery.add("ann", unit(2, seed=1))
    assert len(gallery.encodings("ann")) == 2
    gallery.add("bob", unit(1))
    with pytest.raises(GalleryError, match=r"already has gallery.max_people \(2\) people"):
        gallery.add("cy", unit(1))
    with pytest.raises(GalleryError, match="'bob' would have 4 rejections"):
        gallery.reject("bob", unit(4))
    with pytest.raises(GalleryError, match="encoding 1 has length 2"):
        gallery.add("bob", 2 * unit(1))


def test_enroll_refuses_more_photos_than_max_encodings(config, shared, capsys):
    from jetkiosk.edge.cli.main import main

    photos = [str(p) for p in sorted((shared / "faces/people/gallery/biden").iterdir())]
    common = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path),
              "--set", "gallery.max_encodings=1"]
    assert main(["enroll", "biden", *photos, *common]) == 2
    assert "'biden' would have 2 encodings, more than gallery.max_encodings (1)" in \
        capsys.readouterr().err
    assert not config.gallery_path.exists()


def test_a_failed_change_leaves_the_file_and_releases_the_lock(tmp_path):
    path = tmp_path / "gallery.npz"
    before = write(path, valid())
    with pytest.raises(GalleryError, match="no person named 'cy'"), \
            locked_update(path) as gallery:
        gallery.remove("ann")
        gallery.remove("cy")
    assert path.read_bytes() == before
    with locked_update(path) as gallery:  # not left locked
        gallery.remove("ann")
    assert load_gallery(path).names == ["bob"]
    assert oct(os.stat(f"{path}.lock").st_mode & 0o777) == "0o600"


def _full_pipe() -> Tuple[int, int, int]:
    """A pipe whose buffer is full (read end, write end, bytes in it): a process writing to
    it blocks until it is read."""
    read, write_end = os.pipe()
    os.set_blocking(write_end, False)
    filled = 0
    for size in (4096, 1):
        try:
            while True:
                filled += os.write(write_end, b"\0" * size)
        except BlockingIOError:
            pass
    os.set_blocking(write_end, True)
    return read, write_end, filled


def _blocked_writing(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as fh:
        return "pipe_write" in fh.read()


def _drain(fd: int, count: int) -> None:
    while count:
        count -= len(os.read(fd, count))


def test_ten_enrollments_at_once_all_land(models_dir, shared, tmp_path):
    """Ten `jetkiosk enroll` processes on one gallery file. Each one's stdout is a full pipe,
    so each stops at its first line (printed once its photo is encoded, before it touches
    the gallery) until all ten are there; then they are let go together. Without the lock
    each would write back the gallery it read, and most people would be lost."""
    path = tmp_path / "gallery.npz"
    photos = sorted(p for p in (shared / "faces/people/gallery").rglob("*") if p.is_file())
    running = []
    for i in range(10):
        read, write_end, filled = _full_pipe()
        proc = subprocess.Popen(
            [JETKIOSK, "enroll", f"person {i}", str(photos[i % len(photos)]), "--json",
             "--models", str(models_dir), "--gallery", str(path)],
            stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        running.append((proc, read, filled))
    try:
        deadline = time.monotonic() + 300
        while not all(p.poll() is None and _blocked_writing(p.pid) for p, _, _ in running):
            assert time.monotonic() < deadline and all(p.poll() is None for p, _, _ in running), \
                [p.stderr.read() for p, _, _ in running if p.poll() is not None]
            time.sleep(0.1)
        for _, read, filled in running:
            _drain(read, filled)
        outputs = []
        for proc, read, _ in running:
            with os.fdopen(read, "rb") as out:
                outputs.append(out.read().decode())
            assert proc.wait(120) == 0, proc.stderr.read()
    finally:
        for proc, _, _ in running:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
    assert all('"enrolled": 1' in out for out in outputs)
    assert load_gallery(path).names == sorted(f"person {i}" for i in range(10))


# -- fuzzing ------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
KEYS = st.sampled_from(sorted(HEADER) + ["head", "x"])
HEADS = st.fixed_dictionaries({
    "kind": st.sampled_from(["abs", "chi2"]) | JSON,
    "weights": st.lists(st.floats() | st.integers(), min_size=4, max_size=4) | JSON,
    "bias": st.floats() | st.integers() | JSON, "fingerprint": st.just("fp") | JSON,
    "threshold": st.floats() | JSON})
FUZZ = settings(derandomize=True, max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _outcome(members_or_bytes) -> None:
    """load_gallery gives a Gallery or a GalleryError, nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gallery.npz"
        if isinstance(members_or_bytes, bytes):
            path.write_bytes(members_or_bytes)
        else:
            write(path, members_or_bytes)
        try:
            assert isinstance(load_gallery(path, limits=GalleryConfig(max_encodings=4)), Gallery)
        except GalleryError:
            pass


@FUZZ
@given(st.dictionaries(KEYS, JSON | st.just(...), max_size=4),
       st.dictionaries(st.sampled_from(["ann", "bob", "cy"]), JSON, max_size=2),
       st.none() | HEADS)
def test_fuzzed_headers_load_or_raise_gallery_error(changes, records, head):
    people = {**HEADER["people"], **records}
    fields = {"people": people, "head": head, "version": 1 if head is None else 2, **changes}
    _outcome({**valid(), "header": header(**fields)})


@FUZZ
@given(st.sampled_from(sorted(valid())), st.lists(  # at < 0: in the data, from its end
    st.tuples(st.integers(-64, 200), st.binary(min_size=1, max_size=4)), min_size=1, max_size=4))
def test_fuzzed_array_bytes_load_or_raise_gallery_error(member, edits):
    data = bytearray(valid()[member])
    for at, chunk in edits:
        data[at % len(data):at % len(data) + len(chunk)] = chunk
    _outcome({**valid(), member: bytes(data)})


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=8)),
                min_size=1, max_size=4), st.just(0) | st.integers(1, 64))
def test_fuzzed_file_bytes_load_or_raise_gallery_error(edits, cut):
    with tempfile.TemporaryDirectory() as folder:
        data = bytearray(write(Path(folder) / "g.npz", valid()))
    for at, chunk in edits:
        data[at % len(data):at % len(data) + len(chunk)] = chunk
    _outcome(bytes(data[:len(data) - cut]))


# -- the running node ---------------------------------------------------------------------
def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def test_the_node_reloads_a_changed_gallery_file_without_a_signal(
        config, analyzer, people_gallery, still_clip, tmp_path, caplog):
    from jetkiosk.edge.node.daemon import Runner

    path = config.gallery_path
    people_gallery.save(path)
    config.run.source = f"file://{still_clip}?loop=1"
    config.run.sink = f"jsonl:{tmp_path / 'events.jsonl'}"
    fingerprint = analyzer.fingerprint
    loaded_on: List[str] = []

    def load_matcher() -> Matcher:
        loaded_on.append(threading.current_thread().name)
        return Matcher(load_gallery(path, fingerprint), 1.0)

    caplog.set_level(logging.INFO, logger="jetkiosk.edge.node.reload")
    with Runner(config, analyzer, load_matcher) as runner:
        loop = runner.loop
        thread = threading.Thread(target=runner.run, name="capture-loop")
        thread.start()
        try:
            assert _wait(lambda: loop.frames > 0)
            before = list(loop.matcher.names)
            with locked_update(path, fingerprint) as gallery:  # `gallery remove` beside it
                gallery.remove("biden")
            assert _wait(lambda: "biden" not in loop.matcher.names), caplog.text
            assert loop.matcher.names == [n for n in before if n != "biden"]
            assert loaded_on[1:] == ["capture-loop"]  # between frames, on the loop's thread
            # logged just after the switch: waited for, not raced
            assert _wait(lambda: "gallery file changed: reloaded" in caplog.text)

            garbage = path.with_name("garbage")  # a bad file, renamed in whole as writers do
            garbage.write_bytes(b"PK\3\4 not a gallery")
            os.replace(garbage, path)
            assert _wait(lambda: "not reloaded (the running gallery stays)" in caplog.text)
            assert "corrupt or truncated" in caplog.text
            assert loop.matcher.names == [n for n in before if n != "biden"]
            assert thread.is_alive()
        finally:
            loop.shutdown()
            thread.join(60)
